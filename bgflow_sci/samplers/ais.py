"""Annealed importance sampling from a normalised prior to a target along the geometric path."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..reweighting import Estimate, ess, log_z
from .base import MetropolisKernel
from .kernels import MALA
from .potentials import InterpolatedPotential, Potential


class AISResult(NamedTuple):
    """``samples`` ``(n, dim)`` at ``β = 1``, ``log_weights`` ``(n,)`` (``log w``, with ``E[w] = Z_target``),
    ``log_z`` (:func:`bgflow_sci.reweighting.log_z` of the weights, bootstrap error), Kish ``ess`` fraction,
    mean ``acceptance`` and ``step_size`` of the transition at each ``β_t``, both ``(n_steps,)``."""

    samples: Tensor
    log_weights: Tensor
    log_z: Estimate
    ess: float
    acceptance: Tensor
    step_size: Tensor


def check_betas(betas) -> Tensor:
    """A float64 schedule ``0 = β_0 < β_1 < ... < β_T = 1``; else ``ValueError``."""
    b = torch.as_tensor(betas, dtype=torch.float64).flatten()
    if b.numel() < 2 or float(b[0]) != 0.0 or float(b[-1]) != 1.0 or not bool((b[1:] > b[:-1]).all()):
        raise ValueError("betas must increase strictly from 0 to 1 (at least two values)")
    return b


def default_betas(n_steps: int, beta_min: float = 1e-4) -> Tensor:
    """``0`` followed by ``n_steps`` values spaced geometrically from ``beta_min`` to ``1``."""
    if n_steps < 1:
        raise ValueError(f"n_steps must be positive, got {n_steps}")
    if n_steps == 1:
        return torch.tensor([0.0, 1.0], dtype=torch.float64)
    tail = torch.logspace(math.log10(beta_min), 0.0, n_steps, dtype=torch.float64)
    return check_betas(torch.cat([torch.zeros(1, dtype=torch.float64), tail]))


class AnnealedImportanceSampler:
    """AIS (Neal, Statistics and Computing 2001) on ``u_β = (1 - β) u_prior + β u_target``.

    ``x_0 ~ prior`` (normalised, so ``Z_0 = 1``); for ``t = 1..T``: ``log w += -(β_t - β_{t-1}) (u_target - u_prior)
    (x_{t-1})``, then ``n_inner`` transitions of a kernel leaving ``exp(-u_{β_t})`` invariant. ``E[w] = Z_target``,
    so ``log Z ≈ logsumexp(log w) - log n``. ``kernel``: a factory ``(potential, step_size) -> MetropolisKernel``
    (``MALA`` or ``HMC``, or e.g. ``lambda p, s: HMC(p, s, n_leapfrog=5)``). With ``adapt_step_size`` one global step
    size follows ``log ε += rate (mean acceptance - target)`` after every transition (the kernel at each ``β_t`` is
    still exact; its step size depends only on the past).
    """

    def __init__(
        self,
        target,
        prior,
        betas: Tensor | None = None,
        n_steps: int = 1000,
        kernel: Callable[[Potential, float], MetropolisKernel] = MALA,
        step_size: float = 0.1,
        n_inner: int = 1,
        adapt_step_size: bool = True,
        target_acceptance: float | None = None,
        adapt_rate: float = 0.1,
    ):
        self.betas = check_betas(betas) if betas is not None else default_betas(n_steps)
        if int(n_inner) < 1:
            raise ValueError(f"n_inner must be a positive integer, got {n_inner}")
        self.potential = InterpolatedPotential(prior, target)
        self.prior = prior
        self.kernel = kernel(self.potential, step_size)
        if not isinstance(self.kernel, MetropolisKernel):
            raise ValueError("AIS needs a Metropolis-adjusted kernel (MALA, HMC, RandomWalkMetropolis)")
        self.kernel.adaptation = None  # AIS adapts along the path, not by warm-up dual averaging
        self.n_inner, self.adapt, self.adapt_rate = int(n_inner), bool(adapt_step_size), float(adapt_rate)
        self.target_acceptance = target_acceptance or self.kernel.default_target_acceptance
        if not 0.0 < self.target_acceptance < 1.0:
            raise ValueError(f"target_acceptance must lie in (0, 1), got {self.target_acceptance}")

    def run(
        self,
        n: int,
        x0: Tensor | None = None,
        seed: int | None = None,
        progress: bool = True,
        n_bootstrap: int = 200,
        dtype: torch.dtype | None = None,
    ) -> AISResult:
        """Anneal ``n`` chains (``x0``: prior samples ``(n, dim)``, drawn from ``prior.sample(n)`` when ``None``)."""
        if x0 is None:
            x0 = self.prior.sample(n)
        if dtype is not None:
            x0 = x0.to(dtype)
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        gen = torch.Generator(device=x0.device).manual_seed(int(seed))
        kernel, pot, betas = self.kernel, self.potential, self.betas.tolist()
        pot.set_beta(0.0)
        state = kernel.init_state(x0, gen)
        log_w = torch.zeros(x0.shape[0], dtype=torch.float64, device=x0.device)
        n_t = len(betas) - 1
        acc = torch.zeros(n_t, dtype=torch.float64, device=x0.device)
        steps = torch.zeros(n_t, dtype=torch.float64, device=x0.device)
        for t in tqdm(range(1, n_t + 1), disable=not progress, desc="AIS", leave=False):
            u = pot.components(state).to(torch.float64)
            log_w = log_w - (betas[t] - betas[t - 1]) * (u[:, 1] - u[:, 0])
            state = pot.set_beta(betas[t], state)
            steps[t - 1] = kernel.step_size.mean()
            for _ in range(self.n_inner):
                state = kernel.step(state, gen)
                mean_acc = kernel.last_accept_prob.mean()
                acc[t - 1] += mean_acc / self.n_inner
                if self.adapt:
                    kernel.step_size = kernel.step_size * torch.exp(
                        self.adapt_rate * (mean_acc - self.target_acceptance)
                    )
        log_w = torch.where(torch.isnan(log_w), -torch.inf, log_w)
        return AISResult(
            samples=state.x,
            log_weights=log_w,
            log_z=log_z(log_w, n_bootstrap, torch.Generator(device=x0.device).manual_seed(int(seed) + 1)),
            ess=ess(log_w),
            acceptance=acc,
            step_size=steps,
        )
