"""Flow annealed importance sampling bootstrap (FAB; Midgley et al., ICLR 2023) with a prioritised replay buffer.

FAB trains a flow ``q_θ`` on the target ``p ∝ exp(-u)`` without samples of ``p``: annealed importance sampling
(AIS, :class:`~bgflow_sci.samplers.AnnealedImportanceSampler`, HMC transitions) runs from ``q`` towards
``g ∝ p^2 / q`` -- the α = 2 divergence's optimal proposal, which puts mass where ``q`` misses ``p`` -- and the flow
is fitted to the AIS samples by weighted maximum likelihood,

    L(θ) = -Σ_i w̄_i log q_θ(x_i),    w̄ = softmax(log w_AIS),    x_i, w_i without gradient,

which minimises ``D_2(p || q)`` up to a constant: mass-covering, unlike reverse KL.

**Replay buffer** (the paper's prioritised variant): every ``refresh_every`` steps an AIS batch enters a FIFO
buffer of ``buffer_size`` samples with its log weights and the ``log q`` it was drawn at; each step draws
``batch_size`` buffer entries with probability ``∝ w`` (with replacement) and minimises ``-mean log q_θ(x)`` on them,
then corrects their weights for the changed flow, ``log w ← log w + log q_old(x) - log q_θ(x)`` (``g`` depends on
``q``). Target energy evaluations are counted in :attr:`n_energy_evaluations` (each evaluated configuration once,
energies and forces together) and logged. The buffer and counters are part of the trainer's checkpoints
(:meth:`state_dict`), so a resumed FAB run continues exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..energies import Energy, as_energy

__all__ = ["FlowAnnealedBootstrap"]


class _Counted(Energy):
    """``energy`` of another energy, counting the configurations it is evaluated on."""

    def __init__(self, energy: Energy):
        super().__init__(energy.dim)
        self.inner = energy
        self.count = 0

    def _energy(self, x: Tensor) -> Tensor:
        self.count += x.shape[0]
        return self.inner.energy(x)

    def energy_and_force(self, x: Tensor, create_graph: bool = False) -> tuple[Tensor, Tensor]:
        self.count += x.shape[0]
        return self.inner.energy_and_force(x, create_graph)


class _AlphaTarget(Energy):
    """``u_g(x) = 2 u(x) + log q(x)``: the energy of ``g ∝ p^2 / q`` at the flow's current (frozen) parameters."""

    def __init__(self, target: Energy, flow_energy: Energy):
        super().__init__(target.dim)
        self.target, self.flow_energy = target, flow_energy

    def _energy(self, x: Tensor) -> Tensor:
        return 2.0 * self.target.energy(x) - self.flow_energy.energy(x)

    def energy_and_force(self, x: Tensor, create_graph: bool = False) -> tuple[Tensor, Tensor]:
        u, f = self.target.energy_and_force(x, create_graph)
        v, g = self.flow_energy.energy_and_force(x, create_graph)
        return 2.0 * u - v, 2.0 * f - g


