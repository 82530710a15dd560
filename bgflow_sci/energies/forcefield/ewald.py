"""``NonbondedForce`` with Ewald summation (smooth PME, plain Ewald, LJPME), batched over configurations.

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

Plain Ewald (method ``Ewald``, rectangular boxes only, as in OpenMM): ``E_recip`` is the direct sum over the
half space of wave vectors ``k = 2π B⁻¹ m`` with ``0 <= m_x < K_x``, ``|m_y| < K_y``, ``|m_z| < K_z``::

    E_recip = Σ_{k in half space} k_C (4π/V) exp(-|k|²/(4α²)) / |k|² |Σ_i q_i exp(i k·r_i)|²,

``α = sqrt(-ln(2δ))/r_c`` and ``K_d`` from OpenMM's error estimate for the tolerance ``δ``
(:func:`ewald_parameters`).

LJPME (dispersion PME, no switching allowed, no dispersion correction, as in OpenMM): per-atom ``c_i = 2 σ_i³ √ε_i``
(geometric ``C6_ij = c_i c_j``), dispersion splitting ``β`` and grid from ``getLJPMEParametersInContext``,
``g(x) = exp(-x²)(1 + x² + x⁴/2)``. Added to the energy above: for pairs within the cutoff
``C6_ij (1 - g(β r))/r⁶ - LJ_LB(r_c) - C6_ij (1 - g(β r_c))/r_c⁶`` (the Lorentz–Berthelot LJ shifted to zero at the
cutoff), for excluded pairs ``+ C6_ij (1 - g(β r))/r⁶``, the self term ``+ β⁶/12 Σ c_i²`` and the reciprocal
dispersion ``1/2 Σ_m D(m) |F_c(m)|²`` (``m = 0`` included) with ``F_c`` the FFT of the spread ``c_i`` and
``D(m) = -π^{3/2} / (3 V Π|b|²) (2 π^{7/2} |m*|³ erfc(π|m*|/β) + exp(-(π|m*|/β)²)(β³ - 2 β π² |m*|²))``.
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


def _disp_screen(x: Tensor) -> Tensor:
    """``g(x) = exp(-x²)(1 + x² + x⁴/2)``: the short-range fraction of ``1/r⁶`` at ``x = α_disp r``."""
    x2 = x * x
    return torch.exp(-x2) * (1 + x2 + 0.5 * x2 * x2)


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
        ewald_kmax: tuple[int, int, int] | None = None,
        ljpme: tuple[float, tuple[int, int, int]] | None = None,
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
        self.ljpme = ljpme is not None
        if self.ljpme:
            if switch is not None:
                raise ValueError("NonbondedForce method LJPME cannot be used with a switching function (as in OpenMM)")
            self.alpha_disp, self.grid_disp = float(ljpme[0]), tuple(int(g) for g in ljpme[1])
            c6 = 2 * sigma**3 * torch.sqrt(epsilon)  # per-atom dispersion "charge": C6_ij = c_i c_j (geometric)
            self.register_buffer("c6", c6)
            self.register_buffer("pair_c6", c6[pi] * c6[pj])
            self.register_buffer("ex_c6", c6[ex[:, 0]] * c6[ex[:, 1]])
            rc6 = self.cutoff**-6
            shift = -(self.pair_a * rc6 - self.pair_b) * rc6  # minus the Lorentz-Berthelot LJ at the cutoff
            shift = shift - self.pair_c6 * rc6 * (1 - _disp_screen(torch.tensor(self.alpha_disp * self.cutoff)))
            self.register_buffer("pair_shift", shift)
            self.self_energy += self.alpha_disp**6 / 12 * float((c6**2).sum())
            self.register_buffer("influence_disp", self._dispersion_influence(box, volume))
        self.ewald = ewald_kmax is not None
        if self.ewald:
            kvec, coeff = self._ewald_kvectors(tuple(int(k) for k in ewald_kmax), volume)
            self.register_buffer("kvec", kvec)
            self.register_buffer("kcoeff", coeff)
            self.register_buffer("influence", torch.zeros(0, dtype=torch.float64))
        else:
            self.register_buffer("influence", self._influence(box, volume))

    def _dispersion_influence(self, box: Tensor, volume: float) -> Tensor:
        """Dispersion-PME influence function on the ``grid_disp`` frequency grid (the ``m = 0`` term included):
        ``-π^{3/2} / (3 V Π|b|²) · (2π^{7/2} |m*|³ erfc(π|m*|/α) + exp(-(π|m*|/α)²)(α³ - 2απ²|m*|²))``."""
        m2 = self._frequencies(box, self.grid_disp)
        bx, by, bz = (bspline_moduli(n) for n in self.grid_disp)
        a, m = self.alpha_disp, torch.sqrt(m2)
        b = math.pi * m / a
        term = 2 * math.pi**3.5 * torch.erfc(b) * m**3 + torch.exp(-(b**2)) * (a**3 - 2 * a * math.pi**2 * m2)
        scale = -2 * math.pi**1.5 / (6 * volume)
        return term * scale / (bx[:, None, None] * by[None, :, None] * bz[None, None, :])

    @staticmethod
    def _frequencies(box: Tensor, grid: tuple[int, int, int]) -> Tensor:
        """``|m*|²`` (nm⁻²) of the integer frequencies of a ``grid`` (upper half of each axis negative); the
        reciprocal vectors are ``m* = m_x a* + m_y b* + m_z c*``, ``a*, b*, c*`` the columns of ``B⁻¹``."""
        recip = _reciprocal_box(box)
        axes = []
        for n in grid:
            k = torch.arange(n, dtype=torch.float64)
            axes.append(torch.where(k < (n + 1) // 2, k, k - n))
        mx, my, mz = torch.meshgrid(*axes, indexing="ij")
        hx = mx * recip[0, 0]
        hy = mx * recip[1, 0] + my * recip[1, 1]
        hz = mx * recip[2, 0] + my * recip[2, 1] + mz * recip[2, 2]
        return hx**2 + hy**2 + hz**2

    def _ewald_kvectors(self, kmax: tuple[int, int, int], volume: float) -> tuple[Tensor, Tensor]:
        """Half-space wave vectors ``k = 2π B⁻¹ m`` (nm⁻¹), ``(n_k, 3)``, of the integer triples with
        ``0 <= m_x < K_x``, ``|m_y| < K_y``, ``|m_z| < K_z`` (``m_y > 0`` or ``m_z > 0`` where the earlier components
        vanish), as OpenMM's Reference loop, and their coefficients ``k 4π/V exp(-|k|²/(4α²))/|k|²``."""
        nx, ny, nz = kmax
        mx, my, mz = torch.meshgrid(
            torch.arange(0, nx), torch.arange(-ny + 1, ny), torch.arange(-nz + 1, nz), indexing="ij"
        )
        m = torch.stack([mx, my, mz], -1).reshape(-1, 3)
        half = (m[:, 0] > 0) | ((m[:, 0] == 0) & ((m[:, 1] > 0) | ((m[:, 1] == 0) & (m[:, 2] > 0))))
        m = m[half].to(torch.float64)
        kvec = 2 * math.pi * m @ self.recip.T
        k2 = (kvec**2).sum(-1)
        coeff = self.coulomb * 4 * math.pi / volume * torch.exp(-k2 / (4 * self.alpha**2)) / k2
        return kvec, coeff

    def _influence(self, box: Tensor, volume: float) -> Tensor:
        """``k exp(-π²|m*|²/α²) / (π V |m*|² Π|b|²)`` on the ``(K_x, K_y, K_z)`` frequency grid (0 at m = 0)."""
        m2 = self._frequencies(box, self.grid)
        bx, by, bz = (bspline_moduli(n) for n in self.grid)
        denom = math.pi * volume * m2 * bx[:, None, None] * by[None, :, None] * bz[None, None, :]
        factor = math.pi**2 / self.alpha**2
        out = self.coulomb * torch.exp(-factor * m2) / torch.where(m2 > 0, denom, torch.ones_like(denom))
        out[0, 0, 0] = 0.0
        return out

    def ewald_energy(self, pos: Tensor) -> Tensor:
        """Plain-Ewald reciprocal energy ``Σ_{k in half space} c_k |Σ_i q_i exp(i k·r_i)|²`` ``(batch,)``."""
        phase = pos @ self.kvec.to(pos.dtype).T  # (b, n, n_k)
        q = self.charges.to(pos.dtype)[None, :, None]
        cs, ss = (q * torch.cos(phase)).sum(1), (q * torch.sin(phase)).sum(1)
        return ((cs**2 + ss**2) * self.kcoeff.to(pos.dtype)).sum(-1)

    def reciprocal_energy(self, pos: Tensor) -> Tensor:
        """``E_recip`` ``(batch,)`` of positions ``(batch, n_atoms, 3)`` nm (smooth PME, or plain Ewald)."""
        if self.ewald:
            return self.ewald_energy(pos)
        energy = 0.5 * (self._power(pos, self.charges, self.grid) * self.influence.to(pos.dtype)).sum((1, 2, 3))
        if self.ljpme:
            power = self._power(pos, self.c6, self.grid_disp)
            energy = energy + 0.5 * (power * self.influence_disp.to(pos.dtype)).sum((1, 2, 3))
        return energy

    def _power(self, pos: Tensor, charges: Tensor, grid_size: tuple[int, int, int]) -> Tensor:
        """``|FFT(Q)|²`` ``(batch, K_x, K_y, K_z)`` of ``charges`` spread with order-5 B-splines on the grid."""
        b = pos.shape[0]
        grid = torch.tensor(grid_size, device=pos.device)
        t = pos @ self.recip.to(pos.dtype)
        t = (t - torch.floor(t)) * grid.to(pos.dtype)
        base = torch.floor(t.detach())
        w = bspline_weights(t - base)  # (b, n, 3, order)
        offsets = torch.arange(PME_ORDER, device=pos.device)
        idx = (base.long()[..., None] + offsets) % grid[:, None]  # (b, n, 3, order)
        kx, ky, kz = grid.tolist()
        flat = (idx[:, :, 0, :, None, None] * ky + idx[:, :, 1, None, :, None]) * kz + idx[:, :, 2, None, None, :]
        weight = w[:, :, 0, :, None, None] * w[:, :, 1, None, :, None] * w[:, :, 2, None, None, :]
        weight = weight * charges.to(pos.dtype)[None, :, None, None, None]
        q_grid = pos.new_zeros(b, kx * ky * kz).scatter_add(1, flat.reshape(b, -1), weight.reshape(b, -1))
        f = torch.fft.fftn(q_grid.reshape(b, kx, ky, kz), dim=(1, 2, 3))
        return f.real**2 + f.imag**2

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
        if self.ljpme:  # + C6 (1 - g(α_d r)) / r⁶ (taken back from the reciprocal sum) + the shift to 0 at r_c
            lj = lj + self.pair_c6.to(pos.dtype) * inv_r6 * (1 - _disp_screen(self.alpha_disp * r))
            lj = lj + self.pair_shift.to(pos.dtype)
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
            if self.ljpme:
                disp = self.ex_c6.to(pos.dtype) / re**6 * (1 - _disp_screen(self.alpha_disp * re))
                energy = energy + disp.sum(1)
        return energy

    def energy(self, pos: Tensor) -> Tensor:
        """Total ``(batch,)`` kJ/mol of positions ``(batch, n_atoms, 3)`` nm (without the dispersion correction)."""
        return self.real_energy(pos) + self.reciprocal_energy(pos) + self.self_energy

    def forward(self, pos: Tensor) -> tuple[Tensor, Tensor]:
        x = pos.detach().permute(2, 1, 0)  # (batch, n_atoms, 3)
        energies, grads = [], []
        pairs = max(1, int(self.pair_i.numel()), self.n_atoms * int(getattr(self, "kvec", self.influence).shape[0]))
        chunk = max(1, int(2**22 // pairs))  # bound the (3, chunk, pairs) temporaries to ~100 MB in float64
        for start in range(0, x.shape[0], chunk):
            with torch.enable_grad():
                xc = x[start : start + chunk].contiguous().requires_grad_(True)
                e = self.energy(xc)
                (g,) = torch.autograd.grad(e.sum(), xc)
            energies.append(e.detach())
            grads.append(g)
        return torch.cat(energies), torch.cat(grads).permute(2, 1, 0).contiguous()


def ewald_parameters(tolerance: float, cutoff: float, box: Tensor) -> tuple[float, tuple[int, int, int]]:
    """OpenMM's plain-Ewald parameters for an error tolerance ``δ``: ``α = sqrt(-ln(2δ)) / r_c`` and, per axis of
    width ``L`` (the box diagonal), the smallest ``K`` with ``δ - 0.05 sqrt(L α) K exp(-(π K / (L α))²) >= 0``
    searched from 10 downwards (upwards if ``K = 10`` falls short), made odd."""
    alpha = math.sqrt(-math.log(2 * tolerance)) / cutoff

    def error(width: float, k: int) -> float:
        t = k * math.pi / (width * alpha)
        return tolerance - 0.05 * math.sqrt(width * alpha) * k * math.exp(-t * t)

    kmax = []
    for d in range(3):
        width, k = float(box[d, d]), 10
        if error(width, k) > 0:
            while k > 0 and error(width, k) > 0:
                k -= 1
            k += 1
        else:
            while error(width, k) < 0:
                k += 1
        kmax.append(k + 1 if k % 2 == 0 else k)
    return alpha, (kmax[0], kmax[1], kmax[2])


def import_pme(force, system, box: Tensor) -> PMEElectrostatics:
    """A :class:`PMEElectrostatics` for an OpenMM ``NonbondedForce`` with method PME or Ewald in ``system``; ``α``
    and the grid are OpenMM's for this system (PME: from a Reference-platform context; Ewald:
    :func:`ewald_parameters`). Raises ``ValueError`` naming what is not supported (LJPME)."""
    import openmm
    from openmm import unit

    method = force.getNonbondedMethod()
    kmax, ljpme = None, None
    if method == openmm.NonbondedForce.PME:
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        try:
            alpha, nx, ny, nz = force.getPMEParametersInContext(context)
        finally:
            del context
    elif method == openmm.NonbondedForce.Ewald:
        cut = force.getCutoffDistance()
        cut = cut.value_in_unit(unit.nanometer) if unit.is_quantity(cut) else float(cut)
        if bool((box - torch.diag(torch.diagonal(box))).abs().max() > 0):
            raise ValueError("NonbondedForce method Ewald needs a rectangular box (as in OpenMM); use PME")
        alpha, kmax = ewald_parameters(force.getEwaldErrorTolerance(), cut, box)
        nx, ny, nz = kmax
    elif method == openmm.NonbondedForce.LJPME:
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        try:
            alpha, nx, ny, nz = force.getPMEParametersInContext(context)
            alpha_d, dx, dy, dz = force.getLJPMEParametersInContext(context)
        finally:
            del context
        ljpme = (float(alpha_d), (int(dx), int(dy), int(dz)))
    else:
        raise ValueError(f"NonbondedForce method {method} is not supported; use PME, LJPME or Ewald")
    rows = [force.getParticleParameters(k) for k in range(force.getNumParticles())]

    from .openmm_import import _v as value  # here, not at the top: openmm_import imports this module

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
        kmax,
        ljpme,
    )
