"""Training objectives for flows and Boltzmann generators, as zero-argument callables for :class:`Trainer`.

Each loss draws its own minibatch with the global torch RNG (so checkpoints that store RNG states
resume exactly) and returns a scalar tensor.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_batch
from ..distributions import Distribution


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
    ``n_dropped``); ``energy_cutoff`` applies :func:`linlog_cut` to tame clashes.
    """

    def __init__(
        self,
        bg,
        batch_size: int = 256,
        energy_cutoff: float | None = None,
        context: Tensor | None = None,
    ):
        if bg.target is None:
            raise ValueError("ReverseKL needs a BoltzmannGenerator with a target energy")
        self.bg, self.batch_size, self.energy_cutoff, self.context = bg, batch_size, energy_cutoff, context
        self.n_dropped = 0

    def __call__(self) -> Tensor:
        ctx = None
        if self.context is not None:
            ctx = self.context[torch.randint(len(self.context), (self.batch_size,), device=self.context.device)]
        x, log_q = self.bg.sample_with_log_prob(self.batch_size, ctx)
        u = self.bg.target.energy(x)
        if self.energy_cutoff is not None:
            u = linlog_cut(u, self.energy_cutoff)
        terms = u + log_q
        ok = torch.isfinite(terms)
        if not bool(ok.all()):
            self.n_dropped += int((~ok).sum())
            terms = terms[ok]
        return terms.mean()
