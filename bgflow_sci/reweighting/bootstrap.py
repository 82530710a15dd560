"""Vectorised nonparametric bootstrap over samples or over blocks of time series, and the ``Estimate`` result type.

:func:`bootstrap` resamples the ``n`` samples with replacement (Efron 1979). :func:`block_bootstrap` resamples
contiguous blocks of correlated chains instead (the non-overlapping block bootstrap; Carlstein 1986, Künsch 1989),
which keeps the correlations within a block and so does not underestimate the error of time averages once blocks are
longer than the correlation time; :func:`block_bootstrap_sums` is its fast path for sums over samples. Either
evaluates the statistic on many replicates at once, an index matrix ``(replicates, n)``, in pieces sized to bound
memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
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


def contiguous_blocks(chain_ids: Tensor | np.ndarray, block_length: int) -> Tensor:
    """Sample indices ``(n_blocks, block_length)`` of the non-overlapping contiguous blocks of every chain.

    ``chain_ids`` ``(n,)``: the chain of each sample, the samples of a chain in time order (they need not be adjacent
    in the array). Blocks are listed chain by chain (increasing id), in time order within a chain; a chain's last
    incomplete block is dropped. Long tensor on the device of ``chain_ids``.
    """
    return _blocks(chain_ids, block_length)[0]


def _blocks(chain_ids: Tensor | np.ndarray, block_length: int) -> tuple[Tensor, Tensor]:
    """:func:`contiguous_blocks` and the position ``(n_blocks,)`` of each block's chain among the sorted chain ids."""
    chain = torch.as_tensor(chain_ids)
    if chain.ndim != 1:
        raise ValueError(f"chain_ids must be (n,), got shape {tuple(chain.shape)}")
    if block_length < 1:
        raise ValueError(f"block_length must be positive, got {block_length}")
    rows, owner = [], []
    for i, c in enumerate(torch.unique(chain)):  # sorted
        idx = torch.nonzero(chain == c).flatten()
        n_blocks = len(idx) // block_length
        rows.append(idx[: n_blocks * block_length].reshape(n_blocks, block_length))
        owner.append(torch.full((n_blocks,), i, dtype=torch.long, device=chain.device))
    if not rows:
        return torch.zeros((0, block_length), dtype=torch.long, device=chain.device), torch.zeros(0, dtype=torch.long)
    return torch.cat(rows), torch.cat(owner)


def _randint(high: int, size: tuple[int, ...], generator: torch.Generator | np.random.Generator | None, device):
    if isinstance(generator, np.random.Generator):
        return torch.as_tensor(generator.integers(high, size=size), dtype=torch.long, device=device)
    draw_device = generator.device if generator is not None else device
    return torch.randint(high, size, generator=generator, device=draw_device).to(device)


def _resample_blocks(
    evaluate: Callable[[Tensor], Tensor],
    owner: Tensor,
    n_bootstrap: int,
    generator: torch.Generator | np.random.Generator | None,
    device: torch.device | str | None,
    within_chains: bool,
) -> Tensor:
    """Draw block indices ``(replicates, n_blocks)`` (``owner``: chain of each block) and stack ``evaluate(picks)``."""
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be non-negative, got {n_bootstrap}")
    n_blocks = len(owner)
    if not within_chains and not isinstance(generator, np.random.Generator):
        return bootstrap(evaluate, n_blocks, n_bootstrap, generator, device)
    if not within_chains:
        return evaluate(_randint(n_blocks, (n_bootstrap, n_blocks), generator, device))
    counts = torch.bincount(owner.cpu()).tolist()
    starts = [sum(counts[:i]) for i in range(len(counts))]
    picks = [_randint(c, (n_bootstrap, c), generator, device) + s for c, s in zip(counts, starts) if c]
    return evaluate(torch.cat(picks, 1) if picks else torch.zeros((n_bootstrap, 0), dtype=torch.long, device=device))


