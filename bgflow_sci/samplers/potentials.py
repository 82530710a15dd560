"""What a kernel samples: a reduced energy with its force, evaluated once per proposal and cached in the state.

Any :class:`~bgflow_sci.energies.Energy` (or anything with ``energy(x) -> (batch,)``, such as a normalised
:class:`~bgflow_sci.distributions.Distribution`, whose ``energy`` is ``-log p``) is wrapped as a :class:`Potential`.
Two parametrised potentials serve the ensemble samplers: :class:`TemperedPotential` (``u(x) / T_row``, parallel
tempering) and :class:`InterpolatedPotential` (``u_β = (1-β) u_0 + β u_1``, annealing). Both keep their unscaled
components in ``ChainState.aux`` so that a change of temperature or ``β`` needs no new energy evaluation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_batch
from ..energies.base import Energy
from ..flows.stochastic import InterpolatedEnergy
from .state import ChainState


def _nan_to_inf(u: Tensor) -> Tensor:
    return torch.where(torch.isnan(u), torch.inf, u)


def energy_and_force(model, x: Tensor, need_force: bool = True) -> tuple[Tensor, Tensor | None]:
    """``u(x)`` ``(batch,)`` and ``-du/dx`` ``(batch, dim)`` in one pass; non-finite energies become ``+inf``.

    Uses ``model.energy_and_force`` when the model has one (e.g. OpenMM), an analytic ``force`` override of an
    :class:`Energy`, and otherwise one autograd pass through ``model.energy``. Rows with infinite energy get zero force.
    """
    if not need_force:
        with torch.no_grad():
            u = model.energy(x)
        return _nan_to_inf(u), None
    if hasattr(model, "energy_and_force"):
        u, f = model.energy_and_force(x)
    elif isinstance(model, Energy) and type(model).force is not Energy.force:
        with torch.no_grad():
            u = model.energy(x)
        f = model.force(x)
    else:
        with torch.enable_grad():
            x_ = x.detach().requires_grad_(True)
            u = model.energy(x_)
            ok = torch.isfinite(u)
            (grad,) = torch.autograd.grad(torch.where(ok, u, torch.zeros_like(u)).sum(), x_, allow_unused=True)
        f = -grad if grad is not None else torch.zeros_like(x)
    u = _nan_to_inf(u.detach())
    ok = torch.isfinite(u)[:, None] & torch.isfinite(f)
    return u, torch.where(ok, f.detach(), torch.zeros_like(f))


class Potential:
    """A kernel's target: ``evaluate(x, need_force) -> ChainState`` with ``energy`` in kT and cached ``force``."""

    dim: int

    def evaluate(self, x: Tensor, need_force: bool = True) -> ChainState:
        raise NotImplementedError


class EnergyPotential(Potential):
    """Sample ``exp(-u(x))`` for an energy (or anything with ``energy(x)``)."""

    def __init__(self, energy):
        self.model = energy
        self.dim = int(energy.dim)

    def evaluate(self, x: Tensor, need_force: bool = True) -> ChainState:
        check_batch(x, self.dim)
        u, f = energy_and_force(self.model, x, need_force)
        return ChainState(x=x, energy=u, force=f)


def as_potential(target) -> Potential:
    """Wrap an Energy (or Distribution) as a :class:`Potential`; pass potentials through."""
    if isinstance(target, Potential):
        return target
    if not hasattr(target, "energy") or not hasattr(target, "dim"):
        raise TypeError(f"a sampler target needs energy(x) and dim, got {type(target).__name__}")
    return EnergyPotential(target)


