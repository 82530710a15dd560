"""Coulomb and Lennard-Jones pair terms of OpenMM's ``NonbondedForce``, with analytic gradients.

Pairs ``i ≠ j`` not excluded interact by
``E_ij = q_i q_j / (4π ε0) · c(r) + 4 ε_ij [(σ_ij / r)^12 - (σ_ij / r)^6] · S(r)`` with Lorentz–Berthelot
``σ_ij = (σ_i + σ_j) / 2``, ``ε_ij = sqrt(ε_i ε_j)``.  Without a cutoff ``c(r) = 1 / r``; with a cutoff ``r_c``
(``CutoffNonPeriodic``, ``CutoffPeriodic``) pairs beyond ``r_c`` are dropped and the Coulomb part is the reaction
field ``c(r) = 1/r + k_rf r² - c_rf`` with ``k_rf = (ε_rf - 1) / ((2 ε_rf + 1) r_c³)``, ``c_rf = 1/r_c + k_rf r_c²``.
``S`` is OpenMM's switching polynomial ``1 - 10 t³ + 15 t⁴ - 6 t⁵``, ``t = (r - r_sw) / (r_c - r_sw)``, or 1.

Exceptions (1-4 pairs, with their own ``q_i q_j``, ``σ``, ``ε``; scaling already applied) use plain Coulomb and
LJ with no cutoff, as in OpenMM; excluded pairs contribute nothing.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .geometry import VectorScatter, dot

ONE_4PI_EPS0 = 138.93545764438198  # kJ mol^-1 nm e^-2, the value OpenMM uses


class DensePairs(nn.Module):
    """All-pairs nonbonded term on ``(n, n)`` parameter matrices (zero for excluded pairs and the diagonal).

    ``forward(r2)`` takes the squared (minimum-image) distances ``(n, n, batch)`` and returns the energy
    ``(batch,)`` in kJ/mol and the symmetric pair matrix ``P_ij = (dE/dr_ij) / r_ij`` ``(n, n, batch)``, from
    which ``dE/dx_i = Σ_j P_ij (x_i - x_j)``.
    """

    def __init__(
        self,
        qq: Tensor,
        lj_a: Tensor,
        lj_b: Tensor,
        cutoff: float | None = None,
        reaction_field_dielectric: float = 78.3,
        switch_distance: float | None = None,
    ):
        super().__init__()
        n = qq.shape[0]
        # qq = q_i q_j / (4π ε0) (kJ/mol nm), lj_a = 4 ε σ^12, lj_b = 4 ε σ^6
        self.register_buffer("qq", qq.reshape(n, n, 1).double(), persistent=False)
        self.register_buffer("lj_a", lj_a.reshape(n, n, 1).double(), persistent=False)
        self.register_buffer("lj_b", lj_b.reshape(n, n, 1).double(), persistent=False)
        self.register_buffer("eye", torch.eye(n, dtype=torch.float64).reshape(n, n, 1), persistent=False)
        self.cutoff = None if cutoff is None else float(cutoff)
        self.switch_distance = None if switch_distance is None else float(switch_distance)
        if self.cutoff is not None:
            eps = float(reaction_field_dielectric)
            self.k_rf = (eps - 1.0) / ((2.0 * eps + 1.0) * self.cutoff**3)
            self.c_rf = 1.0 / self.cutoff + self.k_rf * self.cutoff**2

    def forward(self, r2: Tensor) -> tuple[Tensor, Tensor]:
        dtype = r2.dtype
        qq, lj_a, lj_b = self.qq.to(dtype), self.lj_a.to(dtype), self.lj_b.to(dtype)
        r2s = r2 + self.eye.to(dtype)  # the diagonal has zero parameters; keep 1/r finite there
        inv_r2 = 1.0 / r2s
        inv_r = torch.sqrt(inv_r2)
        inv_r6 = inv_r2 * inv_r2 * inv_r2
        e_lj = (lj_a * inv_r6 - lj_b) * inv_r6
        p_lj = (6.0 * lj_b - 12.0 * lj_a * inv_r6) * inv_r6 * inv_r2
        if self.cutoff is None:
            e = qq * inv_r + e_lj
            p = p_lj - qq * inv_r * inv_r2
        else:
            if self.switch_distance is not None:
                r = r2s * inv_r
                width = self.cutoff - self.switch_distance
                t = ((r - self.switch_distance) / width).clamp(min=0.0)
                s = 1.0 + t * t * t * (-10.0 + t * (15.0 - 6.0 * t))
                ds_dr = t * t * (-30.0 + t * (60.0 - 30.0 * t)) / width
                p_lj = p_lj * s + e_lj * ds_dr * inv_r
                e_lj = e_lj * s
            e = qq * (inv_r + self.k_rf * r2s - self.c_rf) + e_lj
            p = qq * (2.0 * self.k_rf - inv_r * inv_r2) + p_lj
            inside = r2 < self.cutoff**2
            e = torch.where(inside, e, torch.zeros_like(e))
            p = torch.where(inside, p, torch.zeros_like(p))
        return 0.5 * e.sum((0, 1)), p


class ExceptionPairs(nn.Module):
    """Sparse list of nonbonded exceptions: plain Coulomb + LJ with per-pair parameters, no cutoff."""

    def __init__(self, i, j, qq, lj_a, lj_b, n_atoms: int, box: Tensor | None = None):
        super().__init__()
        self.vec = VectorScatter(i, j, n_atoms)
        self.register_buffer(
            "atoms", torch.stack([torch.as_tensor(i).long(), torch.as_tensor(j).long()], dim=1), persistent=False
        )
        for name, val in (("qq", qq), ("lj_a", lj_a), ("lj_b", lj_b)):
            self.register_buffer(name, torch.as_tensor(val, dtype=torch.float64).reshape(-1, 1), persistent=False)
        self.register_buffer("box", box, persistent=False)

    def forward(self, pos: Tensor) -> tuple[Tensor, Tensor]:
        dtype = pos.dtype
        v = self.vec.vectors(pos, self.box)
        inv_r2 = 1.0 / dot(v, v)
        inv_r = torch.sqrt(inv_r2)
        inv_r6 = inv_r2 * inv_r2 * inv_r2
        qq, lj_a, lj_b = self.qq.to(dtype), self.lj_a.to(dtype), self.lj_b.to(dtype)
        energy = (qq * inv_r + (lj_a * inv_r6 - lj_b) * inv_r6).sum(0)
        p = (6.0 * lj_b - 12.0 * lj_a * inv_r6) * inv_r6 * inv_r2 - qq * inv_r * inv_r2
        return energy, self.vec.transpose(p * v)


def dispersion_correction(sigma: Tensor, epsilon: Tensor, cutoff: float, switch_distance: float | None = None) -> float:
    """OpenMM's long-range LJ correction coefficient ``C`` (kJ/mol nm³); the energy is ``C / V``.

    ``C = 2π N² ⟨∫_{r_sw}^∞ r² E_LJ(r) (1 - S(r)) dr⟩`` averaged over the ``N (N + 1) / 2`` atom pairs
    (self pairs included, as OpenMM counts them), with ``S = 1`` up to ``r_sw`` and ``0`` beyond ``r_c``.
    """
    n = sigma.numel()
    keys: dict[tuple[float, float], int] = {}
    for s, e in zip(sigma.tolist(), epsilon.tolist()):
        keys[(s, e)] = keys.get((s, e), 0) + 1
    classes = list(keys.items())
    total = 0.0
    for a, ((s1, e1), c1) in enumerate(classes):
        for (s2, e2), c2 in classes[a:]:
            count = c1 * (c1 + 1) / 2 if (s1, e1) == (s2, e2) else c1 * c2
            sig, eps = 0.5 * (s1 + s2), math.sqrt(e1 * e2)
            integral = 4 * eps * (sig**12 / (9 * cutoff**9) - sig**6 / (3 * cutoff**3))
            if switch_distance is not None:
                integral += _switched_tail(sig, eps, switch_distance, cutoff)
            total += count * integral
    return 2 * math.pi * n * n * total / (n * (n + 1) / 2)


def _switched_tail(sig: float, eps: float, r_sw: float, r_c: float, order: int = 64) -> float:
    """``∫_{r_sw}^{r_c} r² 4ε[(σ/r)^12 - (σ/r)^6] (1 - S(r)) dr`` by Gauss–Legendre quadrature (a polynomial times
    powers of ``r``: converged to machine precision at this order)."""
    import numpy as np

    x, w = np.polynomial.legendre.leggauss(order)
    r = 0.5 * (r_c - r_sw) * (x + 1) + r_sw
    t = (r - r_sw) / (r_c - r_sw)
    s = 1 - 10 * t**3 + 15 * t**4 - 6 * t**5
    f = r**2 * 4 * eps * ((sig / r) ** 12 - (sig / r) ** 6) * (1 - s)
    return float(0.5 * (r_c - r_sw) * (w * f).sum())
