"""Activation normalisation (Glow; Kingma & Dhariwal, NeurIPS 2018): elementwise ``y = x * exp(s) + b``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_batch
from .base import Flow


def _all_ranks(y: Tensor) -> Tensor:
    """``y`` of every rank concatenated in rank order (``y`` itself without a process group of several ranks)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return y
    sizes = [None] * dist.get_world_size()
    dist.all_gather_object(sizes, y.shape[0])
    parts = [y.new_empty((n, *y.shape[1:])) for n in sizes]
    if len(set(sizes)) == 1:
        dist.all_gather(parts, y.contiguous())
    else:  # unequal local batches: pad to the largest
        full = y.new_zeros((max(sizes), *y.shape[1:]))
        full[: y.shape[0]] = y
        padded = [torch.empty_like(full) for _ in sizes]
        dist.all_gather(padded, full)
        parts = [p[:n] for p, n in zip(padded, sizes)]
    return torch.cat(parts)


class ActNorm(Flow):
    """Elementwise affine layer with data-dependent initialisation.

    The first ``inverse`` call in training mode (data -> latent, as in maximum-likelihood training) sets
    ``b`` and ``s`` to the batch mean and log standard deviation, so the latent side starts standardised.
    ``initialize(y)`` does the same explicitly.  ``log|det dy/dx| = sum(s)`` for every sample.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.shift = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.register_buffer("initialized", torch.tensor(False))
        self._ready = False  # True once ``initialized`` is known to be set: then no device synchronisation per call

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: D105
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._ready = bool(self.initialized)

    @torch.no_grad()
    def initialize(self, y: Tensor) -> None:
        """Set ``b, s`` so that ``inverse(y)`` has zero mean and unit variance per dimension.

        In distributed training (a process group of several ranks is running) ``y`` is every rank's batch in rank
        order -- the global batch of :mod:`~bgflow_sci.training.distributed` -- so all ranks start alike (a
        collective: every rank must call it)."""
        check_batch(y, self.dim)
        y = _all_ranks(y)
        if y.shape[0] < 2:
            raise ValueError("ActNorm data-dependent initialisation needs a batch of at least 2 samples")
        self.shift.copy_(y.mean(0))
        self.log_scale.copy_(torch.log(y.std(0) + self.eps))
        self.initialized.fill_(True)
        self._ready = True

    def mark_initialized(self) -> None:
        """Keep ``b, s`` as they are (set by hand): no data-dependent initialisation on the first call."""
        self.initialized.fill_(True)
        self._ready = True

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_batch(x, self.dim)
        y = x * torch.exp(self.log_scale) + self.shift
        return y, self.log_scale.sum().expand(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_batch(y, self.dim)
        if self.training and not self._ready:  # one host synchronisation until it is known to be initialised
            if bool(self.initialized):
                self._ready = True
            elif y.shape[0] > 1:
                self.initialize(y)
        x = (y - self.shift) * torch.exp(-self.log_scale)
        return x, (-self.log_scale.sum()).expand(y.shape[0])
