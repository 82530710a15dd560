"""``NonbondedForce`` with particle-mesh Ewald (smooth PME) electrostatics, batched over configurations.

Energy (kJ/mol) of charges ``q_i`` with Lennard-Jones ``σ_i, ε_i`` (Lorentz–Berthelot) in a periodic box
``B`` (rows ``a, b, c``; OpenMM's reduced, lower-triangular form; volume ``V = a_x b_y c_z``), Ewald splitting
``α`` (nm⁻¹), cutoff ``r_c``::

    E = Σ_{i<j, not excluded, r_ij < r_c} [k q_i q_j erfc(α r_ij)/r_ij + 4 ε_ij ((σ_ij/r_ij)^12 - (σ_ij/r_ij)^6) S]
      + E_recip - k α/√π Σ_i q_i² - k π Q² / (2 V α²) - Σ_{(i,j) excluded} k q_i q_j erf(α r_ij) / r_ij

(``k = 1/(4π ε0)``; ``Q = Σ q_i``: the neutralising background of a charged box) with minimum-image ``r_ij`` for
the real-space pairs and plain distances for the excluded pairs (OpenMM's default;
the exceptions' own Coulomb and LJ terms are :class:`~.nonbonded.ExceptionPairs`), ``S = S(r_ij)`` OpenMM's switching
polynomial when the force uses one (else 1), and the long-range dispersion correction added as a constant by the
importer. Reciprocal space by smooth PME (Essmann et al., J. Chem. Phys. 103, 8577 (1995)) as OpenMM's Reference
platform evaluates it, so that both agree to rounding: fractional coordinates ``u_d = K_d frac(r · B⁻¹)_d``,
charges spread with cardinal B-splines of order 5 onto the ``K_x × K_y × K_z`` grid (points ``⌊u_d⌋ + 0..4``
modulo ``K_d``), ``F = FFT(Q)`` and::

    E_recip = 1/2 Σ_{m ≠ 0} k exp(-π² |m*|² / α²) / (π V |m*|² |b_x(m_x)|² |b_y(m_y)|² |b_z(m_z)|²) |F(m)|²,

``m*`` the reciprocal vector of the integer frequency ``m`` (upper half of each axis = negative frequencies) and
``|b_d|²`` the B-spline moduli (the squared DFT of the spline at the integers; values below 1e-7 replaced by the
mean of their neighbours, as OpenMM does). ``α`` and the grid come from OpenMM
(``getPMEParametersInContext``), so the error tolerance is OpenMM's. Gradients by autograd (the B-spline weights
are polynomials of the fractional offsets).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .geometry import minimum_image
from .nonbonded import ONE_4PI_EPS0

PME_ORDER = 5


def bspline_weights(fraction: Tensor, order: int = PME_ORDER) -> Tensor:
    """Cardinal B-spline weights ``(..., order)`` of grid points ``⌊u⌋ + j`` for fractional offsets ``u - ⌊u⌋``
    ``(...)`` in [0, 1): the Cox–de Boor recursion from order 2 (``1 - f, f``) up to ``order``; rows sum to 1."""
    f = fraction
    w = [1.0 - f, f]
    for k in range(3, order + 1):
        div = 1.0 / (k - 1)
        old = w + [torch.zeros_like(f)]
        new = [div * (1.0 - f) * old[0]]
        for i in range(1, k - 1):
            new.append(div * ((f + k - 1 - i) * old[i - 1] + (i + 1 - f) * old[i]))
        new.append(div * f * old[k - 2])
        w = new
    return torch.stack(w, dim=-1)


def bspline_moduli(n: int, order: int = PME_ORDER) -> Tensor:
    """``|b(m)|²`` for ``m = 0..n-1`` (float64): the squared magnitude of the DFT of the B-spline values at the
    integers ``M_order(1), ..., M_order(order)`` placed at grid points 1..order; near-zero values (< 1e-7, e.g. at
    the Nyquist frequency for odd orders) become the mean of their two neighbours."""
    values = bspline_weights(torch.zeros((), dtype=torch.float64), order)  # M(j + 1) at offset 0, j = 0..order-1
    data = torch.zeros(n, dtype=torch.float64)
    data[1 : order + 1] = values[: min(order, n - 1)]
    k = torch.arange(n, dtype=torch.float64)
    arg = 2 * math.pi * k[:, None] * k[None, :] / n
    moduli = (data * torch.cos(arg)).sum(1) ** 2 + (data * torch.sin(arg)).sum(1) ** 2
    small = moduli < 1e-7
    if bool(small.any()):
        neighbours = 0.5 * (torch.roll(moduli, 1) + torch.roll(moduli, -1))
        moduli = torch.where(small, neighbours, moduli)
    return moduli


def _reciprocal_box(box: Tensor) -> Tensor:
    """``B⁻¹`` of a reduced box (rows a, b, c): fractional coordinates are ``r @ B⁻¹``."""
    return torch.linalg.inv(box)


class PMEElectrostatics(nn.Module):
    """Smooth-PME Coulomb + cut-off Lennard-Jones of a ``NonbondedForce`` (module docstring), energies kJ/mol.

    ``forward(pos)`` takes positions ``(3, n_atoms, batch)`` nm and returns ``(energy (batch,), gradient
    (3, n_atoms, batch))``. ``exclusions``: ``(m, 2)`` atom pairs left out of the real-space sum (every exception
    of the force). Real-space pairs are evaluated densely in chunks of configurations.
    """

    def __init__(
        self,
        charges: Tensor,
        sigma: Tensor,
        epsilon: Tensor,
        exclusions: Tensor,
        box: Tensor,
        alpha: float,
        grid: tuple[int, int, int],
        cutoff: float,
        switch: float | None = None,
        exclusions_periodic: bool = False,
        coulomb: float = 138.935456,
    ):
        super().__init__()
        n = charges.numel()
        self.n_atoms, self.alpha, self.cutoff, self.switch = n, float(alpha), float(cutoff), switch
        self.grid = tuple(int(g) for g in grid)
        self.coulomb, self.exclusions_periodic = float(coulomb), bool(exclusions_periodic)
        keep = torch.ones(n, n, dtype=torch.bool).triu(1)
        if exclusions.numel():
            i, j = exclusions[:, 0].long(), exclusions[:, 1].long()
            keep[torch.minimum(i, j), torch.maximum(i, j)] = False
        pi, pj = keep.nonzero(as_tuple=True)
        sig_ij = 0.5 * (sigma[pi] + sigma[pj])
        eps_ij = torch.sqrt(epsilon[pi] * epsilon[pj])
        self.register_buffer("pair_i", pi)
        self.register_buffer("pair_j", pj)
        self.register_buffer("pair_qq", self.coulomb * charges[pi] * charges[pj])
        self.register_buffer("pair_a", 4 * eps_ij * sig_ij**12)
        self.register_buffer("pair_b", 4 * eps_ij * sig_ij**6)
        ex = exclusions.long().reshape(-1, 2)
        self.register_buffer("ex_i", ex[:, 0])
        self.register_buffer("ex_j", ex[:, 1])
        self.register_buffer("ex_qq", self.coulomb * charges[ex[:, 0]] * charges[ex[:, 1]])
        self.register_buffer("charges", charges.clone())
        self.register_buffer("box", box.clone())
        self.register_buffer("recip", _reciprocal_box(box))
        volume = float(box[0, 0] * box[1, 1] * box[2, 2])
        net = float(charges.sum())
        self.self_energy = -self.coulomb * self.alpha / math.sqrt(math.pi) * float((charges**2).sum())
        self.self_energy -= self.coulomb * math.pi * net**2 / (2 * volume * self.alpha**2)  # neutralising plasma
        self.register_buffer("influence", self._influence(box, volume))

    def _influence(self, box: Tensor, volume: float) -> Tensor:
        """``k exp(-π²|m*|²/α²) / (π V |m*|² Π|b|²)`` on the ``(K_x, K_y, K_z)`` frequency grid (0 at m = 0)."""
        recip = _reciprocal_box(box)
        axes = []
        for n in self.grid:
            k = torch.arange(n, dtype=torch.float64)
            axes.append(torch.where(k < (n + 1) // 2, k, k - n))
        mx, my, mz = torch.meshgrid(*axes, indexing="ij")
        # reciprocal vectors m* = m_x a* + m_y b* + m_z c* with a*, b*, c* the columns of B⁻¹
        hx = mx * recip[0, 0]
        hy = mx * recip[1, 0] + my * recip[1, 1]
        hz = mx * recip[2, 0] + my * recip[2, 1] + mz * recip[2, 2]
        m2 = hx**2 + hy**2 + hz**2
        bx, by, bz = (bspline_moduli(n) for n in self.grid)
        denom = math.pi * volume * m2 * bx[:, None, None] * by[None, :, None] * bz[None, None, :]
        factor = math.pi**2 / self.alpha**2
        out = self.coulomb * torch.exp(-factor * m2) / torch.where(m2 > 0, denom, torch.ones_like(denom))
        out[0, 0, 0] = 0.0
        return out

    def reciprocal_energy(self, pos: Tensor) -> Tensor:
        """``E_recip`` ``(batch,)`` of positions ``(batch, n_atoms, 3)`` nm."""
        b = pos.shape[0]
        grid = torch.tensor(self.grid, device=pos.device)
        t = pos @ self.recip.to(pos.dtype)
        t = (t - torch.floor(t)) * grid.to(pos.dtype)
        base = torch.floor(t.detach())
        w = bspline_weights(t - base)  # (b, n, 3, order)
        offsets = torch.arange(PME_ORDER, device=pos.device)
        idx = (base.long()[..., None] + offsets) % grid[:, None]  # (b, n, 3, order)
        kx, ky, kz = grid.tolist()
        flat = (idx[:, :, 0, :, None, None] * ky + idx[:, :, 1, None, :, None]) * kz + idx[:, :, 2, None, None, :]
        weight = w[:, :, 0, :, None, None] * w[:, :, 1, None, :, None] * w[:, :, 2, None, None, :]
        weight = weight * self.charges.to(pos.dtype)[None, :, None, None, None]
        q_grid = pos.new_zeros(b, kx * ky * kz).scatter_add(1, flat.reshape(b, -1), weight.reshape(b, -1))
        f = torch.fft.fftn(q_grid.reshape(b, kx, ky, kz), dim=(1, 2, 3))
        power = f.real**2 + f.imag**2
        return 0.5 * (power * self.influence.to(pos.dtype)).sum((1, 2, 3))

    def real_energy(self, pos: Tensor) -> Tensor:
        """Real-space Coulomb + LJ of the pairs within the cutoff and the excluded-pair corrections ``(batch,)``."""
        box = self.box.to(pos.dtype)
        d = minimum_image((pos[:, self.pair_j] - pos[:, self.pair_i]).permute(2, 0, 1), box)
        r2 = (d * d).sum(0)
        inside = r2 < self.cutoff**2
        r = torch.sqrt(torch.where(inside, r2, torch.ones_like(r2)))
        inv_r6 = 1.0 / torch.where(inside, r2, torch.ones_like(r2)) ** 3
        coulomb = self.pair_qq.to(pos.dtype) * torch.erfc(self.alpha * r) / r
        lj = (self.pair_a.to(pos.dtype) * inv_r6 - self.pair_b.to(pos.dtype)) * inv_r6
        if self.switch is not None:
            x = ((r - self.switch) / (self.cutoff - self.switch)).clamp(0.0, 1.0)
            lj = lj * (1 - x**3 * (10 - 15 * x + 6 * x**2))
        energy = torch.where(inside, coulomb + lj, torch.zeros_like(r)).sum(1)
        if self.ex_i.numel():
            de = (pos[:, self.ex_j] - pos[:, self.ex_i]).permute(2, 0, 1)
            if self.exclusions_periodic:
                de = minimum_image(de, box)
            re = torch.sqrt((de * de).sum(0))
            ar = self.alpha * re
            small = torch.erf(ar) <= 1e-6  # coincident or very close: the limit 2α/√π of erf(αr)/r
            safe = torch.where(small, torch.ones_like(re), re)
            corr = torch.where(small, 2 * self.alpha / math.sqrt(math.pi) * torch.ones_like(re), torch.erf(ar) / safe)
            energy = energy - (self.ex_qq.to(pos.dtype) * corr).sum(1)
        return energy

    def energy(self, pos: Tensor) -> Tensor:
        """Total ``(batch,)`` kJ/mol of positions ``(batch, n_atoms, 3)`` nm (without the dispersion correction)."""
        return self.real_energy(pos) + self.reciprocal_energy(pos) + self.self_energy

    def forward(self, pos: Tensor) -> tuple[Tensor, Tensor]:
        x = pos.detach().permute(2, 1, 0)  # (batch, n_atoms, 3)
        energies, grads = [], []
        pairs = max(1, int(self.pair_i.numel()))
        chunk = max(1, int(2**22 // pairs))  # bound the (3, chunk, pairs) temporaries to ~100 MB in float64
        for start in range(0, x.shape[0], chunk):
            with torch.enable_grad():
                xc = x[start : start + chunk].contiguous().requires_grad_(True)
                e = self.energy(xc)
                (g,) = torch.autograd.grad(e.sum(), xc)
            energies.append(e.detach())
            grads.append(g)
        return torch.cat(energies), torch.cat(grads).permute(2, 1, 0).contiguous()


def import_pme(force, system, box: Tensor) -> PMEElectrostatics:
    """A :class:`PMEElectrostatics` for an OpenMM ``NonbondedForce`` with method PME in ``system``; ``α`` and the
    grid are OpenMM's for this system (from a Reference-platform context). Raises ``ValueError`` naming what is
    not supported (LJPME, Ewald, parameter offsets)."""
    import openmm
    from openmm import unit

    method = force.getNonbondedMethod()
    if method != openmm.NonbondedForce.PME:
        names = {3: "Ewald", 5: "LJPME"}
        raise ValueError(f"NonbondedForce method {names.get(method, method)} is not supported; use PME")
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    try:
        alpha, nx, ny, nz = force.getPMEParametersInContext(context)
    finally:
        del context
    rows = [force.getParticleParameters(k) for k in range(force.getNumParticles())]

    def value(x):
        return x.value_in_unit_system(unit.md_unit_system) if unit.is_quantity(x) else float(x)

    q, sig, eps = (torch.tensor([value(r[c]) for r in rows], dtype=torch.float64) for c in range(3))
    exclusions = torch.tensor(
        [force.getExceptionParameters(k)[:2] for k in range(force.getNumExceptions())], dtype=torch.long
    ).reshape(-1, 2)
    cutoff = value(force.getCutoffDistance())
    switch = value(force.getSwitchingDistance()) if force.getUseSwitchingFunction() else None

    return PMEElectrostatics(
        q,
        sig,
        eps,
        exclusions,
        box,
        float(alpha),
        (nx, ny, nz),
        cutoff,
        switch,
        force.getExceptionsUsePeriodicBoundaryConditions(),
        ONE_4PI_EPS0,
    )
