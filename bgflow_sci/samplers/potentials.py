"""What a kernel samples: a reduced energy with its force, evaluated once per proposal and cached in the state.

Any :class:`~bgflow_sci.energies.Energy` — or anything :func:`~bgflow_sci.energies.as_energy` makes one of, such as
a normalised :class:`~bgflow_sci.distributions.Distribution`, whose ``energy`` is ``-log p`` — is wrapped as an
:class:`EnergyPotential`, which takes energies and forces from :meth:`~bgflow_sci.energies.Energy.energy_and_force`.
Two parametrised potentials serve the ensemble samplers: :class:`TemperedPotential` (``u(x) / T_row``, parallel
tempering) and :class:`InterpolatedPotential` (``u_β = (1-β) u_0 + β u_1``, annealing, on the one
:class:`~bgflow_sci.energies.InterpolatedEnergy`). Both keep their unscaled components in ``ChainState.aux`` so that a
change of temperature or ``β`` needs no new energy evaluation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_batch
from ..energies.base import Energy, as_energy
from ..energies.interpolated import InterpolatedEnergy
from .state import ChainState


def _finite_force(force: Tensor) -> Tensor:
    """Non-finite force entries (a singular gradient at a finite energy) become 0.

    The drift of a proposal then stays a finite, deterministic function of the position, which is all that a
    Metropolis-adjusted kernel needs to stay exact; rows of invalid energy already have zero force.
    """
    return torch.where(torch.isfinite(force), force, torch.zeros_like(force))


class Potential:
    """A kernel's target: ``evaluate(x, need_force) -> ChainState`` with ``energy`` in kT and cached ``force``."""

    dim: int

    def evaluate(self, x: Tensor, need_force: bool = True) -> ChainState:
        raise NotImplementedError


class EnergyPotential(Potential):
    """Sample ``exp(-u(x))`` for an energy (anything :func:`~bgflow_sci.energies.as_energy` accepts).

    Energies ``(batch,)`` are ``+inf`` for invalid rows; forces come from ``energy.energy_and_force`` (analytic where
    the energy has it, one autograd pass otherwise) as constants, with non-finite entries set to zero.
    """

    def __init__(self, energy):
        self.energy: Energy = as_energy(energy)
        self.dim = self.energy.dim

    def evaluate(self, x: Tensor, need_force: bool = True) -> ChainState:
        check_batch(x, self.dim)
        if not need_force:
            with torch.no_grad():
                return ChainState(x=x, energy=self.energy.energy(x))
        u, f = self.energy.energy_and_force(x)
        return ChainState(x=x, energy=u, force=_finite_force(f))


def as_potential(target) -> Potential:
    """Pass a :class:`Potential` through; wrap anything else as an :class:`EnergyPotential` (``TypeError`` or
    ``ValueError`` from :func:`~bgflow_sci.energies.as_energy` when it is not energy-like)."""
    return target if isinstance(target, Potential) else EnergyPotential(target)


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
    Annealed importance sampling); both are anything :func:`~bgflow_sci.energies.as_energy` accepts. The path is
    :class:`~bgflow_sci.energies.InterpolatedEnergy` (``self.path``, with ``λ = β``), the energy of the stochastic
    flow layers too, which mixes energies and forces. ``aux = (u (n, 2), forces (n, 2, dim))`` holds the two
    components, so that :meth:`set_beta` re-evaluates a state at a new ``β`` for free and :meth:`components` gives
    ``u_1 - u_0``.
    """

    def __init__(self, start, end, beta: float = 0.0):
        self.path = InterpolatedEnergy(start, end, 0.0)
        self.path.set_lambda(float(beta), "beta")
        self.dim = self.path.dim

    @property
    def start(self) -> Energy:
        return self.path.start

    @property
    def end(self) -> Energy:
        return self.path.end

    @property
    def beta(self) -> float:
        return self.path.lam

    def evaluate(self, x: Tensor, need_force: bool = True) -> ChainState:
        u, f = self.path.components(x, need_force)
        aux = (u,) if f is None else (u, _finite_force(f))
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
