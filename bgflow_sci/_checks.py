"""Input validation shared by every layer (bottom of the import graph)."""

from __future__ import annotations

import torch
from torch import Tensor


def check_batch(x: Tensor, dim: int, name: str = "x") -> Tensor:
    """Require a tensor of shape ``(batch, dim)``; raise ``ValueError`` naming the expected shape."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (batch, {dim}), got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != dim:
        raise ValueError(f"{name} must have shape (batch, {dim}), got {tuple(x.shape)}")
    return x


def check_context(context: Tensor | None, batch: int, context_dim: int) -> Tensor | None:
    """Validate a conditioning tensor of shape ``(batch, context_dim)`` (or ``None`` when ``context_dim == 0``)."""
    if context_dim == 0:
        if context is not None:
            raise ValueError("this module takes no context (context_dim=0), but a context was given")
        return None
    if context is None:
        raise ValueError(f"this module needs a context of shape (batch, {context_dim}), got None")
    if context.dim() != 2 or context.shape[1] != context_dim or context.shape[0] != batch:
        raise ValueError(f"context must have shape ({batch}, {context_dim}), got {tuple(context.shape)}")
    return context


def finite_rows(x: Tensor) -> Tensor:
    """Boolean mask ``(batch,)`` of rows whose entries are all finite.

    A row whose sum is finite has only finite entries (an infinite or NaN entry makes the sum non-finite), so one
    cheap row sum decides most rows; only rows with a non-finite sum (which may also be finite rows that overflow)
    are checked entry by entry.
    """
    if x.is_floating_point() and x.dim() >= 1 and x.shape[-1] > 0:
        ok = torch.isfinite(x.sum(dim=-1))
        suspect = ~ok
        if suspect.any():
            ok = ok | (suspect & torch.isfinite(x).all(dim=-1))
        return ok
    return torch.isfinite(x).all(dim=-1)
