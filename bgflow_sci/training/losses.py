"""Training objectives for flows and Boltzmann generators, as zero-argument callables for :class:`Trainer`.

Each loss draws its own minibatch with the global torch RNG (so checkpoints that store RNG states
resume exactly) and returns a scalar tensor.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_batch
from ..distributions import Distribution
from ..energies import Energy
from ..reweighting.weights import ess_tensor


def linlog_cut(u: Tensor, cutoff: float) -> Tensor:
    """Energies above ``cutoff`` grow only logarithmically: ``c + log(1 + u - c)`` (finite gradients for clashes)."""
    return torch.where(u > cutoff, cutoff + torch.log1p(torch.clamp(u - cutoff, min=0.0)), u)


class MaximumLikelihood:
    """Forward KL / maximum likelihood on data: ``E_data[-log q(x)]`` (nats per sample).

    Args:
        model: any Distribution (a ``BoltzmannGenerator`` or a density flow).
        data: ``(n, dim)`` training samples (MD frames, exact samples).
        batch_size: minibatch size, drawn with replacement.
        context: optional ``(n, context_dim)`` conditioning aligned with ``data``.
    """

    def __init__(self, model: Distribution, data: Tensor, batch_size: int = 256, context: Tensor | None = None):
        check_batch(data, model.dim, "data")
        if len(data) == 0:
            raise ValueError("maximum likelihood needs at least one data sample")
        if not torch.isfinite(data).all():
            raise ValueError(f"training data contain {int((~torch.isfinite(data)).any(-1).sum())} non-finite rows")
        self.model, self.data, self.batch_size, self.context = model, data, batch_size, context

    def __call__(self) -> Tensor:
        idx = torch.randint(len(self.data), (self.batch_size,), device=self.data.device)
        ctx = None if self.context is None else self.context[idx]
        return -self.model.log_prob(self.data[idx], ctx).mean()


class ReverseKL:
    """Energy-based training (reverse KL up to ``log Z``): ``E_{x~q}[u(x) + log q(x)]``.

    Samples with non-finite energy are left out of the batch mean (their number is kept in
    ``n_dropped``); ``energy_cutoff`` applies :func:`linlog_cut` to tame clashes.  :meth:`log_values` reports
    the Kish ESS fraction of the last batch's importance weights ``log w = -u(x) - log q(x)`` (uncut energies,
    non-finite ones weigh zero), which the :class:`~bgflow_sci.training.Trainer` logs as ``<name>/ess``.
    ``target`` replaces the generator's target in the loss (e.g. a
    :class:`~bgflow_sci.energies.BiasedEnergy`); the logged ESS is then against that target.
    """

    def __init__(
        self,
        bg,
        batch_size: int = 256,
        energy_cutoff: float | None = None,
        context: Tensor | None = None,
        target: Energy | None = None,
    ):
        if bg.target is None and target is None:
            raise ValueError("ReverseKL needs a BoltzmannGenerator with a target energy (or target=...)")
        self.bg, self.batch_size, self.energy_cutoff, self.context = bg, batch_size, energy_cutoff, context
        self.target = target if target is not None else bg.target
        self.n_dropped = 0
        self.last_log_weights: Tensor | None = None

    def __call__(self) -> Tensor:
        ctx = None
        if self.context is not None:
            ctx = self.context[torch.randint(len(self.context), (self.batch_size,), device=self.context.device)]
        x, log_q = self.bg.sample_with_log_prob(self.batch_size, ctx)
        u = self.target.energy(x)
        log_w = -(u + log_q).detach()
        self.last_log_weights = torch.where(torch.isfinite(log_w), log_w, torch.full_like(log_w, -torch.inf))
        if self.energy_cutoff is not None:
            u = linlog_cut(u, self.energy_cutoff)
        terms = u + log_q
        ok = torch.isfinite(terms)
        if not bool(ok.all()):
            self.n_dropped += int((~ok).sum())
            terms = terms[ok]
        return terms.mean()

    def log_values(self) -> dict[str, Tensor]:
        """``{"ess": Kish ESS / n}`` of the last batch (a 0-d tensor; no host synchronisation)."""
        lw = self.last_log_weights
        if lw is None or lw.numel() == 0:
            return {}
        return {"ess": ess_tensor(lw)}


class ForceMatching:
    """Force matching (Köhler, Krämer, Noé, NeurIPS 2021): ``E_data |∇ₓ log q(x) - F_ref(x)|²``.

    ``∇ₓ log q = -∇ₓ(-log q)`` is the model's force in units of kT per length unit; ``forces_kT`` are the
    reference forces already divided by kT (``F / kT``).  The squared norm is summed over coordinates and
    averaged over the minibatch.  The parameter gradient differentiates through ``∇ₓ log q``
    (``create_graph``), so every layer of the flow's inverse must be twice differentiable — e.g. smooth flows
    (:class:`~bgflow_sci.flows.smooth.SmoothMixture`), not piecewise splines, whose forces jump at knots.

    Args:
        model: a density model with ``log_prob(x, context)`` and ``dim`` (e.g. a ``BoltzmannGenerator``).
        positions: ``(n, dim)`` configurations.
        forces_kT: ``(n, dim)`` reference forces divided by kT.
        batch_size: minibatch size, drawn with replacement; ``None`` uses every sample in order.
        context: optional ``(n, context_dim)`` conditioning aligned with ``positions``.
    """

    def __init__(
        self,
        model: Distribution,
        positions: Tensor,
        forces_kT: Tensor,
        batch_size: int | None = 256,
        context: Tensor | None = None,
    ):
        check_batch(positions, model.dim, "positions")
        check_batch(forces_kT, model.dim, "forces_kT")
        if len(positions) == 0 or len(forces_kT) != len(positions):
            raise ValueError(
                f"positions and forces_kT must hold the same positive number of rows, got "
                f"{len(positions)} and {len(forces_kT)}"
            )
        if not (torch.isfinite(positions).all() and torch.isfinite(forces_kT).all()):
            raise ValueError("positions and forces_kT must be finite")
        if context is not None and len(context) != len(positions):
            raise ValueError(f"context must have {len(positions)} rows, got {len(context)}")
        self.model, self.positions, self.forces, self.batch_size = model, positions, forces_kT, batch_size
        self.context = context

    def __call__(self) -> Tensor:
        if self.batch_size is None:
            x, f_ref, ctx = self.positions, self.forces, self.context
        else:
            idx = torch.randint(len(self.positions), (self.batch_size,), device=self.positions.device)
            x, f_ref = self.positions[idx], self.forces[idx]
            ctx = None if self.context is None else self.context[idx]
        x = x.detach().clone().requires_grad_(True)
        log_q = self.model.log_prob(x, ctx)
        (model_force,) = torch.autograd.grad(log_q.sum(), x, create_graph=True)
        return (model_force - f_ref).pow(2).sum(-1).mean()
