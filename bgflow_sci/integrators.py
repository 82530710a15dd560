"""Single-step integrators and Metropolis decisions as pure functions of tensors (imports only torch).

One home for the updates shared by the MCMC kernels (:mod:`bgflow_sci.samplers`) and the stochastic flow layers
(:mod:`bgflow_sci.flows.stochastic`). Shapes: positions/velocities/forces ``(batch, dim)``; a step size is a float or
a ``(batch,)`` tensor (one per chain). Forces are ``F = -du/dx`` in kT per coordinate unit. Every stochastic update
takes an optional ``noise`` (standard normal, shape of ``x``) and returns the noise it used, so that it can be driven
by reparametrised noise; all updates are plain tensor arithmetic, hence differentiable with respect to their inputs
(pass forces from :meth:`Energy.energy_and_force <bgflow_sci.energies.Energy.energy_and_force>` with
``create_graph=True`` to backpropagate through a trajectory). Forces are the caller's: nothing here evaluates an energy.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

StepSize = float | Tensor

__all__ = [
    "StepSize",
    "acceptance_probability",
    "baoab_step",
    "langevin_log_transition",
    "langevin_noise",
    "leapfrog",
    "metropolis_accept",
    "overdamped_langevin_step",
    "random_walk_step",
]


def _column(step: StepSize, x: Tensor) -> Tensor | float:
    """A step size broadcastable against ``x``: a ``(batch,)`` tensor becomes ``(batch, 1)``."""
    if isinstance(step, Tensor) and step.dim() == 1:
        return step.to(x)[:, None]
    return step


def _sqrt(value: Tensor | float) -> Tensor | float:
    return torch.sqrt(value) if isinstance(value, Tensor) else math.sqrt(value)


def _noise(noise: Tensor | None, x: Tensor, generator: torch.Generator | None) -> Tensor:
    if noise is None:
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    if noise.shape != x.shape:
        raise ValueError(f"noise must have the shape of x {tuple(x.shape)}, got {tuple(noise.shape)}")
    return noise


def _nan_to_neg_inf(log_ratio: Tensor) -> Tensor:
    return torch.where(torch.isnan(log_ratio), -torch.inf, log_ratio)


def metropolis_accept(log_ratio: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Metropolis–Hastings decisions ``log U < log_ratio`` with ``U ~ Uniform(0, 1)``, boolean ``(batch,)``.

    ``log_ratio`` is the log acceptance ratio (``log π(x') q(x|x') - log π(x) q(x'|x)``); NaN is a rejection,
    ``+inf`` an acceptance.
    """
    u = torch.rand(log_ratio.shape, generator=generator, dtype=log_ratio.dtype, device=log_ratio.device)
    return torch.log(u) < _nan_to_neg_inf(log_ratio)


def acceptance_probability(log_ratio: Tensor) -> Tensor:
    """``min(1, exp(log_ratio))`` with NaN as 0, shape ``(batch,)``."""
    return torch.exp(_nan_to_neg_inf(log_ratio).clamp(max=0.0))


def random_walk_step(
    x: Tensor, step_size: StepSize, noise: Tensor | None = None, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Gaussian random-walk proposal ``x' = x + σ η``; returns ``(x', η)``."""
    eta = _noise(noise, x, generator)
    return x + _column(step_size, x) * eta, eta


def overdamped_langevin_step(
    x: Tensor,
    force: Tensor,
    step_size: StepSize,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Euler–Maruyama step of ``dx = F dt + √2 dW``: ``x' = x + ε F(x) + √(2ε) η``; returns ``(x', η)``.

    ``force`` is ``F(x)`` at the current ``x``. As a MALA proposal see :func:`langevin_log_transition`
    (Roberts & Tweedie 1996); the noise of the reverse move ``x' -> x`` is :func:`langevin_noise`
    ``(x, x', F(x'))``, and ``½(|η|² - |η̃|²)`` is the path entropy of a stochastic flow (Wu, Köhler, Noé 2020).
    """
    eta = _noise(noise, x, generator)
    eps = _column(step_size, x)
    return x + eps * force + _sqrt(2.0 * eps) * eta, eta


def langevin_noise(x_to: Tensor, x_from: Tensor, force_from: Tensor, step_size: StepSize) -> Tensor:
    """The noise ``η = (x_to - x_from - ε F(x_from)) / √(2ε)`` that moves ``x_from`` to ``x_to`` in one
    :func:`overdamped_langevin_step`; with ``(x, x', F(x'))`` it is the backward noise ``η̃`` of the move ``x -> x'``.
    """
    eps = _column(step_size, x_to)
    return (x_to - x_from - eps * force_from) / _sqrt(2.0 * eps)


def langevin_log_transition(x_to: Tensor, x_from: Tensor, force_from: Tensor, step_size: StepSize) -> Tensor:
    """``log q(x_to | x_from)`` of the overdamped Langevin proposal, up to a constant that cancels in ratios.

    ``q(x'|x) = N(x'; x + ε F(x), 2ε I)`` so ``log q = -|x' - x - ε F(x)|² / (4ε)`` ``= -½|η|²`` with η of
    :func:`langevin_noise`; shape ``(batch,)``.
    """
    eps = _column(step_size, x_to)
    r = x_to - x_from - eps * force_from
    return -((r**2) / (4.0 * eps)).sum(-1)


def leapfrog(
    x: Tensor,
    p: Tensor,
    force: Tensor,
    force_fn: Callable[[Tensor], Tensor],
    step_size: StepSize,
    n_steps: int,
    mass: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """``n_steps`` velocity-Verlet steps of ``H = u(x) + |p|²/(2m)``; returns ``(x, p, F(x))`` at the end.

    Volume preserving and reversible (Duane et al. 1987; Neal 2011, MCMC using Hamiltonian dynamics). ``force`` is
    ``F(x)`` at the start; ``force_fn`` is called ``n_steps`` times.
    """
    eps = _column(step_size, x)
    for _ in range(n_steps):
        p = p + 0.5 * eps * force
        x = x + eps * p / mass
        force = force_fn(x)
        p = p + 0.5 * eps * force
    return x, p, force


def baoab_step(
    x: Tensor,
    v: Tensor,
    force: Tensor,
    force_fn: Callable[[Tensor], Tensor],
    step_size: StepSize,
    mass: float = 1.0,
    friction: float = 1.0,
    temperature: float = 1.0,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One BAOAB step of underdamped Langevin dynamics ``m dv = F dt - γ m v dt + √(2 γ m T) dW``.

    B: ``v += Δt F / (2m)``; A: ``x += Δt v / 2``; O: ``v = e^{-γΔt} v + √((1 - e^{-2γΔt}) T / m) η``;
    A: ``x += Δt v / 2``; B: ``v += Δt F(x') / (2m)`` (Leimkuhler & Matthews, AMRX 2013). Reduced units: ``T`` is
    relative to the energy's kT, friction ``γ`` in inverse time. ``force`` is ``F(x)``; ``force_fn`` is called once.
    Returns ``(x', v', F(x'), η)``.
    """
    dt = _column(step_size, x)
    eta = _noise(noise, x, generator)
    v = v + 0.5 * dt * force / mass
    x = x + 0.5 * dt * v
    c1 = torch.exp(-friction * dt) if isinstance(dt, Tensor) else math.exp(-friction * dt)
    c2 = _sqrt((1.0 - c1**2) * temperature / mass)
    v = c1 * v + c2 * eta
    x = x + 0.5 * dt * v
    force = force_fn(x)
    v = v + 0.5 * dt * force / mass
    return x, v, force, eta
