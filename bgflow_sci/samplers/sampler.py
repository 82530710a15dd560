"""``Sampler``: run a kernel on many chains, save a thinned trajectory, report diagnostics, checkpoint and resume."""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .base import MCMCKernel
from .diagnostics import integrated_autocorrelation_time
from .state import ChainState


class SamplerRun(NamedTuple):
    """``samples`` ``(n_saved, n_chains, dim)``, ``energies`` ``(n_saved, n_chains)`` (the kernel's target, kT),
    and ``diagnostics`` (acceptance per chain and mean, step sizes, invalid/reset counts, IAT per coordinate, ...)."""

    samples: Tensor
    energies: Tensor
    diagnostics: dict


def _check_count(value: int, name: str, minimum: int) -> int:
    if int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def _clone(obj):
    """Copy every tensor of a nested state (kernels update some counters in place)."""
    if isinstance(obj, Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone(v) for v in obj)
    return obj


class Sampler:
    """Many chains of one :class:`MCMCKernel`, advanced together; chains are the rows of ``x0`` ``(n_chains, dim)``.

    Random numbers come from a private ``torch.Generator`` on ``x0``'s device seeded with ``seed`` (from the global
    torch RNG when ``None``); :meth:`state_dict` stores it with the chain state and the kernel (step sizes,
    adaptation, counters), so that ``load_state_dict`` followed by ``run`` continues bit for bit.

    Example::

        sampler = Sampler(MALA(energy, step_size=0.1), x0, seed=0)
        samples, energies, diag = sampler.run(1000, thin=10, burn_in=500)
    """

    def __init__(self, kernel: MCMCKernel, x0: Tensor, seed: int | None = None):
        self.kernel = kernel
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        self.generator = torch.Generator(device=x0.device).manual_seed(int(seed))
        self.state: ChainState = kernel.init_state(x0, self.generator)
        self.n_steps_done = 0

    @property
    def n_chains(self) -> int:
        return self.state.n

    def run(self, n_steps: int, thin: int = 1, burn_in: int = 0, progress: bool = True) -> SamplerRun:
        """``burn_in`` warm-up steps (step sizes adapt; discarded), then ``n_steps`` steps saving every ``thin``-th.

        Step-size adaptation runs during the first warm-up only and is frozen afterwards. Acceptance statistics
        cover the ``n_steps`` sampling steps. Warns (``RuntimeWarning``) if any chain produced non-finite energies.
        """
        n_steps = _check_count(n_steps, "n_steps", 0)
        thin = _check_count(thin, "thin", 1)
        burn_in = _check_count(burn_in, "burn_in", 0)
        kernel, gen = self.kernel, self.generator
        x = self.state.x
        n_saved = n_steps // thin
        samples = torch.empty((n_saved, *x.shape), dtype=x.dtype, device=x.device)
        energies = torch.empty((n_saved, x.shape[0]), dtype=self.state.energy.dtype, device=x.device)
        bar = tqdm(total=burn_in + n_steps, disable=not progress, desc=type(kernel).__name__, leave=False)
        if burn_in:
            kernel.start_adaptation()
            for _ in range(burn_in):
                self.state = kernel.step(self.state, gen)
                bar.update()
            kernel.stop_adaptation()
        warm_reset = kernel.n_reset.clone()  # rejected invalid proposals are expected while warm-up tries large steps
        kernel.reset_statistics()
        for i in range(n_steps):
            self.state = kernel.step(self.state, gen)
            if (i + 1) % thin == 0:
                samples[(i + 1) // thin - 1] = self.state.x
                energies[(i + 1) // thin - 1] = self.state.energy
            bar.update()
        bar.close()
        self.n_steps_done += burn_in + n_steps
        diag = kernel.diagnostics()
        diag["iat"] = integrated_autocorrelation_time(samples) if n_saved >= 2 else None
        diag["n_saved"] = n_saved
        self._warn_invalid(kernel.n_invalid, warm_reset + kernel.n_reset)
        return SamplerRun(samples, energies, diag)

    @staticmethod
    def _warn_invalid(n_invalid: Tensor, n_reset: Tensor) -> None:
        total_invalid, total_reset = int(n_invalid.sum()), int(n_reset.sum())
        if total_reset:
            rows = n_reset.nonzero().flatten()
            warnings.warn(
                f"{rows.numel()} chain(s) (e.g. {rows[:10].tolist()}) produced non-finite energies or positions "
                f"{total_reset} time(s) and were reset to their last valid state; the step size is probably too "
                "large for them",
                RuntimeWarning,
                stacklevel=3,
            )
        if total_invalid:
            rows = n_invalid.nonzero().flatten()
            warnings.warn(
                f"{total_invalid} proposal(s) of {rows.numel()} chain(s) (e.g. {rows[:10].tolist()}) had non-finite "
                "energies and were rejected; the step size may be too large",
                RuntimeWarning,
                stacklevel=3,
            )

    # ---- checkpoints ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Chain state, kernel state (step sizes, adaptation, counters), generator state and step count."""
        return _clone(
            {
                "state": self.state.state_dict(),
                "kernel": self.kernel.state_dict(),
                "generator": self.generator.get_state(),
                "n_steps_done": self.n_steps_done,
            }
        )

    def load_state_dict(self, d: dict) -> None:
        """Restore a :meth:`state_dict` (the sampler must wrap a kernel built with the same arguments)."""
        state = ChainState.from_state_dict(d["state"])
        if state.x.shape[1] != self.kernel.dim:
            raise ValueError(f"checkpoint chains have dim {state.x.shape[1]}, the kernel expects {self.kernel.dim}")
        self.state = state
        self.kernel.load_state_dict(d["kernel"])
        self.generator.set_state(d["generator"])
        self.n_steps_done = int(d["n_steps_done"])
