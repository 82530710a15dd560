"""Product of independent distributions over consecutive blocks of coordinates."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_batch
from .base import Distribution


class Joint(Distribution):
    """``p(x) = Π_k p_k(x_k)`` where ``x = [x_1, x_2, ...]`` concatenates the blocks (e.g. positions, velocities)."""

    def __init__(self, *parts: Distribution):
        super().__init__()
        if not parts:
            raise ValueError("Joint needs at least one distribution")
        self.parts = nn.ModuleList(parts)
        self.sizes = [p.dim for p in parts]
        self.dim = sum(self.sizes)

    def sample(self, n: int, context: Tensor | None = None) -> Tensor:
        """``(n, dim)``: independent draws of every block, concatenated in order."""
        return torch.cat([p.sample(n) for p in self.parts], dim=-1)

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``(batch,)``: the sum of the blocks' log densities."""
        check_batch(x, self.dim)
        blocks = x.split(self.sizes, dim=-1)
        return torch.stack([p.log_prob(b) for p, b in zip(self.parts, blocks)]).sum(0)
