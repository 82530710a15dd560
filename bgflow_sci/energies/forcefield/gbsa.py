"""OBC2 generalised-Born implicit solvent with the ACE surface term, as OpenMM's ``GBSAOBCForce``.

Onufriev, Bashford, Case, Proteins 55, 383 (2004) (OBC, model II: ``α, β, γ = 1, 0.8, 4.85``); Born radii by the
Hawkins–Cramer–Truhlar pairwise descreening integral; ACE non-polar term of Schaefer, Bartels, Karplus (1998).

With offset radii ``ρ_i = R_i - 0.009 nm`` and scaled radii ``s_j = ρ_j · scale_j``:

* ``Ψ_i = ½ ρ_i Σ_{j≠i} T(r_ij, ρ_i, s_j)`` with, when ``ρ_i < r + s_j``, ``U = 1/(r + s_j)``,
  ``L = 1/max(ρ_i, |r - s_j|)`` and ``T = L - U + r/4 (U² - L²) + ln(U/L)/(2r) + s_j²/(4r) (L² - U²)``
  ``(+ 2 (1/ρ_i - L)`` if ``ρ_i < s_j - r)``;
* ``B_i = 1 / (1/ρ_i - tanh(α Ψ - β Ψ² + γ Ψ³) / R_i)``;
* ``E_GB = -(1/ε_in - 1/ε_out) / (4π ε0) · ½ Σ_{i,j} q_i q_j / f_ij``, ``f = sqrt(r² + B_i B_j exp(-r²/(4 B_i B_j)))``
  (the diagonal gives the Born self energies);
* ``E_SA = Σ_i 4π γ_SA (R_i + 0.14 nm)² (R_i / B_i)^6``.

``dT/dr = -[¼ (1 + s²/r²)(L² - U²) + ln(U/L) / (2 r²)]`` (the ``dL/dr`` contributions cancel), so the whole
gradient is a sum over pairs of scalar multiples of ``x_i - x_j``.  With a cutoff, pairs beyond it are dropped
from both sums and ``q_i q_j / r_c`` is subtracted from each pair inside it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .nonbonded import ONE_4PI_EPS0

OBC2_PARAMETERS = (1.0, 0.8, 4.85)  # α, β, γ
DIELECTRIC_OFFSET = 0.009  # nm
PROBE_RADIUS = 0.14  # nm


class OBC2(nn.Module):
    """Dense all-pairs OBC2 + ACE term.

    ``forward(r2)`` takes squared distances ``(n, n, batch)`` (diagonal 0) and returns the energy ``(batch,)`` in
    kJ/mol and the symmetric pair matrix ``P_ij = (dE/dr_ij) / r_ij`` (including the chain rule through the Born
    radii).
    """

    def __init__(
        self,
        charge: Tensor,
        radius: Tensor,
        scale: Tensor,
        solute_dielectric: float = 1.0,
        solvent_dielectric: float = 78.5,
        surface_area_energy: float = 2.25936,
        cutoff: float | None = None,
    ):
        super().__init__()
        n = charge.numel()
        charge, radius, scale = (torch.as_tensor(t, dtype=torch.float64).reshape(n) for t in (charge, radius, scale))
        rho = radius - DIELECTRIC_OFFSET
        if solute_dielectric != 0 and solvent_dielectric != 0:
            prefactor = -ONE_4PI_EPS0 * (1.0 / solute_dielectric - 1.0 / solvent_dielectric)
        else:
            prefactor = 0.0
        self.register_buffer("qq", (prefactor * charge[:, None] * charge[None, :]).reshape(n, n, 1), persistent=False)
        self.register_buffer("rho_i", rho.reshape(n, 1, 1), persistent=False)
        self.register_buffer("s_j", (rho * scale).reshape(1, n, 1), persistent=False)
        self.register_buffer("radius", radius.reshape(n, 1), persistent=False)
        self.register_buffer("rho", rho.reshape(n, 1), persistent=False)
        sa = 4 * math.pi * surface_area_energy * (radius + PROBE_RADIUS) ** 2
        self.register_buffer("sa", sa.reshape(n, 1), persistent=False)
        self.register_buffer("offdiag", (1.0 - torch.eye(n, dtype=torch.float64)).reshape(n, n, 1), persistent=False)
        self.cutoff = None if cutoff is None else float(cutoff)

    def forward(self, r2: Tensor) -> tuple[Tensor, Tensor]:
        dtype = r2.dtype
        alpha, beta, gamma = OBC2_PARAMETERS
        rho_i, s_j, offdiag = self.rho_i.to(dtype), self.s_j.to(dtype), self.offdiag.to(dtype)
        radius, rho = self.radius.to(dtype), self.rho.to(dtype)
        r2s = r2 + (1.0 - offdiag)  # keep 1/r finite on the diagonal
        inv_r = torch.rsqrt(r2s)
        r = r2s * inv_r
        # Born radii: descreening integral T_ij and its radial derivative
        upper = 1.0 / (r + s_j)
        lower = 1.0 / torch.maximum(rho_i.expand_as(r), torch.abs(r - s_j))
        log_ratio = torch.log(upper / lower)
        l2, u2 = lower * lower, upper * upper
        s2 = s_j * s_j
        t = lower - upper + 0.25 * r * (u2 - l2) + 0.5 * inv_r * log_ratio + 0.25 * s2 * inv_r * (l2 - u2)
        t = t + torch.where(rho_i < s_j - r, 2.0 * (1.0 / rho_i - lower), torch.zeros_like(t))
        dt_dr = -(0.25 * (1.0 + s2 * inv_r * inv_r) * (l2 - u2) + 0.5 * log_ratio * inv_r * inv_r)
        active = (rho_i < r + s_j) & (offdiag > 0)
        if self.cutoff is not None:
            active = active & (r2 < self.cutoff**2)
        t = torch.where(active, t, torch.zeros_like(t))
        dt_dr = torch.where(active, dt_dr, torch.zeros_like(dt_dr))
        psi = 0.5 * rho * t.sum(1)  # (n, batch)
        th = torch.tanh(psi * (alpha + psi * (-beta + gamma * psi)))
        born = 1.0 / (1.0 / rho - th / radius)
        dborn_dpsi = born * born * (1.0 - th * th) * (alpha + psi * (-2.0 * beta + 3.0 * gamma * psi)) / radius
        # generalised Born energy over all ordered pairs (diagonal = self energies)
        qq = self.qq.to(dtype)
        bb = born[:, None, :] * born[None, :, :]
        d = r2 / (4.0 * bb)
        ex = torch.exp(-d)
        inv_f2 = 1.0 / (r2 + bb * ex)
        inv_f = torch.sqrt(inv_f2)
        e_pair = qq * inv_f
        p_gb = -qq * (1.0 - 0.25 * ex) * inv_f * inv_f2
        m = -0.5 * qq * ex * (1.0 + d) * inv_f * inv_f2  # d(q_i q_j / f_ij)/d(B_i B_j)
        if self.cutoff is not None:
            inside = r2 < self.cutoff**2
            e_pair = torch.where(inside, e_pair - offdiag * qq / self.cutoff, torch.zeros_like(e_pair))
            p_gb = torch.where(inside, p_gb * offdiag, torch.zeros_like(p_gb))
            m = torch.where(inside, m, torch.zeros_like(m))
        else:
            p_gb = p_gb * offdiag
        ratio = radius / born
        r3 = ratio * ratio * ratio
        e_sa = self.sa.to(dtype) * r3 * r3  # (n, batch)
        energy = 0.5 * e_pair.sum((0, 1)) + e_sa.sum(0)
        de_dborn = (m * born[None, :, :]).sum(1) - 6.0 * e_sa / born
        c = (0.5 * rho * de_dborn * dborn_dpsi)[:, None, :] * dt_dr  # dE/dr_ij through Ψ_i
        p = p_gb + (c + c.transpose(0, 1)) * inv_r
        return energy, p
