"""The one kernel abstraction: ``MCMCKernel.step(state) -> state`` on a batch of chains, with a NaN guard.

Chains are the rows of a batch. A kernel holds per-chain step sizes and statistics; it never owns random numbers:
every draw comes from the ``torch.Generator`` passed to :meth:`MCMCKernel.step`, so that a sampler that saves its
generator state resumes bit for bit. :class:`MetropolisKernel` adds the one accept/reject rule shared by RWM, MALA
and HMC, and dual-averaging step-size adaptation during warm-up.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import check_batch
from ..integrators import acceptance_probability, metropolis_accept
from .adaptation import DualAveraging
from .potentials import Potential, as_potential
from .state import ChainState


def check_step_size(step_size: float | Tensor, name: str = "step_size") -> float | Tensor:
    """Require positive finite step size(s): a float or a 1D tensor (one per chain); raise ``ValueError``."""
    if isinstance(step_size, Tensor):
        if step_size.dim() > 1:
            raise ValueError(f"{name} must be a scalar or a (n_chains,) tensor, got shape {tuple(step_size.shape)}")
        ok = bool(torch.isfinite(step_size).all() & (step_size > 0).all())
    else:
        step_size = float(step_size)
        ok = math.isfinite(step_size) and step_size > 0
    if not ok:
        raise ValueError(f"{name} must be positive and finite, got {step_size}")
    return step_size


class MCMCKernel:
    """A Markov kernel on ``n`` chains at once. Subclasses implement ``_step(state, generator) -> state``.

    ``target``: an :class:`~bgflow_sci.energies.Energy`, a Distribution (sampled through ``-log p``) or a
    :class:`~bgflow_sci.samplers.potentials.Potential`. ``step_size``: float or ``(n_chains,)`` tensor, fixed into
    a ``(n_chains,)`` tensor of the chains' dtype and device by :meth:`init_state`.

    :meth:`step` guards every chain: a row whose new energy, position or velocity is not finite (a step size that
    blew up) is put back to its last valid state and counted in ``n_reset``; other rows are untouched.
    """

    needs_force: bool = True
    adjusted: bool = False

    def __init__(self, target, step_size: float | Tensor):
        self.potential: Potential = as_potential(target)
        self.dim = self.potential.dim
        self._step_size_init = check_step_size(step_size)
        self.step_size: Tensor | None = None
        self.n_steps = 0
        self.reset_statistics(0)

    # ---- set-up --------------------------------------------------------------------------------------------------
    def init_state(self, x: Tensor, generator: torch.Generator | None = None) -> ChainState:
        """Evaluate the target at starting positions ``x`` ``(n_chains, dim)``; every row must have finite energy."""
        check_batch(x, self.dim)
        if not x.is_floating_point():
            raise ValueError(f"x must be a floating-point tensor, got {x.dtype}")
        with torch.no_grad():
            state = self.potential.evaluate(x.detach(), self.needs_force)
        bad = (~state.valid()).nonzero().flatten()
        if bad.numel():
            raise ValueError(f"starting positions of chains {bad[:10].tolist()} have non-finite energy")
        n = x.shape[0]
        s = self._step_size_init
        if isinstance(s, Tensor) and s.numel() not in (1, n):
            raise ValueError(f"step_size must be a scalar or have shape ({n},), got {tuple(s.shape)}")
        self.step_size = torch.as_tensor(s, dtype=x.dtype, device=x.device).expand(n).clone()
        self.reset_statistics(n, x.device)
        return self._init_extra(state, generator)

    def _init_extra(self, state: ChainState, generator: torch.Generator | None) -> ChainState:
        return state

    def reset_statistics(self, n: int | None = None, device: torch.device | None = None) -> None:
        """Zero the per-chain counters (accepted moves, invalid proposals, resets) and the proposal count."""
        if n is None:
            n, device = self.n_accepted.shape[0], self.n_accepted.device
        self.n_accepted = torch.zeros(n, dtype=torch.long, device=device)
        self.n_invalid = torch.zeros(n, dtype=torch.long, device=device)
        self.n_reset = torch.zeros(n, dtype=torch.long, device=device)
        self.n_proposed = 0

    # ---- stepping ------------------------------------------------------------------------------------------------
    def _step(self, state: ChainState, generator: torch.Generator | None) -> ChainState:
        raise NotImplementedError

    def step(self, state: ChainState, generator: torch.Generator | None = None) -> ChainState:
        """One transition of every chain; non-finite results are reset to ``state`` row by row."""
        with torch.no_grad():
            new = self._step(state, generator)
            bad = ~new.valid()
            self.n_reset += bad
        self.n_steps += 1
        self.n_proposed += 1
        return new.where(bad, state)

    def start_adaptation(self) -> None:
        """Enter warm-up (no-op for kernels without adaptation)."""

    def stop_adaptation(self) -> None:
        """Leave warm-up and freeze the step sizes (no-op for kernels without adaptation)."""

    # ---- reporting -----------------------------------------------------------------------------------------------
    def acceptance(self) -> Tensor | None:
        """Fraction of accepted proposals per chain since the last reset; ``None`` for unadjusted kernels."""
        if not self.adjusted:
            return None
        return self.n_accepted.to(self.step_size.dtype) / max(self.n_proposed, 1)

    def diagnostics(self) -> dict:
        """Per-chain statistics since the last reset, plus the current step sizes."""
        acc = self.acceptance()
        return {
            "acceptance": acc,
            "mean_acceptance": float(acc.mean()) if acc is not None and acc.numel() else math.nan,
            "step_size": self.step_size,
            "n_invalid": self.n_invalid.clone(),
            "n_reset": self.n_reset.clone(),
        }

    # ---- checkpoints ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "step_size": self.step_size,
            "n_steps": self.n_steps,
            "n_proposed": self.n_proposed,
            "n_accepted": self.n_accepted,
            "n_invalid": self.n_invalid,
            "n_reset": self.n_reset,
        }

    def load_state_dict(self, d: dict) -> None:
        self.step_size = d["step_size"]
        self.n_steps, self.n_proposed = int(d["n_steps"]), int(d["n_proposed"])
        self.n_accepted, self.n_invalid, self.n_reset = d["n_accepted"], d["n_invalid"], d["n_reset"]


class MetropolisKernel(MCMCKernel):
    """A kernel that proposes and accepts with :func:`~bgflow_sci.integrators.metropolis_accept`.

    Subclasses implement ``_propose(state, generator) -> (proposal, log_ratio)``. With ``adapt=True`` the step sizes
    follow :class:`DualAveraging` towards ``target_acceptance`` during warm-up (``per_chain`` or one global size)
    and are frozen afterwards; adaptation happens during the first warm-up only.
    """

    adjusted = True
    default_target_acceptance = 0.5

    def __init__(
        self,
        target,
        step_size: float | Tensor,
        adapt: bool = True,
        target_acceptance: float | None = None,
        per_chain: bool = True,
    ):
        super().__init__(target, step_size)
        acc = self.default_target_acceptance if target_acceptance is None else target_acceptance
        self.adaptation = DualAveraging(acc, per_chain=per_chain) if adapt else None
        self.adapting = False
        self.adapted = False
        self.last_accept_prob: Tensor | None = None

    def _propose(self, state: ChainState, generator: torch.Generator | None) -> tuple[ChainState, Tensor]:
        raise NotImplementedError

    def _step(self, state: ChainState, generator: torch.Generator | None) -> ChainState:
        proposal, log_ratio = self._propose(state, generator)
        self.n_invalid += ~proposal.valid()
        accept = metropolis_accept(log_ratio, generator)
        self.n_accepted += accept
        self.last_accept_prob = acceptance_probability(log_ratio)
        if self.adapting:
            self.step_size = self.adaptation.update(self.last_accept_prob)
        return state.where(accept, proposal)

    def start_adaptation(self) -> None:
        if self.adaptation is None or self.adapted:
            return
        if self.adaptation.t == 0:
            self.adaptation.start(self.step_size)
        self.adapting = True

    def stop_adaptation(self) -> None:
        if self.adapting:
            self.step_size = self.adaptation.final()
            self.adapting, self.adapted = False, True

    def state_dict(self) -> dict:
        d = super().state_dict()
        d.update(adapting=self.adapting, adapted=self.adapted)
        if self.adaptation is not None:
            d["adaptation"] = self.adaptation.state_dict()
        return d

    def load_state_dict(self, d: dict) -> None:
        super().load_state_dict(d)
        self.adapting, self.adapted = bool(d["adapting"]), bool(d["adapted"])
        if self.adaptation is not None and "adaptation" in d:
            self.adaptation.load_state_dict(d["adaptation"])
