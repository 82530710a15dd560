"""The interpolated energy ``u_λ = (1 - λ) u_start + λ u_end``: the geometric path between two densities.

One implementation serves the stochastic flow layers (:mod:`bgflow_sci.flows.stochastic`, one ``λ`` per block) and
the annealing samplers (:class:`~bgflow_sci.samplers.InterpolatedPotential`, AIS with ``λ = β``), which keep the two
components of each chain and re-mix them with :meth:`InterpolatedEnergy.combine` when ``β`` changes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_batch, finite_rows
from .base import Energy, EnergyLike, as_energy, infer_dim


def _check_lambda(lam: float, name: str) -> float:
    lam = float(lam)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {lam}")
    return lam


def _analytic(energy: Energy) -> bool:
    """Whether ``energy`` overrides the autograd :meth:`Energy.energy_and_force` (analytic or mixed forces)."""
    return type(energy).energy_and_force is not Energy.energy_and_force


class InterpolatedEnergy(Energy):
    """``u_λ(x) = (1 - λ) u_start(x) + λ u_end(x)`` (kT), i.e. the density ``p_start^{1-λ} p_end^λ`` (unnormalised).

    ``start`` and ``end`` are anything :func:`~bgflow_sci.energies.as_energy` accepts: Energies, Distributions (used
    through ``-log p``), bound methods such as ``prior.energy``, or functions ``x -> (batch,)``; ``dim`` is needed only
    when neither declares one. Typically ``start`` is a normalised prior and ``end`` the target (Wu, Köhler, Noé 2020,
    stochastic normalizing flows; Neal 2001, annealed importance sampling).

    A switched-off term does not count: at ``λ = 0`` the energy and force are those of ``start`` alone (``end`` is not
    evaluated), at ``λ = 1`` those of ``end``, even where the other component would be infinite. In between, forces
    are mixed like the energies, ``F_λ = (1 - λ) F_start + λ F_end``, using a component's analytic forces where it has
    them; a NaN mixture (``+inf`` against ``-inf``) is ``+inf`` and rows of non-finite ``u_λ`` get zero force.
    """

    def __init__(self, start: Energy | EnergyLike, end: Energy | EnergyLike, lam: float = 0.0, dim: int | None = None):
        lam = _check_lambda(lam, "lambda")
        if dim is None:
            dim = infer_dim(start) or infer_dim(end)
        if dim is None:
            raise ValueError("neither start nor end declares its dimension: pass dim")
        start_energy, end_energy = as_energy(start, dim), as_energy(end, dim)
        super().__init__(dim)
        self.start, self.end, self.lam = start_energy, end_energy, lam

    def set_lambda(self, lam: float, name: str = "lambda") -> None:
        """Move along the path to ``lam`` in ``[0, 1]`` (``ValueError`` naming ``name`` otherwise)."""
        self.lam = _check_lambda(lam, name)

    def combine(self, u_start: Tensor, u_end: Tensor) -> Tensor:
        """``(1 - λ) u_start + λ u_end`` from precomputed components (energies or forces, any equal shapes).

        At ``λ = 0`` this is ``u_start`` and at ``λ = 1`` ``u_end`` exactly, even where the other is infinite.
        """
        lam = self.lam
        if lam == 0.0:
            return u_start + torch.zeros_like(u_end)
        if lam == 1.0:
            return torch.zeros_like(u_start) + u_end
        return (1.0 - lam) * u_start + lam * u_end

    def components(self, x: Tensor, need_force: bool = True) -> tuple[Tensor, Tensor | None]:
        """Both components at every ``λ``: energies ``(batch, 2)`` (start, end) and, with ``need_force``, forces
        ``(batch, 2, dim)``, in the dtype of ``x`` (each from its component's :meth:`~Energy.energy_and_force`)."""
        check_batch(x, self.dim)
        if not need_force:
            return torch.stack([self.start.energy(x).to(x.dtype), self.end.energy(x).to(x.dtype)], dim=-1), None
        (u0, f0), (u1, f1) = self.start.energy_and_force(x), self.end.energy_and_force(x)
        u = torch.stack([u0.to(x.dtype), u1.to(x.dtype)], dim=-1)
        return u, torch.stack([f0.to(x.dtype), f1.to(x.dtype)], dim=1)

    def energy(self, x: Tensor) -> Tensor:
        """``u_λ`` ``(batch,)`` in kT; ``+inf`` for invalid rows.

        The components validate ``x`` themselves (their invalid rows are ``+inf``), so the mixture adds no second
        validation of ``x`` (nor a node in the autograd graph); a NaN mixture (``+inf`` against ``-inf``) is ``+inf``.
        """
        check_batch(x, self.dim)
        if self.lam == 0.0:
            u = self.start.energy(x)
        elif self.lam == 1.0:
            u = self.end.energy(x)
        else:
            u = self.combine(self.start.energy(x), self.end.energy(x))
        nan = torch.isnan(u)
        self._count_invalid(~finite_rows(x) | nan)
        return torch.where(nan, torch.full_like(u, torch.inf), u)

    def energy_and_force(self, x: Tensor, create_graph: bool = False) -> tuple[Tensor, Tensor]:
        """``u_λ`` ``(batch,)`` and ``F_λ = (1 - λ) F_start + λ F_end`` ``(batch, dim)``; ``create_graph`` as in
        :meth:`Energy.energy_and_force`.

        When a component has its own (analytic) :meth:`~Energy.energy_and_force`, the component forces are mixed;
        when both rely on autograd, one autograd pass through ``u_λ`` gives the same force with one backward pass.
        """
        check_batch(x, self.dim)
        if self.lam not in (0.0, 1.0) and not (_analytic(self.start) or _analytic(self.end)):
            return super().energy_and_force(x, create_graph)  # one autograd pass through the mixture
        self._count_invalid(~finite_rows(x))
        if self.lam == 0.0:
            return self.start.energy_and_force(x, create_graph)
        if self.lam == 1.0:
            return self.end.energy_and_force(x, create_graph)
        (u0, f0), (u1, f1) = self.start.energy_and_force(x, create_graph), self.end.energy_and_force(x, create_graph)
        u = self.combine(u0, u1)
        nan = torch.isnan(u)
        self._count_invalid(nan)
        u = torch.where(nan, torch.full_like(u, torch.inf), u)
        force = self.combine(f0, f1)
        return u, torch.where(torch.isfinite(u)[:, None], force, torch.zeros_like(force))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, lam={self.lam}"
