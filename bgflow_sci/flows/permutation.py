"""Fixed permutations of coordinates (volume preserving, log|det| = 0)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._checks import check_batch
from .base import Flow, zero_logdet


class Permutation(Flow):
    """``y[:, i] = x[:, perm[i]]``.  Without ``permutation`` a random one is drawn from ``seed``."""

    def __init__(self, dim: int, permutation: Sequence[int] | Tensor | None = None, seed: int = 0):
        super().__init__()
        if permutation is None:
            permutation = torch.randperm(dim, generator=torch.Generator().manual_seed(seed))
        perm = torch.as_tensor(permutation, dtype=torch.long)
        if perm.shape != (dim,) or not torch.equal(perm.sort().values, torch.arange(dim)):
            raise ValueError(f"permutation must be a permutation of range({dim}), got {perm.tolist()}")
        self.dim = dim
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", torch.argsort(perm))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_batch(x, self.dim)
        return x[:, self.perm], zero_logdet(x)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_batch(y, self.dim)
        return y[:, self.inverse_perm], zero_logdet(y)


class Swap(Permutation):
    """Exchange the first ``dim // 2`` and the remaining coordinates (pairs naturally with half masks)."""

    def __init__(self, dim: int):
        k = dim // 2
        super().__init__(dim, torch.cat([torch.arange(k, dim), torch.arange(k)]))
