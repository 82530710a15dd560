"""Vectorised nonparametric bootstrap over samples, and the ``Estimate`` result type.

Replicates resample the ``n`` samples with replacement (Efron 1979); the statistic is evaluated on a whole block of
replicates at once, index matrix ``(block, n)``, with blocks sized to bound memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

_MAX_ELEMENTS = 1 << 23  # index entries per block of replicates (64 MiB of int64)


class Estimate(NamedTuple):
    """A scalar estimate and its bootstrap standard error (``nan`` where it is not available)."""

    value: float
    error: float

    def __str__(self) -> str:
        return f"{self.value:.6g} ± {self.error:.2g}"


def bootstrap(
    statistic: Callable[[Tensor], Tensor],
    n: int,
    n_bootstrap: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Evaluate ``statistic(idx)`` on ``n_bootstrap`` resamples; returns the stacked results ``(n_bootstrap, ...)``.

    ``idx`` is a long tensor ``(block, n)`` of indices drawn uniformly with replacement; ``statistic`` must map it to
    ``(block, ...)``. Indices are drawn on the generator's device (the default generator of ``device`` if ``None``)
    and moved to ``device``, so a fixed CPU generator gives the same replicates on every device.
    """
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be non-negative, got {n_bootstrap}")
    draw_device = generator.device if generator is not None else device
    block = max(1, _MAX_ELEMENTS // max(n, 1))
    results = []
    for start in range(0, max(n_bootstrap, 1), block):
        b = min(block, n_bootstrap - start)
        if n == 0 or b == 0:
            idx = torch.zeros((b, n), dtype=torch.long, device=device)
        else:
            idx = torch.randint(n, (b, n), generator=generator, device=draw_device).to(device)
        results.append(statistic(idx))
    return torch.cat(results, dim=0)


def bootstrap_std(replicates: Tensor) -> Tensor:
    """Standard deviation over dim 0 of the finite replicates; ``nan`` where fewer than two are finite.

    Replicates where the quantity is undefined (e.g. a region or bin that is empty in that resample) are dropped:
    the error is conditional on the quantity existing.
    """
    finite = torch.isfinite(replicates)
    count = finite.sum(dim=0)
    x = torch.where(finite, replicates, torch.zeros_like(replicates))
    mean = x.sum(dim=0) / count.clamp(min=1)
    dev = torch.where(finite, replicates - mean, torch.zeros_like(replicates))
    var = (dev**2).sum(dim=0) / (count - 1).clamp(min=1)
    return torch.where(count >= 2, var.sqrt(), torch.full_like(var, math.nan))
