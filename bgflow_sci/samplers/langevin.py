"""Unadjusted Langevin kernels: overdamped (Euler–Maruyama) and underdamped (BAOAB).

Neither has an accept/reject step, so each samples its target only up to a step-size bias; their NaN guard (reset
to the last valid state) is the one of :class:`~bgflow_sci.samplers.base.MCMCKernel`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..integrators import baoab_step, overdamped_langevin_step
from .base import MCMCKernel
from .state import ChainState


class OverdampedLangevin(MCMCKernel):
    """Unadjusted Langevin algorithm ``x' = x + ε F(x) + √(2ε) η``: stationary law ``exp(-u)`` up to ``O(ε)``.

    For a Gaussian with covariance ``Σ`` the stationary covariance is ``Σ (I - ε Σ⁻¹ / 2)⁻¹`` (Roberts & Tweedie
    1996).
    """

    def _step(self, state: ChainState, generator: torch.Generator | None) -> ChainState:
        x_new, _ = overdamped_langevin_step(state.x, state.force, self.step_size, generator=generator)
        return self.potential.evaluate(x_new)


class UnderdampedLangevin(MCMCKernel):
    """Underdamped Langevin dynamics with the BAOAB splitting; velocities ``v`` are part of the chain state.

    Samples ``exp(-u(x)/T - m|v|²/(2T))`` with configurational error ``O(Δt²)`` (exact in ``x`` for harmonic
    potentials; Leimkuhler & Matthews 2013). Reduced units: ``temperature`` relative to the energy's kT, ``mass``,
    ``friction`` ``γ`` (inverse time), ``step_size`` ``Δt``. Velocities start from ``N(0, T/m)``.
    """

    def __init__(
        self, target, step_size: float | Tensor, mass: float = 1.0, friction: float = 1.0, temperature: float = 1.0
    ):
        super().__init__(target, step_size)
        for name, value in (("mass", mass), ("friction", friction), ("temperature", temperature)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive and finite, got {value}")
        self.mass, self.friction, self.temperature = float(mass), float(friction), float(temperature)

    def _init_extra(self, state: ChainState, generator: torch.Generator | None) -> ChainState:
        x = state.x
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        state.v = math.sqrt(self.temperature / self.mass) * noise
        return state

    def _step(self, state: ChainState, generator: torch.Generator | None) -> ChainState:
        last: list[ChainState] = []

        def force_fn(y: Tensor) -> Tensor:
            last[:] = [self.potential.evaluate(y)]
            return last[0].force

        _, v, _, _ = baoab_step(
            state.x,
            state.v,
            state.force,
            force_fn,
            self.step_size,
            self.mass,
            self.friction,
            self.temperature,
            generator=generator,
        )
        new = last[0]
        new.v = v
        return new
