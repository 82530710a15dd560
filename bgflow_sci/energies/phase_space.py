"""Phase-space energies: a configurational energy plus the kinetic term of auxiliary velocities."""

from __future__ import annotations

from torch import Tensor

from .base import Energy


class PhaseSpaceEnergy(Energy):
    """``u(q, v) = u(q) + ½ m |v|² / kT`` on flat ``(batch, 2 d)`` vectors ``[q, v]`` (reduced units).

    Used as the target of stochastic flows with underdamped Langevin blocks (Wu et al. 2020): the
    velocities are auxiliary, so the marginal of ``q`` is the Boltzmann density of ``u(q)``.
    """

    def __init__(self, energy: Energy, mass: float = 1.0, kT: float = 1.0):
        super().__init__(2 * energy.dim)
        if mass <= 0 or kT <= 0:
            raise ValueError("mass and kT must be positive")
        self.base, self.mass, self.kT = energy, float(mass), float(kT)

    def _energy(self, x: Tensor) -> Tensor:
        d = self.base.dim
        return self.base.energy(x[:, :d]) + 0.5 * self.mass * (x[:, d:] ** 2).sum(-1) / self.kT
