"""Input validation shared by every layer (bottom of the import graph)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import Tensor

_CHECKS = [os.environ.get("BGFLOW_SCI_CHECKS", "1") not in ("0", "false", "off")]


def checks_enabled() -> bool:
    """Whether the value checks that synchronise with the device run (spline domain checks; see :func:`checks`)."""
    return _CHECKS[-1]


@contextlib.contextmanager
def checks(enabled: bool) -> Iterator[None]:
    """Turn the value checks that synchronise with the device on or off inside the block.

    On (the default; ``BGFLOW_SCI_CHECKS=0`` in the environment turns them off globally), a spline input outside its
    interval domain or non-finite raises ``ValueError`` -- at the price of one device-to-host synchronisation per
    spline call. Off, such inputs go through unchecked (clamped to the domain) and a CUDA training step has a single
    host synchronisation (the trainer's skip decision). Shape checks are always on (they cost nothing).
    """
    _CHECKS.append(bool(enabled))
    try:
        yield
    finally:
        _CHECKS.pop()


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
    """Boolean mask ``(batch,)`` of rows whose entries are all finite (no host synchronisation)."""
    return torch.isfinite(x).all(dim=-1)
