"""Flow MCMC: a normalising flow (or any normalised proposal) as a global move, exact for any proposal quality.

* :class:`IndependentMetropolis` — independent Metropolis–Hastings (Tierney 1994) with proposals ``x' ~ q``:
  accept with ``min(1, w(x') / w(x))``, ``log w = -u - log q``.
* :class:`ISIR` — iterated sampling-importance-resampling (Andrieu, Lee & Vihola, Bernoulli 2018): keep the current
  state, draw ``N - 1`` proposals, move to one of the ``N`` chosen with probability ``∝ w``.
* :class:`GlobalLocal` — alternate a global flow move with local MALA/HMC steps (Samsonov et al., NeurIPS 2022;
  Gabrié, Rotskoff & Vanden-Eijnden, PNAS 2022).
* :class:`LatentEnergy` — NeuTra (Hoffman et al. 2019): sample the pulled-back target
  ``π_Z(z) ∝ exp(-u(f(z))) |det ∂f/∂z|`` with any kernel in the flow's latent space, then map with ``x = f(z)``.

All chains are rows of one batch. The proposal is a :class:`~bgflow_sci.distributions.Distribution` with
``sample_with_log_prob`` and ``log_prob`` (a :class:`~bgflow_sci.BoltzmannGenerator`, a prior, ...); its draws are
made reproducible by seeding a forked global RNG from the kernel's generator, so checkpoints resume bit for bit.
``log q`` of the current states is cached in :attr:`ChainState.log_q` and recomputed after local moves.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..energies.base import Energy
from .base import MCMCKernel, MetropolisKernel
from .state import ChainState


def _log_weight(energy: Tensor, log_q: Tensor) -> Tensor:
    """``log w = -u - log q``; NaN (and ``+inf``) become ``-inf`` (a zero weight)."""
    lw = -energy - log_q
    return torch.where(torch.isnan(lw) | torch.isposinf(lw), -torch.inf, lw)


def _check_proposal(proposal, dim: int) -> None:
    for name in ("sample_with_log_prob", "log_prob"):
        if not callable(getattr(proposal, name, None)):
            raise TypeError(f"a flow proposal needs {name}(), got {type(proposal).__name__}")
    pdim = getattr(proposal, "dim", dim)
    if pdim != dim:
        raise ValueError(f"the proposal has dim {pdim} but the target has dim {dim}")


def draw_proposals(proposal, n: int, like: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """``n`` proposals ``(n, dim)`` and their ``log q`` ``(n,)`` in the dtype/device of ``like``, without a graph.

    Distributions draw from the global torch RNG; with a ``generator`` the draw happens in a forked global RNG seeded
    from it, so that the result depends on the generator only and the global RNG is left untouched.
    """
    with torch.no_grad():
        if generator is None:
            x, log_q = proposal.sample_with_log_prob(n)
        else:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
            devices = [like.device] if like.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                x, log_q = proposal.sample_with_log_prob(n)
    return x.to(like), log_q.to(like)


class _FlowKernel:
    """Shared by the flow kernels: the proposal and the cached ``log q`` of the current states."""

    proposal: object

    def _log_q(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.proposal.log_prob(x.to(_dtype_of(self.proposal, x))).to(x)

    def _ensure_log_q(self, state: ChainState) -> ChainState:
        if state.log_q is None:
            state.log_q = self._log_q(state.x)  # a cache: filled in place
        return state

    def _init_extra(self, state: ChainState, generator: torch.Generator | None) -> ChainState:
        return self._ensure_log_q(state)


def _dtype_of(module, like: Tensor) -> torch.dtype:
    ref = getattr(module, "_reference", None)
    return ref.dtype if isinstance(ref, Tensor) and ref.is_floating_point() else like.dtype


class IndependentMetropolis(_FlowKernel, MetropolisKernel):
    """Independent Metropolis–Hastings: ``x' ~ q``, accept with ``min(1, exp(log w(x') - log w(x)))``.

    ``log w = -u - log q`` (Tierney, Ann. Stat. 1994). Exact for any proposal whose support covers the target; the
    acceptance rate measures the proposal's quality (all moves are accepted when ``q ∝ exp(-u)``). ``needs_force``:
    evaluate forces of proposals too (set by :class:`GlobalLocal` when a gradient-based local kernel follows).
    """

    needs_force = False

    def __init__(self, target, proposal, needs_force: bool = False):
        super().__init__(target, 1.0, adapt=False)
        _check_proposal(proposal, self.dim)
        self.proposal, self.needs_force = proposal, bool(needs_force)

    def _propose(self, state: ChainState, generator: torch.Generator | None) -> tuple[ChainState, Tensor]:
        self._ensure_log_q(state)
        x_new, log_q_new = draw_proposals(self.proposal, state.n, state.x, generator)
        proposal = self.potential.evaluate(x_new, need_force=self.needs_force)
        proposal.log_q = log_q_new
        return proposal, _log_weight(proposal.energy, log_q_new) - _log_weight(state.energy, state.log_q)


class ISIR(_FlowKernel, MCMCKernel):
    """Iterated sampling-importance-resampling with ``n_proposals`` fresh draws per chain and step.

    Candidates: the current state ``x_0`` and ``x_1..x_{N-1} ~ q``; the next state is ``x_k`` with probability
    ``w_k / Σ_j w_j`` (Andrieu, Lee & Vihola 2018). Reversible with respect to ``exp(-u)``; ``N = 2`` is Barker's
    version of independent MH. The acceptance is the fraction of steps that left the current state.
    """

    adjusted = True
    needs_force = False

    def __init__(self, target, proposal, n_proposals: int = 10, needs_force: bool = False):
        super().__init__(target, 1.0)
        _check_proposal(proposal, self.dim)
        if int(n_proposals) != n_proposals or n_proposals < 1:
            raise ValueError(f"n_proposals must be a positive integer, got {n_proposals}")
        self.proposal, self.n_proposals, self.needs_force = proposal, int(n_proposals), bool(needs_force)
        self.last_accept_prob: Tensor | None = None

    def _step(self, state: ChainState, generator: torch.Generator | None) -> ChainState:
        self._ensure_log_q(state)
        n, m = state.n, self.n_proposals
        x_new, log_q_new = draw_proposals(self.proposal, n * m, state.x, generator)
        candidates = self.potential.evaluate(x_new, need_force=self.needs_force)
        candidates.log_q = log_q_new
        self.n_invalid += (~candidates.valid()).view(n, m).sum(1)
        lw = torch.cat(
            [_log_weight(state.energy, state.log_q)[:, None], _log_weight(candidates.energy, log_q_new).view(n, m)], 1
        )
        probs = torch.softmax(lw, dim=1)
        k = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        moved = k > 0
        chosen = candidates.index(torch.arange(n, device=k.device) * m + (k - 1).clamp(min=0))
        self.n_accepted += moved
        self.last_accept_prob = 1.0 - probs[:, 0]
        return state.where(moved, chosen)


class GlobalLocal(MCMCKernel):
    """Each step: one global move (``global_kernel``, e.g. :class:`IndependentMetropolis` or :class:`ISIR`), then
    ``n_local`` steps of a local Metropolis-adjusted kernel (``MALA``, ``HMC``) on the same target.

    Both kernels leave ``exp(-u)`` invariant, so their composition does (Samsonov et al. 2022; Gabrié et al. 2022):
    the flow jumps between modes, the local kernel corrects within them where the flow is poor. Diagnostics report
    the global ``acceptance`` and the ``local_acceptance``; warm-up adapts the local step sizes only. Local kernels
    with velocities (underdamped Langevin) are not supported.
    """

    adjusted = True

    def __init__(self, global_kernel: MCMCKernel, local_kernel: MCMCKernel, n_local: int = 1):
        if not isinstance(global_kernel, _FlowKernel) or not isinstance(local_kernel, MetropolisKernel):
            raise ValueError("GlobalLocal needs a flow kernel (IndependentMetropolis, ISIR) and a MetropolisKernel")
        if global_kernel.dim != local_kernel.dim:
            raise ValueError(f"kernels act on dims {global_kernel.dim} and {local_kernel.dim}")
        if int(n_local) != n_local or n_local < 0:
            raise ValueError(f"n_local must be a non-negative integer, got {n_local}")
        self.global_kernel, self.local_kernel, self.n_local = global_kernel, local_kernel, int(n_local)
        self.potential, self.dim = local_kernel.potential, local_kernel.dim
        self.needs_force = local_kernel.needs_force
        global_kernel.needs_force = global_kernel.needs_force or local_kernel.needs_force
        self.step_size: Tensor | None = None
        self.n_steps = 0
        self.n_proposed = 0

    def init_state(self, x: Tensor, generator: torch.Generator | None = None) -> ChainState:
        state = self.local_kernel.init_state(x, generator)
        state.log_q = self.global_kernel.init_state(x, generator).log_q
        self.step_size = self.local_kernel.step_size
        self.n_proposed = 0
        return state

    def step(self, state: ChainState, generator: torch.Generator | None = None) -> ChainState:
        state = self.global_kernel.step(state, generator)
        for _ in range(self.n_local):
            state = self.local_kernel.step(state, generator)
        self.step_size = self.local_kernel.step_size
        self.n_steps += 1
        self.n_proposed += 1
        return state

    @property
    def n_invalid(self) -> Tensor:
        return self.global_kernel.n_invalid + self.local_kernel.n_invalid

    @property
    def n_reset(self) -> Tensor:
        return self.global_kernel.n_reset + self.local_kernel.n_reset

    @property
    def n_accepted(self) -> Tensor:
        return self.global_kernel.n_accepted

    def reset_statistics(self, n: int | None = None, device: torch.device | None = None) -> None:
        self.global_kernel.reset_statistics(n, device)
        self.local_kernel.reset_statistics(n, device)
        self.n_proposed = 0

    def start_adaptation(self) -> None:
        self.local_kernel.start_adaptation()

    def stop_adaptation(self) -> None:
        self.local_kernel.stop_adaptation()
        self.step_size = self.local_kernel.step_size

    def acceptance(self) -> Tensor | None:
        return self.global_kernel.acceptance()

    def diagnostics(self) -> dict:
        g, loc = self.global_kernel.diagnostics(), self.local_kernel.diagnostics()
        return {
            "acceptance": g["acceptance"],
            "mean_acceptance": g["mean_acceptance"],
            "local_acceptance": loc["acceptance"],
            "mean_local_acceptance": loc["mean_acceptance"],
            "step_size": loc["step_size"],
            "n_invalid": self.n_invalid,
            "n_reset": self.n_reset,
        }

    def state_dict(self) -> dict:
        return {
            "global": self.global_kernel.state_dict(),
            "local": self.local_kernel.state_dict(),
            "n_steps": self.n_steps,
            "n_proposed": self.n_proposed,
        }

    def load_state_dict(self, d: dict) -> None:
        self.global_kernel.load_state_dict(d["global"])
        self.local_kernel.load_state_dict(d["local"])
        self.step_size = self.local_kernel.step_size
        self.n_steps, self.n_proposed = int(d["n_steps"]), int(d["n_proposed"])


class LatentEnergy(Energy):
    """NeuTra's pulled-back target in the flow's latent space: ``u_Z(z) = u(f(z)) - log|det ∂f/∂z|`` (kT).

    ``exp(-u_Z)`` is the density of ``z = f⁻¹(x)`` for ``x ~ exp(-u)`` (unnormalised, same ``Z``), so any kernel run
    on ``u_Z`` samples the target after :meth:`push_forward`; a good flow makes ``u_Z`` nearly a standard normal,
    which local kernels mix fast in (Hoffman et al., "NeuTra-lizing bad geometry in HMC", 2019). ``flow``: a
    deterministic :class:`~bgflow_sci.flows.Flow` (latent -> sample, returning ``(x, log|det ∂f/∂z|)``) or a
    :class:`~bgflow_sci.BoltzmannGenerator` (its flow, and its target unless ``target`` is given). Forces by the
    autograd default of :meth:`Energy.energy_and_force <bgflow_sci.energies.Energy.energy_and_force>`.
    """

    def __init__(self, flow, target=None):
        if target is None:
            target = getattr(flow, "target", None)
        flow = getattr(flow, "flow", flow)
        if target is None or not hasattr(target, "energy"):
            raise ValueError("LatentEnergy needs a target energy (or a BoltzmannGenerator with one)")
        super().__init__(int(target.dim))
        self.flow, self.target = flow, target

    def _energy(self, z: Tensor) -> Tensor:
        x, logdet = self.flow(z)
        return self.target.energy(x) - logdet

    def push_forward(self, z: Tensor) -> Tensor:
        """``x = f(z)`` for ``z`` of shape ``(..., dim)`` (e.g. a sampler's ``(n_saved, n_chains, dim)``), no graph."""
        with torch.no_grad():
            x, _ = self.flow(z.reshape(-1, self.dim))
        return x.reshape(*z.shape[:-1], x.shape[-1])

    def pull_back(self, x: Tensor) -> Tensor:
        """``z = f⁻¹(x)`` for ``x`` of shape ``(..., dim)`` (starting points in latent space), no graph."""
        with torch.no_grad():
            z, _ = self.flow.inverse(x.reshape(-1, self.dim))
        return z.reshape(*x.shape[:-1], z.shape[-1])
