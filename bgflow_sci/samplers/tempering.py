"""Parallel tempering (replica exchange) over a temperature ladder, as one kernel on ``n_replicas · n_chains`` rows."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..integrators import metropolis_accept
from .base import MCMCKernel
from .kernels import MALA
from .potentials import Potential, TemperedPotential, as_potential
from .state import ChainState


def check_temperatures(temperatures) -> Tensor:
    """A float64 ladder ``T_0 < T_1 < ... < T_{K-1}``, all positive and finite, ``K ≥ 2``; else ``ValueError``."""
    t = torch.as_tensor(temperatures, dtype=torch.float64).flatten()
    if t.numel() < 2:
        raise ValueError(f"a temperature ladder needs at least 2 temperatures, got {t.tolist()}")
    if not bool(torch.isfinite(t).all()) or not bool((t > 0).all()):
        raise ValueError(f"temperatures must be positive and finite, got {t.tolist()}")
    if not bool((t[1:] > t[:-1]).all()):
        raise ValueError(f"temperatures must be strictly increasing, got {t.tolist()}")
    return t


def geometric_ladder(t_min: float, t_max: float, n: int) -> Tensor:
    """``n`` temperatures spaced geometrically from ``t_min`` to ``t_max`` (float64)."""
    return check_temperatures(torch.logspace(math.log10(t_min), math.log10(t_max), n, dtype=torch.float64))


class ParallelTempering(MCMCKernel):
    """Replica exchange (Swendsen & Wang 1986; Geyer 1991) of ``u(x)/T_k`` over ``temperatures`` (reduced units).

    Rows are replica-major: row ``k · n_chains + c`` is chain ``c`` at temperature ``T_k``; each of the ``n_chains``
    columns is an independent ensemble. Every ``swap_every`` steps of the local ``kernel`` (a kernel class called as
    ``kernel(potential, step_size)``, e.g. ``MALA``, or a factory ``potential -> kernel`` such as
    ``lambda p: HMC(p, 0.1, n_leapfrog=5)``; its per-row step sizes adapt per temperature), configurations of
    neighbours ``(k, k+1)`` are exchanged with probability
    ``min(1, exp((1/T_k - 1/T_{k+1}) (u_k - u_{k+1})))``, alternating even and odd pairs (the deterministic
    even–odd scheme, Syed et al. JRSS-B 2022). Reported: swap acceptance per pair and round trips (a walker going
    from the lowest to the highest temperature and back).
    """

    def __init__(
        self,
        energy,
        temperatures,
        kernel: Callable[[Potential], MCMCKernel] = MALA,
        step_size: float | Tensor | None = None,
        swap_every: int = 1,
    ):
        self.energy_potential = as_potential(energy)
        self.temperatures = check_temperatures(temperatures)
        if int(swap_every) < 1:
            raise ValueError(f"swap_every must be a positive integer, got {swap_every}")
        self.swap_every = int(swap_every)
        if step_size is None and isinstance(kernel, type):
            raise ValueError(f"give step_size for kernel={kernel.__name__} (or pass a factory potential -> kernel)")
        self.kernel_factory = kernel
        self._kernel_step_size = step_size
        self.base: MCMCKernel | None = None
        self.dim = self.energy_potential.dim
        self.n_steps = 0
        self.n_swap_rounds = 0
        self.adjusted = True

    @property
    def n_replicas(self) -> int:
        return self.temperatures.numel()

    def init_state(self, x: Tensor, generator: torch.Generator | None = None) -> ChainState:
        """``x``: ``(n_replicas · n_chains, dim)``, replica-major (e.g. ``x.repeat(n_replicas, 1)``)."""
        if x.dim() != 2 or x.shape[0] % self.n_replicas:
            raise ValueError(
                f"x must have shape (n_replicas * n_chains, {self.dim}) with n_replicas = {self.n_replicas}, "
                f"got {tuple(x.shape)}"
            )
        self.n_chains = x.shape[0] // self.n_replicas
        row_t = self.temperatures.to(device=x.device, dtype=x.dtype).repeat_interleave(self.n_chains)
        potential = TemperedPotential(self.energy_potential, row_t)
        if self._kernel_step_size is None:
            self.base = self.kernel_factory(potential)
        else:
            self.base = self.kernel_factory(potential, self._kernel_step_size)
        state = self.base.init_state(x, generator)
        self.step_size = self.base.step_size
        self.reset_statistics(x.shape[0], x.device)
        k, c = self.n_replicas, self.n_chains
        self.walker = torch.arange(k * c, device=x.device)  # walker id sitting in each row
        # direction of each walker: 0 = last extreme visited was the bottom, 1 = the top, -1 = neither yet
        self.direction = torch.full((k * c,), -1, dtype=torch.long, device=x.device)
        self.direction[:c] = 0
        self.round_trips = torch.zeros(k * c, dtype=torch.long, device=x.device)
        return state

    def reset_statistics(self, n: int | None = None, device: torch.device | None = None) -> None:
        if self.base is None:
            return
        self.base.reset_statistics(n, device)
        self.swap_attempts = torch.zeros(self.n_replicas - 1, dtype=torch.long, device=self.base.n_accepted.device)
        self.swap_accepts = torch.zeros_like(self.swap_attempts)

    def step(self, state: ChainState, generator: torch.Generator | None = None) -> ChainState:
        state = self.base.step(state, generator)
        self.n_steps += 1
        if self.n_steps % self.swap_every == 0:
            state = self._swap(state, self.n_swap_rounds % 2, generator)
            self.n_swap_rounds += 1
        return state

    def _swap(self, state: ChainState, parity: int, generator: torch.Generator | None) -> ChainState:
        k, c = self.n_replicas, self.n_chains
        lo = torch.arange(parity, k - 1, 2, device=state.x.device)
        if lo.numel() == 0:
            return state
        u = state.aux[0].view(k, c)
        beta = (1.0 / self.temperatures).to(u)
        log_ratio = (beta[lo] - beta[lo + 1])[:, None] * (u[lo] - u[lo + 1])
        accept = metropolis_accept(log_ratio, generator)  # (n_pairs, c)
        rows = torch.arange(k * c, device=state.x.device).view(k, c)
        perm = rows.clone()
        perm[lo] = torch.where(accept, rows[lo + 1], rows[lo])
        perm[lo + 1] = torch.where(accept, rows[lo], rows[lo + 1])
        perm = perm.flatten()
        self.swap_attempts[lo] += c
        self.swap_accepts[lo] += accept.sum(1)
        state = self.base.potential.rescale(state.index(perm))
        self.walker = self.walker[perm]
        self._count_round_trips()
        return state

    def _count_round_trips(self) -> None:
        c = self.n_chains
        bottom, top = self.walker[:c], self.walker[-c:]
        self.round_trips[bottom] += (self.direction[bottom] == 1).long()
        self.direction[bottom] = 0
        self.direction[top] = torch.where(self.direction[top] == 0, 1, self.direction[top])

    # ---- reporting -----------------------------------------------------------------------------------------------
    def acceptance(self) -> Tensor | None:
        return self.base.acceptance()

    @property
    def n_invalid(self) -> Tensor:
        return self.base.n_invalid

    @property
    def n_reset(self) -> Tensor:
        return self.base.n_reset

    def swap_acceptance(self) -> Tensor:
        """Fraction of accepted exchanges for each neighbour pair ``(T_k, T_{k+1})``, shape ``(n_replicas - 1,)``."""
        return self.swap_accepts.double() / self.swap_attempts.clamp(min=1).double()

    def diagnostics(self) -> dict:
        d = self.base.diagnostics()
        d.update(
            temperatures=self.temperatures,
            swap_acceptance=self.swap_acceptance(),
            round_trips=int(self.round_trips.sum()),
            round_trips_per_walker=self.round_trips.clone(),
        )
        return d

    def replicas(self, samples: Tensor) -> Tensor:
        """View a trajectory ``(n_saved, n_replicas · n_chains, ...)`` as ``(n_saved, n_replicas, n_chains, ...)``."""
        return samples.view(samples.shape[0], self.n_replicas, self.n_chains, *samples.shape[2:])

    def start_adaptation(self) -> None:
        self.base.start_adaptation()

    def stop_adaptation(self) -> None:
        self.base.stop_adaptation()
        self.step_size = self.base.step_size

    # ---- checkpoints ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "base": self.base.state_dict(),
            "n_steps": self.n_steps,
            "n_swap_rounds": self.n_swap_rounds,
            "swap_attempts": self.swap_attempts,
            "swap_accepts": self.swap_accepts,
            "walker": self.walker,
            "direction": self.direction,
            "round_trips": self.round_trips,
        }

    def load_state_dict(self, d: dict) -> None:
        self.base.load_state_dict(d["base"])
        self.step_size = self.base.step_size
        self.n_steps, self.n_swap_rounds = int(d["n_steps"]), int(d["n_swap_rounds"])
        self.swap_attempts, self.swap_accepts = d["swap_attempts"], d["swap_accepts"]
        self.walker, self.direction, self.round_trips = d["walker"], d["direction"], d["round_trips"]
