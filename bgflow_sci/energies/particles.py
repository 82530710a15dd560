"""Pairwise particle energies of Köhler, Klein, Noé, "Equivariant flows" (ICML 2020): DW4 and LJ13.

Configurations are flat, ``(batch, n_particles * spatial_dim)``, particle-major (``x[:, i*d:(i+1)*d]`` is
particle ``i``).  Both energies depend only on pair distances (and, for LJ, on positions relative to the
centre of mass), so they are invariant to translations, rotations, reflections and permutations.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Energy


class PairwiseParticleEnergy(Energy):
    """``u(x) = Σ_{i<j} φ(|x_i - x_j|) + extra(x)`` for ``n_particles`` points in ``spatial_dim`` dimensions."""

    def __init__(self, n_particles: int, spatial_dim: int):
        if n_particles < 2 or spatial_dim < 1:
            raise ValueError(f"need n_particles >= 2 and spatial_dim >= 1, got {n_particles}, {spatial_dim}")
        super().__init__(n_particles * spatial_dim)
        self.n_particles, self.spatial_dim = int(n_particles), int(spatial_dim)
        i, j = torch.triu_indices(n_particles, n_particles, offset=1)
        self.register_buffer("pair_i", i, persistent=False)
        self.register_buffer("pair_j", j, persistent=False)

    def positions(self, x: Tensor) -> Tensor:
        """``(batch, n_particles, spatial_dim)`` view of flat configurations."""
        return x.reshape(x.shape[0], self.n_particles, self.spatial_dim)

    def pair_distances(self, x: Tensor) -> Tensor:
        """Distances of the ``n (n - 1) / 2`` unordered pairs ``i < j``, shape ``(batch, n_pairs)``."""
        pos = self.positions(x)
        diff = pos[:, self.pair_i.to(x.device)] - pos[:, self.pair_j.to(x.device)]
        # vector_norm has a zero (not NaN) gradient at coincident points
        return torch.linalg.vector_norm(diff, dim=-1)

    def pair_potential(self, d: Tensor) -> Tensor:
        """The pair term ``φ(d)`` in kT, elementwise."""
        raise NotImplementedError

    def extra_energy(self, x: Tensor) -> Tensor:
        """A one-body term ``(batch,)``; zero by default."""
        return x.new_zeros(x.shape[0])

    def _energy(self, x: Tensor) -> Tensor:
        return self.pair_potential(self.pair_distances(x)).sum(-1) + self.extra_energy(x)


class DoubleWellParticles(PairwiseParticleEnergy):
    """``u(x) = (1/τ) Σ_{i<j} [a (d_ij - d0) + b (d_ij - d0)^2 + c (d_ij - d0)^4]``.

    The multi-particle double well of Köhler, Klein, Noé (ICML 2020), whose pair distances prefer two
    lengths.  Defaults (their DW4): 4 particles in 2D, ``a = 0, b = -4, c = 0.9, d0 = 4, τ = 1``.
    """

    def __init__(
        self,
        n_particles: int = 4,
        spatial_dim: int = 2,
        a: float = 0.0,
        b: float = -4.0,
        c: float = 0.9,
        d0: float = 4.0,
        tau: float = 1.0,
    ):
        super().__init__(n_particles, spatial_dim)
        if tau <= 0:
            raise ValueError(f"tau must be positive, got {tau}")
        self.a, self.b, self.c, self.d0, self.tau = float(a), float(b), float(c), float(d0), float(tau)

    def pair_potential(self, d: Tensor) -> Tensor:
        r = d - self.d0
        return (self.a * r + self.b * r**2 + self.c * r**4) / self.tau


class DW4(DoubleWellParticles):
    """DW4: :class:`DoubleWellParticles` with 4 particles in 2D (``dim = 8``), ``a, b, c, d0, τ = 0, -4, 0.9, 4, 1``."""

    def __init__(self, a: float = 0.0, b: float = -4.0, c: float = 0.9, d0: float = 4.0, tau: float = 1.0):
        super().__init__(n_particles=4, spatial_dim=2, a=a, b=b, c=c, d0=d0, tau=tau)


class LennardJonesCluster(PairwiseParticleEnergy):
    """``u(x) = (ε/τ) Σ_{i<j} [(r_m/d_ij)^12 - 2 (r_m/d_ij)^6] + (k/2) Σ_i |x_i - x̄|^2``.

    The Lennard-Jones cluster of Köhler, Klein, Noé (ICML 2020): their ``(ε/2τ) Σ_{i≠j}`` over ordered pairs
    equals ``ε/τ`` per unordered pair, so each pair has its minimum ``-ε/τ`` at ``d = r_m``.  The harmonic
    tether to the centre of mass ``x̄`` keeps the cluster together; with ``oscillator_scale = k = 1`` it is
    ``0.5 Σ_i |x_i - x̄|^2``, the convention of bgflow's ``LennardJonesPotential`` (it is not divided by τ).
    Defaults (LJ13): 13 particles in 3D, ``ε = r_m = τ = k = 1``.  Coincident particles give ``+inf``
    (the pair term is evaluated as ``s (s - 2)`` with ``s = (r_m/d)^6``, which is ``+inf`` at ``d = 0``).
    """

    def __init__(
        self,
        n_particles: int = 13,
        spatial_dim: int = 3,
        eps: float = 1.0,
        rm: float = 1.0,
        tau: float = 1.0,
        oscillator_scale: float = 1.0,
    ):
        super().__init__(n_particles, spatial_dim)
        if eps <= 0 or rm <= 0 or tau <= 0 or oscillator_scale < 0:
            raise ValueError("need eps, rm, tau > 0 and oscillator_scale >= 0")
        self.eps, self.rm, self.tau, self.oscillator_scale = float(eps), float(rm), float(tau), float(oscillator_scale)

    def pair_potential(self, d: Tensor) -> Tensor:
        s = (self.rm / d) ** 6
        return (self.eps / self.tau) * s * (s - 2.0)

    def extra_energy(self, x: Tensor) -> Tensor:
        pos = self.positions(x)
        centred = pos - pos.mean(dim=1, keepdim=True)
        return 0.5 * self.oscillator_scale * (centred**2).sum(dim=(1, 2))


class LJ13(LennardJonesCluster):
    """LJ13: :class:`LennardJonesCluster` with 13 particles in 3D (``dim = 39``), ``ε = r_m = τ = 1``, ``k = 1``."""

    def __init__(self, eps: float = 1.0, rm: float = 1.0, tau: float = 1.0, oscillator_scale: float = 1.0):
        super().__init__(n_particles=13, spatial_dim=3, eps=eps, rm=rm, tau=tau, oscillator_scale=oscillator_scale)
