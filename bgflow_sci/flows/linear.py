"""LU-parametrised invertible linear map (Kingma & Dhariwal, Glow, NeurIPS 2018; Durkan et al. 2019).

``y = W x + b`` with ``W = P L U``: ``P`` a fixed permutation, ``L`` unit lower triangular, ``U`` upper
triangular with diagonal ``exp(u)`` (so ``W`` is always invertible and orientation preserving).
``log|det dy/dx| = Σ u``; the inverse is two triangular solves.  Starts as the identity.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._checks import check_batch
from .base import Flow


class LULinear(Flow):
    """``y = P L U x + b`` on the real line (see the module docstring); ``permutation`` default: identity."""

    def __init__(self, dim: int, permutation: Sequence[int] | Tensor | None = None):
        super().__init__()
        perm = torch.arange(dim) if permutation is None else torch.as_tensor(permutation, dtype=torch.long)
        if perm.shape != (dim,) or not torch.equal(perm.sort().values, torch.arange(dim)):
            raise ValueError(f"permutation must be a permutation of range({dim}), got {perm.tolist()}")
        self.dim = dim
        self.register_buffer("perm", perm)
        self.register_buffer("_inv_perm", perm.argsort(), persistent=False)
        self.lower = nn.Parameter(torch.zeros(dim, dim))
        self.upper = nn.Parameter(torch.zeros(dim, dim))
        self.log_diag = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("_strict_lower", torch.ones(dim, dim).tril(-1), persistent=False)

    def factors(self) -> tuple[Tensor, Tensor]:
        """``(L, U)``: unit lower and upper triangular factors (``W = P L U``)."""
        eye = torch.eye(self.dim, dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower * self._strict_lower + eye
        upper = self.upper * self._strict_lower.T + torch.diag(self.log_diag.exp())
        return lower, upper

    def weight(self) -> Tensor:
        """The matrix ``W = P L U`` ``(dim, dim)``."""
        lower, upper = self.factors()
        return (lower @ upper)[self._inv_perm]

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_batch(x, self.dim)
        lower, upper = (f.to(x.dtype) for f in self.factors())
        # rows: y = x U^T L^T P^T + b; P^T on the right of a row vector is the gather y[:, i] = z[:, inv_perm[i]]
        z = x @ upper.T @ lower.T
        y = z[:, self._inv_perm] + self.bias.to(x.dtype)
        return y, self.log_diag.to(x.dtype).sum().expand(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_batch(y, self.dim)
        lower, upper = (f.to(y.dtype) for f in self.factors())
        z = (y - self.bias.to(y.dtype))[:, self.perm].T
        z = torch.linalg.solve_triangular(lower, z, upper=False, unitriangular=True)
        x = torch.linalg.solve_triangular(upper, z, upper=True).T
        return x, (-self.log_diag.to(y.dtype)).sum().expand(y.shape[0])