def block_bootstrap(
    statistic: Callable[[Tensor], Tensor],
    chain_ids: Tensor | np.ndarray,
    block_length: int,
    n_bootstrap: int,
    generator: torch.Generator | np.random.Generator | None = None,
    device: torch.device | str | None = None,
    within_chains: bool = False,
) -> Tensor:
    """Evaluate ``statistic(idx)`` on ``n_bootstrap`` block-bootstrap resamples; returns ``(n_bootstrap, ...)``.

    Each chain is cut into non-overlapping contiguous blocks of ``block_length`` samples (:func:`contiguous_blocks`;
    a chain's last incomplete block is left out of every replicate). A replicate draws as many blocks as there are,
    uniformly with replacement, from all chains pooled, or with ``within_chains`` from each chain separately (each
    chain keeps its number of blocks, e.g. the windows of umbrella sampling, whose sample counts MBAR needs fixed).
    ``statistic`` gets the sample indices of the drawn blocks, a long tensor ``(replicates, n_blocks *
    block_length)`` on ``device`` (default: that of ``chain_ids``; with ``within_chains``, chain by chain in the
    order of :func:`contiguous_blocks`), and must map it to ``(replicates, ...)``, like the statistic of
    :func:`bootstrap`; the replicates come in pieces of bounded size. For sums over samples (counts, weights,
    anything a ratio estimator is made of) :func:`block_bootstrap_sums` is much cheaper.

    The blocks are drawn like the samples of :func:`bootstrap` (the pooled draw *is* ``bootstrap`` over the block
    indices): the same ``generator`` gives the same replicates, and ``block_length=1`` on one chain gives exactly
    the replicates of :func:`bootstrap`. ``generator`` may also be a ``numpy.random.Generator`` (all draws in one
    ``integers`` call per chain, or one for all), for analyses seeded in numpy. The error of a statistic is
    :func:`bootstrap_std` of the result; it plateaus once ``block_length`` exceeds the correlation time.
    """
    blocks, owner = _blocks(chain_ids, block_length)
    blocks = blocks.to(device) if device is not None else blocks
    rows = max(1, _MAX_ELEMENTS // max(blocks.numel(), 1))

    def evaluate(picks: Tensor) -> Tensor:
        picks = picks.to(blocks.device)
        width = picks.shape[1] * block_length
        return torch.cat([statistic(blocks[p].reshape(len(p), width)) for p in torch.split(picks, rows)])

    return _resample_blocks(evaluate, owner, n_bootstrap, generator, blocks.device, within_chains)


def block_bootstrap_sums(
    values: Tensor | np.ndarray,
    chain_ids: Tensor | np.ndarray,
    block_length: int,
    n_bootstrap: int,
    generator: torch.Generator | np.random.Generator | None = None,
    within_chains: bool = False,
) -> Tensor:
    """Sums ``(n_bootstrap, ...)`` of ``values`` ``(n, ...)`` over the samples of each block-bootstrap replicate.

    The replicates of :func:`block_bootstrap` with the same arguments (same blocks, same draws), computed from the
    per-block sums in ``O(n_blocks)`` per replicate: what ratio estimators need (``ΔF = -log S_B + log S_A`` from
    summed weights or counts, a histogram from one-hot columns). float64 for float ``values`` (``values`` itself if
    it is float64), on the device of ``values``.
    """
    values = torch.as_tensor(values)
    values = values.double() if values.is_floating_point() or values.dtype == torch.bool else values
    if values.ndim == 0 or len(values) != len(chain_ids):
        raise ValueError(f"values must be (n, ...), n = len(chain_ids) = {len(chain_ids)}, got {tuple(values.shape)}")
    blocks, owner = _blocks(chain_ids, block_length)
    block_sums = values[blocks.to(values.device)].sum(1)  # (n_blocks, ...)
    rows = max(1, _MAX_ELEMENTS // max(block_sums.numel(), 1))

    def evaluate(picks: Tensor) -> Tensor:
        picks = picks.to(values.device)
        return torch.cat([block_sums[p].sum(1) for p in torch.split(picks, rows)])

    return _resample_blocks(evaluate, owner, n_bootstrap, generator, values.device, within_chains)
