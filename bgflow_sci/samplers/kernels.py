"""Metropolis-adjusted kernels: random-walk Metropolis, MALA and HMC."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..integrators import langevin_log_transition, leapfrog, overdamped_langevin_step, random_walk_step
from .base import MetropolisKernel
from .state import ChainState


class RandomWalkMetropolis(MetropolisKernel):
    """Gaussian random-walk Metropolis: ``x' = x + σ η``, accept with ``min(1, exp(u(x) - u(x')))``.

    (Metropolis et al. 1953.) Needs energies only. Default target acceptance 0.3 for adaptation.
    """

    needs_force = False
    default_target_acceptance = 0.3

    def _propose(self, state: ChainState, generator: torch.Generator | None) -> tuple[ChainState, Tensor]:
        x_new, _ = random_walk_step(state.x, self.step_size, generator=generator)
        proposal = self.potential.evaluate(x_new, need_force=False)
        return proposal, state.energy - proposal.energy


class MALA(MetropolisKernel):
    """Metropolis-adjusted Langevin: the overdamped Langevin step ``x' = x + εF + √(2ε) η`` as a proposal.

    ``log r = u(x) - u(x') + log q(x|x') - log q(x'|x)`` (Roberts & Tweedie, Bernoulli 1996). Default target
    acceptance 0.574 (Roberts & Rosenthal 1998).
    """

    default_target_acceptance = 0.574

    def _propose(self, state: ChainState, generator: torch.Generator | None) -> tuple[ChainState, Tensor]:
        eps = self.step_size
        x_new, _ = overdamped_langevin_step(state.x, state.force, eps, generator=generator)
        proposal = self.potential.evaluate(x_new)
        log_q_fwd = langevin_log_transition(x_new, state.x, state.force, eps)
        log_q_bwd = langevin_log_transition(state.x, x_new, proposal.force, eps)
        return proposal, state.energy - proposal.energy + log_q_bwd - log_q_fwd


class HMC(MetropolisKernel):
    """Hamiltonian Monte Carlo with ``n_leapfrog`` leapfrog steps and momenta ``p ~ N(0, m I)``.

    Accept with ``min(1, exp(H(x, p) - H(x', p')))``, ``H = u + |p|²/(2m)`` (Duane et al. 1987; Neal 2011).
    Default target acceptance 0.65 (Beskos et al. 2013).
    """

    default_target_acceptance = 0.65

    def __init__(
        self,
        target,
        step_size: float | Tensor,
        n_leapfrog: int = 10,
        mass: float = 1.0,
        adapt: bool = True,
        target_acceptance: float | None = None,
        per_chain: bool = True,
    ):
        super().__init__(target, step_size, adapt, target_acceptance, per_chain)
        if int(n_leapfrog) < 1:
            raise ValueError(f"n_leapfrog must be a positive integer, got {n_leapfrog}")
        if not (math.isfinite(mass) and mass > 0):
            raise ValueError(f"mass must be positive, got {mass}")
        self.n_leapfrog, self.mass = int(n_leapfrog), float(mass)

    def _propose(self, state: ChainState, generator: torch.Generator | None) -> tuple[ChainState, Tensor]:
        x = state.x
        p = math.sqrt(self.mass) * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        last: list[ChainState] = []

        def force_fn(y: Tensor) -> Tensor:
            last[:] = [self.potential.evaluate(y)]
            return last[0].force

        _, p_new, _ = leapfrog(x, p, state.force, force_fn, self.step_size, self.n_leapfrog, self.mass)
        proposal = last[0]
        kinetic = 0.5 * (p**2).sum(-1) / self.mass
        kinetic_new = 0.5 * (p_new**2).sum(-1) / self.mass
        return proposal, state.energy + kinetic - proposal.energy - kinetic_new
