"""Weighted binning along a collective variable: bin edges, per-bin log weight sums, reweighted histograms.

The per-bin sums ``log S_k = log sum_{i: s_i in bin k} w_i`` are the one primitive behind histograms and free-energy
profiles; they take any leading batch dims, so bootstrap replicates are binned in one scatter.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .bootstrap import bootstrap, bootstrap_std
from .weights import as_log_weights


class Histogram(NamedTuple):
    """Reweighted density estimate per bin (shapes ``(n_bins,)``, edges ``(n_bins + 1,)``)."""

    density: Tensor
    error: Tensor
    edges: Tensor


def as_cv(cv: Tensor) -> Tensor:
    """Validate a collective variable of shape ``(batch,)`` (or ``(batch, 1)``); return it as float64."""
    if not isinstance(cv, Tensor):
        raise TypeError(f"cv must be a torch.Tensor of shape (batch,), got {type(cv).__name__}")
    if cv.dim() == 2 and cv.shape[1] == 1:
        cv = cv[:, 0]
    if cv.dim() != 1:
        raise ValueError(f"cv must have shape (batch,), got {tuple(cv.shape)}")
    return cv.detach().to(torch.float64)


def cv_and_log_weights(cv: Tensor, log_w: Tensor | None) -> tuple[Tensor, Tensor]:
    """Validated float64 ``(cv, log_w)`` of equal length; ``log_w=None`` means unweighted samples (all zeros)."""
    s = as_cv(cv)
    if log_w is None:
        return s, torch.zeros_like(s)
    lw = as_log_weights(log_w).detach().to(s.device)
    if lw.shape != s.shape:
        raise ValueError(f"cv and log_w must have the same length, got {s.shape[0]} and {lw.shape[0]}")
    return s, lw


def histogram_edges(
    cv: Tensor, log_w: Tensor, bins: int | Tensor = 50, range: tuple[float, float] | None = None
) -> Tensor:
    """Bin edges ``(n_bins + 1,)`` in float64 on ``cv``'s device.

    ``bins`` is a number of equal bins over ``range`` or a tensor of strictly increasing edges. Without ``range``,
    the span of the finite ``cv`` values with nonzero weight is used (``(0, 1)`` if there are none; a point span is
    widened by 0.5 on each side).
    """
    if isinstance(bins, Tensor):
        edges = bins.detach().to(device=cv.device, dtype=torch.float64)
        if edges.dim() != 1 or edges.numel() < 2:
            raise ValueError(f"bin edges must have shape (n_bins + 1,) with n_bins >= 1, got {tuple(edges.shape)}")
        if not bool((edges[1:] > edges[:-1]).all()) or not bool(torch.isfinite(edges).all()):
            raise ValueError("bin edges must be finite and strictly increasing")
        return edges
    if int(bins) < 1:
        raise ValueError(f"bins must be a positive number of bins, got {bins}")
    if range is None:
        ok = torch.isfinite(cv) & torch.isfinite(log_w)
        if bool(ok.any()):
            lo, hi = float(cv[ok].min()), float(cv[ok].max())
        else:
            lo, hi = 0.0, 1.0
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
    else:
        lo, hi = float(range[0]), float(range[1])
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"range must be finite with range[0] < range[1], got {range}")
    return torch.linspace(lo, hi, int(bins) + 1, dtype=torch.float64, device=cv.device)


def bin_index(cv: Tensor, edges: Tensor) -> Tensor:
    """Bin of each sample, ``(batch,)`` long: ``k`` for ``edges[k] <= s < edges[k+1]`` (last bin closed on the right),
    ``n_bins`` for samples outside the edges or with a NaN ``cv``."""
    n_bins = edges.numel() - 1
    idx = torch.bucketize(cv, edges, right=True) - 1
    idx = torch.where(cv == edges[-1], torch.full_like(idx, n_bins - 1), idx)
    outside = (idx < 0) | (idx >= n_bins) | torch.isnan(cv)
    return torch.where(outside, torch.full_like(idx, n_bins), idx)


def log_bin_sums(log_w: Tensor, index: Tensor, n_bins: int) -> Tensor:
    """``log sum_{i: index_i = k} w_i`` for ``k < n_bins``; shapes ``(..., n) -> (..., n_bins)``, ``-inf`` if empty.

    Each bin is shifted by its own maximum before exponentiating, so bins far below the largest weight keep their
    precision. Samples with ``index == n_bins`` are dropped.
    """
    lead = log_w.shape[:-1]
    rows = math.prod(lead)
    lw = log_w.reshape(rows, log_w.shape[-1])
    idx = index.reshape(rows, index.shape[-1])
    shape = (lw.shape[0], n_bins + 1)
    peak = torch.full(shape, -math.inf, dtype=lw.dtype, device=lw.device)
    peak = peak.scatter_reduce(1, idx, lw, reduce="amax", include_self=True)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    sums = torch.zeros(shape, dtype=lw.dtype, device=lw.device).scatter_add(1, idx, torch.exp(lw - peak.gather(1, idx)))
    return (torch.log(sums) + peak)[:, :n_bins].reshape(*lead, n_bins)


def reweighted_histogram(
    cv: Tensor,
    log_w: Tensor | None = None,
    bins: int | Tensor = 50,
    range: tuple[float, float] | None = None,
    n_bootstrap: int = 200,
    generator: torch.Generator | None = None,
) -> Histogram:
    """Weighted probability density of ``cv`` per bin, ``p_k = sum_{bin k} w / (sum_all w * width_k)``, with
    bootstrap standard errors.

    ``cv``, ``log_w``: ``(batch,)``; ``log_w=None`` for unweighted samples. The normalisation uses all samples,
    including those outside the range, so ``sum_k p_k width_k`` is the weighted fraction inside it (1 if all are).
    Results have ``cv``'s floating dtype and device. Empty batch or all-zero weights: ``nan`` densities.
    """
    out_dtype = cv.dtype if cv.is_floating_point() else torch.get_default_dtype()
    s, lw = cv_and_log_weights(cv, log_w)
    edges = histogram_edges(s, lw, bins, range)
    n_bins, n = edges.numel() - 1, s.numel()
    log_width = torch.log(edges[1:] - edges[:-1])
    idx = bin_index(s, edges)

    def density(lw_r: Tensor, idx_r: Tensor) -> Tensor:
        log_total = torch.logsumexp(lw_r, dim=-1, keepdim=True)
        return torch.exp(log_bin_sums(lw_r, idx_r, n_bins) - log_total - log_width)

    value = density(lw, idx)
    reps = bootstrap(lambda r: density(lw[r], idx[r]), n, n_bootstrap, generator, s.device)
    error = bootstrap_std(reps)
    return Histogram(value.to(out_dtype), error.to(out_dtype), edges.to(out_dtype))