class FlowAnnealedBootstrap:
    """FAB loss for :class:`~bgflow_sci.training.Trainer`: a zero-argument callable returning ``-mean log q``.

    Args:
        bg: a :class:`~bgflow_sci.BoltzmannGenerator` (``bg.target`` the energy in kT).
        batch_size: samples per loss evaluation (buffer draws, or AIS chains without a buffer).
        n_ais_steps: intermediate distributions from ``q`` to ``p^2/q`` (geometric schedule).
        n_leapfrog, step_size: of the HMC transition (step size adapted along the path to acceptance 0.65).
        buffer_size: replay-buffer capacity in samples (``0``: no buffer, every step runs AIS and uses its weights).
        refresh_every: steps between AIS batches entering the buffer (``ais_batch`` chains each, default
            ``batch_size``).
    """

    def __init__(
        self,
        bg,
        batch_size: int = 256,
        n_ais_steps: int = 8,
        n_leapfrog: int = 5,
        step_size: float = 0.1,
        buffer_size: int = 0,
        refresh_every: int = 4,
        ais_batch: int | None = None,
    ):
        if bg.target is None:
            raise ValueError("FAB needs a BoltzmannGenerator with a target energy")
        if buffer_size and buffer_size < batch_size:
            raise ValueError(f"buffer_size ({buffer_size}) must be 0 or at least batch_size ({batch_size})")
        self.bg, self.batch_size = bg, int(batch_size)
        self.n_ais_steps, self.n_leapfrog, self.step_size = int(n_ais_steps), int(n_leapfrog), float(step_size)
        self.buffer_size, self.refresh_every = int(buffer_size), int(refresh_every)
        self.ais_batch = int(ais_batch or batch_size)
        self.target = _Counted(as_energy(bg.target))
        self.calls = 0
        self.buffer: dict[str, Tensor] | None = None
        self.last_log_weights: Tensor | None = None

    @property
    def n_energy_evaluations(self) -> int:
        """Target-energy evaluations so far (configurations; energy and force count once)."""
        return self.target.count

    def _ais(self, n: int) -> tuple[Tensor, Tensor]:
        """``n`` AIS samples from ``q`` towards ``p^2/q`` and their log weights (no graph)."""
        from ..samplers import HMC, AnnealedImportanceSampler

        flow_energy = as_energy(self.bg)  # -log q at the current parameters (gradients only with respect to x)
        ais = AnnealedImportanceSampler(
            _AlphaTarget(self.target, flow_energy),
            self.bg,
            n_steps=self.n_ais_steps,
            kernel=lambda potential, eps: HMC(potential, eps, n_leapfrog=self.n_leapfrog),
            step_size=self.step_size,
        )
        with torch.no_grad():
            x0 = self.bg.sample(n)
        result = ais.run(n, x0=x0, seed=int(torch.randint(0, 2**62, ())), progress=False, n_bootstrap=0)
        return result.samples.detach(), result.log_weights.detach()

    def _refresh(self) -> None:
        x, log_w = self._ais(self.ais_batch)
        with torch.no_grad():
            log_q = self.bg.log_prob(x)
        new = {"x": x, "log_w": log_w.to(x.dtype), "log_q": log_q}
        if self.buffer is None:
            self.buffer = new
        else:
            self.buffer = {k: torch.cat([self.buffer[k], v])[-self.buffer_size :] for k, v in new.items()}

    def __call__(self) -> Tensor:
        self.calls += 1
        if not self.buffer_size:
            x, log_w = self._ais(self.batch_size)
            self.last_log_weights = log_w
            w = torch.softmax(torch.where(torch.isfinite(log_w), log_w, -torch.inf), 0).to(x.dtype)
            log_q = self.bg.log_prob(x)
            return -(w * torch.where(torch.isfinite(log_q), log_q, torch.zeros_like(log_q))).sum()
        if self.buffer is None or (self.calls - 1) % self.refresh_every == 0:
            self._refresh()
        b = self.buffer
        self.last_log_weights = b["log_w"]
        finite = torch.isfinite(b["log_w"])
        probs = torch.softmax(torch.where(finite, b["log_w"], -torch.inf), 0)
        idx = torch.multinomial(probs, self.batch_size, replacement=True)
        log_q = self.bg.log_prob(b["x"][idx])
        with torch.no_grad():  # the weights of the drawn entries follow the flow's change
            b["log_w"][idx] = b["log_w"][idx] + b["log_q"][idx] - log_q.detach()
            b["log_q"][idx] = log_q.detach()
        return -log_q.mean()

    def state_dict(self) -> dict:
        """The replay buffer, the call count and the evaluation count (checkpointed by the Trainer)."""
        buffer = {k: v.detach().cpu() for k, v in self.buffer.items()} if self.buffer is not None else None
        return {"buffer": buffer, "calls": self.calls, "energy_evaluations": self.target.count}

    def load_state_dict(self, state: dict) -> None:
        device = next((p.device for p in self.bg.parameters()), torch.device("cpu"))
        buffer = state.get("buffer")
        self.buffer = {k: v.to(device) for k, v in buffer.items()} if buffer is not None else None
        self.calls, self.target.count = int(state["calls"]), int(state["energy_evaluations"])

    def log_values(self) -> dict[str, Tensor]:
        """Kish ESS of the last AIS weights (or of the buffer's) and the energy evaluations so far."""
        from ..reweighting.weights import ess_tensor

        out = {"energy_evaluations": torch.tensor(float(self.n_energy_evaluations))}
        if self.last_log_weights is not None and self.last_log_weights.numel():
            out["ess"] = ess_tensor(self.last_log_weights)
        return out
