"""Stochastic flow layers (Wu, Köhler, Noé, "Stochastic Normalizing Flows", NeurIPS 2020).

A stochastic block moves ``y -> y'`` by a Markov kernel and reports the path entropy
``ΔS = log q_b(y' -> y) - log q_f(y -> y')`` in place of a log-determinant. For deterministic layers
``ΔS = log|det J|``, so a :class:`~bgflow_sci.BoltzmannGenerator` whose flow mixes both kinds returns the
exact path importance weights ``log w = u_Z(z) - u_X(x) + Σ ΔS`` with no change to its code.

Direction: the kernels are reversible, so ``inverse`` runs the same kernel from its input and reports the
entropy of the sampled move with the same formula (for a deterministic layer that is ``-log|det J|``).
``log_prob`` of a flow with stochastic layers is therefore a one-path stochastic estimate (the SNF
maximum-likelihood bound).  Noise is reparametrised, so gradients reach the deterministic layers.

Each block acts on an energy, typically the interpolated energy
:class:`~bgflow_sci.energies.InterpolatedEnergy` ``u_λ(x) = (1 - λ) u_prior(x) + λ u_target(x)`` (the one that the
annealing samplers of :mod:`bgflow_sci.samplers` use too); anything :func:`~bgflow_sci.energies.as_energy` accepts
(an Energy, a Distribution, ``prior.energy``, a function) is wrapped into an Energy, whose
:meth:`~bgflow_sci.energies.Energy.energy_and_force` gives the forces. The single-step updates are the pure functions
of :mod:`bgflow_sci.integrators`, shared with the MCMC kernels.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import check_batch
from ..energies.base import Energy, EnergyLike, as_energy
from ..integrators import langevin_noise, metropolis_accept, overdamped_langevin_step, random_walk_step
from .base import Flow


def _needs_graph(x: Tensor) -> bool:
    return x.requires_grad and torch.is_grad_enabled()


class OverdampedLangevinBlock(Flow):
    """``n_steps`` unadjusted overdamped Langevin steps on ``u_λ`` with step ``ε`` (a stochastic flow layer).

    ``y' = y + ε F(y) + sqrt(2ε) η`` with ``F = -∇u``; backward noise ``η̃ = (y - y' - ε F(y')) / sqrt(2ε)``;
    ``ΔS = ½(|η|² - |η̃|²)`` per step, summed.  Moves to a non-finite position, energy, force or ``ΔS`` are
    rejected (``ΔS = 0`` for them). ``energy``: anything :func:`~bgflow_sci.energies.as_energy` accepts, of
    dimension ``dim``. (The MCMC kernel of the same dynamics is :class:`bgflow_sci.samplers.OverdampedLangevin`.)
    """

    def __init__(self, energy: Energy | EnergyLike, dim: int, step_size: float = 0.01, n_steps: int = 1):
        super().__init__()
        if step_size <= 0 or n_steps < 1:
            raise ValueError("step_size must be positive and n_steps >= 1")
        self.energy, self.dim = as_energy(energy, dim), dim
        self.step_size, self.n_steps = float(step_size), int(n_steps)

    def _run(self, y: Tensor) -> tuple[Tensor, Tensor]:
        check_batch(y, self.dim)
        eps, graph = self.step_size, _needs_graph(y)
        delta_s = y.new_zeros(y.shape[0])
        _, force = self.energy.energy_and_force(y, graph)
        for _ in range(self.n_steps):
            y_new, eta = overdamped_langevin_step(y, force, eps, noise=torch.randn_like(y))
            u_new, force_new = self.energy.energy_and_force(y_new, graph)
            eta_back = langevin_noise(y, y_new, force_new, eps)
            ds = 0.5 * ((eta**2).sum(-1) - (eta_back**2).sum(-1))
            ok = torch.isfinite(y_new).all(-1) & torch.isfinite(u_new) & torch.isfinite(force_new).all(-1)
            ok = ok & torch.isfinite(ds)
            y = torch.where(ok[:, None], y_new, y)
            force = torch.where(ok[:, None], force_new, force)
            delta_s = delta_s + torch.where(ok, ds, torch.zeros_like(ds))
        return y, delta_s

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._run(x)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._run(y)


class MetropolisMC(Flow):
    """``n_steps`` random-walk Metropolis steps on ``u_λ`` (Gaussian proposals of width ``step_size``).

    The kernel is reversible with respect to ``exp(-u_λ)``, so ``ΔS = u_λ(y_end) - u_λ(y_start)``. ``energy``:
    anything :func:`~bgflow_sci.energies.as_energy` accepts, of dimension ``dim``.
    """

    def __init__(self, energy: Energy | EnergyLike, dim: int, step_size: float = 0.25, n_steps: int = 20):
        super().__init__()
        if step_size <= 0 or n_steps < 1:
            raise ValueError("step_size must be positive and n_steps >= 1")
        self.energy, self.dim = as_energy(energy, dim), dim
        self.step_size, self.n_steps = float(step_size), int(n_steps)
        self.last_acceptance = math.nan

    def _run(self, y: Tensor) -> tuple[Tensor, Tensor]:
        check_batch(y, self.dim)
        u = self.energy.energy(y)
        u_start, accepted = u, y.new_zeros(y.shape[0])
        for _ in range(self.n_steps):
            proposal, _ = random_walk_step(y, self.step_size)
            u_prop = self.energy.energy(proposal)
            accept = metropolis_accept((u - u_prop).detach())
            y = torch.where(accept[:, None], proposal, y)
            u = torch.where(accept, u_prop, u)
            accepted = accepted + accept.to(y.dtype)
        if y.shape[0]:
            self.last_acceptance = float(accepted.mean()) / self.n_steps
        return y, u - u_start

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._run(x)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._run(y)


class UnderdampedLangevinBlock(Flow):
    """Underdamped Langevin steps on phase space ``(q, v)`` (flat ``(batch, 2 d)``: positions then velocities).

    The integrator and its path entropy follow Wu et al. 2020 (METHODS.md): with ``γ_m = γ m``,
    ``v_h = v + Δt/(2m) (F(q) - γ_m v + sqrt(4 γ_m kT/Δt) w₁)``, ``q' = q + Δt v_h``,
    ``v' = (v_h + Δt/(2m) (F(q') + sqrt(4 γ_m kT/Δt) w₂)) / (1 + γΔt/2)``; backward noises
    ``w₁' = w₂ - c v'``, ``w₂' = w₁ - c v`` with ``c = sqrt(γ_m Δt / kT)``; ``ΔS = ½(w₁² + w₂² - w₁'² - w₂'²)``.
    ``F = -kT ∇u_λ`` with ``u_λ`` the reduced energy of the positions (``kT = 1`` unless given).  Prior and target
    must carry the kinetic term ``½ m |v|² / kT`` (see :class:`~bgflow_sci.energies.PhaseSpaceEnergy`).  ``dim`` is
    the position dimension ``d`` (that of ``energy``, anything :func:`~bgflow_sci.energies.as_energy` accepts); the
    layer's own ``dim`` is the phase-space dimension ``2 d``. Moves to a non-finite state, energy or ``ΔS`` are
    rejected. (The MCMC kernel of underdamped dynamics is :class:`bgflow_sci.samplers.UnderdampedLangevin`.)
    """

    def __init__(
        self,
        energy: Energy | EnergyLike,
        dim: int,
        step_size: float = 0.01,
        n_steps: int = 1,
        friction: float = 1.0,
        mass: float = 1.0,
        kT: float = 1.0,
    ):
        super().__init__()
        if min(step_size, friction, mass, kT) <= 0 or n_steps < 1:
            raise ValueError("step_size, friction, mass and kT must be positive and n_steps >= 1")
        self.energy, self.dim, self.position_dim, self.n_steps = as_energy(energy, dim), 2 * dim, dim, int(n_steps)
        self.dt, self.gamma, self.mass, self.kT = float(step_size), float(friction), float(mass), float(kT)

    def _run(self, state: Tensor) -> tuple[Tensor, Tensor]:
        check_batch(state, self.dim)
        d, dt, m, gamma, kT = self.position_dim, self.dt, self.mass, self.gamma, self.kT
        gm = gamma * m
        noise_scale, c = math.sqrt(4 * gm * kT / dt), math.sqrt(gm * dt / kT)
        q, v = state[:, :d], state[:, d:]
        graph = _needs_graph(state)
        _, f = self.energy.energy_and_force(q, graph)
        force = kT * f
        delta_s = state.new_zeros(state.shape[0])
        for _ in range(self.n_steps):
            w1, w2 = torch.randn_like(q), torch.randn_like(q)
            v_half = v + dt / (2 * m) * (force - gm * v + noise_scale * w1)
            q_new = q + dt * v_half
            u_new, f_new = self.energy.energy_and_force(q_new, graph)
            force_new = kT * f_new
            v_new = (v_half + dt / (2 * m) * (force_new + noise_scale * w2)) / (1 + gamma * dt / 2)
            w1_back, w2_back = w2 - c * v_new, w1 - c * v
            ds = 0.5 * ((w1**2 + w2**2 - w1_back**2 - w2_back**2).sum(-1))
            ok = torch.isfinite(q_new).all(-1) & torch.isfinite(v_new).all(-1) & torch.isfinite(u_new)
            ok = ok & torch.isfinite(ds)
            q, v = torch.where(ok[:, None], q_new, q), torch.where(ok[:, None], v_new, v)
            force = torch.where(ok[:, None], force_new, force)
            delta_s = delta_s + torch.where(ok, ds, torch.zeros_like(ds))
        return torch.cat([q, v], -1), delta_s

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._run(x)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._run(y)


class PositionsOnly(Flow):
    """Apply a flow on the positions ``q`` of a phase-space vector ``(q, v)`` and leave velocities alone."""

    def __init__(self, flow: Flow, dim: int):
        super().__init__()
        self.flow, self.dim, self.context_dim = flow, 2 * dim, getattr(flow, "context_dim", 0)
        self.position_dim = dim

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_batch(x, self.dim)
        q, ld = self.flow(x[:, : self.position_dim], context)
        return torch.cat([q, x[:, self.position_dim :]], -1), ld

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_batch(y, self.dim)
        q, ld = self.flow.inverse(y[:, : self.position_dim], context)
        return torch.cat([q, y[:, self.position_dim :]], -1), ld
