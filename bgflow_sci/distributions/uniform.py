"""Uniform distribution on an axis-aligned box."""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_batch
from .base import Distribution


class UniformBox(Distribution):
    """Uniform density on ``[low, high]^dim`` (per-dimension bounds); ``log_prob = -inf`` outside."""

    def __init__(self, low: float | Tensor, high: float | Tensor, dim: int | None = None):
        super().__init__()
        low_t = torch.as_tensor(low, dtype=torch.get_default_dtype())
        high_t = torch.as_tensor(high, dtype=torch.get_default_dtype())
        if dim is not None:
            low_t, high_t = low_t.expand(dim).clone(), high_t.expand(dim).clone()
        if low_t.dim() != 1 or low_t.shape != high_t.shape:
            raise ValueError("low and high must be 1D tensors of equal length, or scalars with dim given")
        if not (high_t > low_t).all():
            raise ValueError("every upper bound must exceed its lower bound")
        self.dim = low_t.shape[0]
        self.register_buffer("low", low_t)
        self.register_buffer("high", high_t)

    def sample(self, n: int, context: Tensor | None = None) -> Tensor:
        """``(n, dim)`` uniform draws in the box."""
        u = torch.rand(n, self.dim, dtype=self.low.dtype, device=self.low.device)
        return self.low + (self.high - self.low) * u

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``(batch,)``: ``-log(volume)`` inside the box (bounds included), ``-inf`` outside."""
        check_batch(x, self.dim)
        inside = ((x >= self.low) & (x <= self.high)).all(-1)
        log_volume = torch.log(self.high - self.low).sum()
        return torch.where(inside, -log_volume, torch.full_like(log_volume, -torch.inf)).to(x.dtype)