class TemperedPotential(Potential):
    """``u(x) / T_i`` with one temperature per row ``i`` (relative, reduced units); ``aux = (u, -du/dx)`` unscaled.

    ``temperatures``: ``(n_rows,)`` positive; every evaluated batch must have exactly ``n_rows`` rows.
    """

    def __init__(self, energy, temperatures: Tensor):
        self.base = as_potential(energy)
        self.dim = self.base.dim
        if temperatures.dim() != 1 or not bool((temperatures > 0).all()):
            raise ValueError("temperatures must be a positive 1D tensor (one per row)")
        self.temperatures = temperatures

    def evaluate(self, x: Tensor, need_force: bool = True) -> ChainState:
        if x.shape[0] != self.temperatures.shape[0]:
            raise ValueError(f"x must have shape ({self.temperatures.shape[0]}, {self.dim}), got {tuple(x.shape)}")
        raw = self.base.evaluate(x, need_force)
        aux = (raw.energy,) if raw.force is None else (raw.energy, raw.force)
        return self.rescale(ChainState(x=x, energy=raw.energy, force=raw.force, aux=aux))

    def rescale(self, state: ChainState) -> ChainState:
        """Recompute ``energy``/``force`` of each row from its unscaled ``aux`` and the row's temperature."""
        t = self.temperatures.to(state.energy)
        force = None if len(state.aux) < 2 else state.aux[1] / t[:, None]
        return ChainState(x=state.x, energy=state.aux[0] / t, force=force, v=state.v, aux=state.aux)


class InterpolatedPotential(Potential):
    """``u_β(x) = (1 - β) u_0(x) + β u_1(x)``, the geometric path ``p_0^{1-β} p_1^β`` between two densities.

    ``u_0`` is typically a normalised prior's ``-log q`` (a Distribution), ``u_1`` the target energy (Neal 2001,
    Annealed importance sampling). The path itself is the one of the stochastic flow layers,
    :class:`~bgflow_sci.flows.InterpolatedEnergy` (``self.path``, with ``λ = β``), which also mixes the forces.
    ``aux = (u (n, 2), forces (n, 2, dim))`` holds the two components, so that :meth:`set_beta` re-evaluates a state
    at a new ``β`` for free and :meth:`components` gives ``u_1 - u_0``.
    """

    def __init__(self, start, end, beta: float = 0.0):
        self.start, self.end = as_potential(start), as_potential(end)
        if self.start.dim != self.end.dim:
            raise ValueError(f"start and end must have the same dim, got {self.start.dim} and {self.end.dim}")
        self.dim = self.end.dim
        self.path = InterpolatedEnergy(self._start_energy, self._end_energy, 0.0)
        self.path.set_lambda(float(beta), "beta")

    def _start_energy(self, x: Tensor) -> Tensor:
        return self.start.evaluate(x, need_force=False).energy

    def _end_energy(self, x: Tensor) -> Tensor:
        return self.end.evaluate(x, need_force=False).energy

    @property
    def beta(self) -> float:
        return self.path.lam

    def evaluate(self, x: Tensor, need_force: bool = True) -> ChainState:
        s0, s1 = self.start.evaluate(x, need_force), self.end.evaluate(x, need_force)
        u = torch.stack([s0.energy.to(x.dtype), s1.energy.to(x.dtype)], dim=-1)
        aux = (u,) if not need_force else (u, torch.stack([s0.force.to(x.dtype), s1.force.to(x.dtype)], dim=1))
        return self._mix(ChainState(x=x, energy=u[:, 0], aux=aux))

    def _mix(self, state: ChainState) -> ChainState:
        u = state.aux[0]
        energy = self.path.combine(u[:, 0], u[:, 1])
        force = None
        if len(state.aux) > 1:
            f = state.aux[1]
            force = self.path.combine(f[:, 0], f[:, 1])
        return ChainState(x=state.x, energy=energy, force=force, v=state.v, aux=state.aux)

    def set_beta(self, beta: float, state: ChainState | None = None) -> ChainState | None:
        """Move along the path to ``beta`` in ``[0, 1]``; returns ``state`` re-evaluated there (no energy calls)."""
        self.path.set_lambda(beta, "beta")
        return None if state is None else self._mix(state)

    @staticmethod
    def components(state: ChainState) -> Tensor:
        """``(u_0, u_1)`` of each row, shape ``(n, 2)``."""
        return state.aux[0]
