"""Partition-function estimates from importance weights: ``log_z`` and a printable summary."""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from .bootstrap import Estimate, bootstrap, bootstrap_std
from .weights import as_log_weights, ess


def log_z(log_w: Tensor, n_bootstrap: int = 200, generator: torch.Generator | None = None) -> Estimate:
    """``log Z ≈ logsumexp(log w) - log n``, with the bootstrap standard error over samples.

    With ``log w = -u(x) - log q(x)`` and a normalised proposal ``q`` this estimates ``log ∫ exp(-u)``; in general it
    is the log ratio of the target's to the proposal's normalising constant, shifted by any constant added to
    ``log w``. ``log_w``: ``(batch,)``. Empty batch: ``Estimate(nan, nan)``. All weights zero: ``-inf`` (warns).
    """
    lw = as_log_weights(log_w).detach()
    n = lw.numel()
    if n == 0:
        return Estimate(math.nan, math.nan)
    value = float(torch.logsumexp(lw, dim=0)) - math.log(n)
    if value == -math.inf:
        warnings.warn("every log weight is -inf: log Z = -inf", RuntimeWarning, stacklevel=2)
        return Estimate(value, math.nan)
    reps = bootstrap(lambda idx: torch.logsumexp(lw[idx], dim=-1), n, n_bootstrap, generator, lw.device)
    return Estimate(value, float(bootstrap_std(reps)))


def importance_sampling_summary(
    log_w: Tensor, n_bootstrap: int = 200, generator: torch.Generator | None = None
) -> dict[str, float]:
    """Diagnostics of a weighted sample, for printouts and logs.

    Keys: ``n`` (samples), ``n_nonzero`` (finite log weight), ``ess`` (Kish fraction), ``ess_samples`` (``ess * n``),
    ``log_z`` and ``log_z_error`` (see :func:`log_z`), ``max_weight`` (largest normalised weight; near 1 means one
    sample dominates). Scalar entries are ``nan`` where undefined (empty batch).
    """
    lw = as_log_weights(log_w).detach()
    n = lw.numel()
    n_nonzero = int(torch.isfinite(lw).sum())
    frac = ess(lw)
    est = log_z(lw, n_bootstrap, generator) if n_nonzero else Estimate(-math.inf if n else math.nan, math.nan)
    max_weight = float(torch.exp(lw.max() - torch.logsumexp(lw, dim=0))) if n_nonzero else math.nan
    return {
        "n": n,
        "n_nonzero": n_nonzero,
        "ess": frac,
        "ess_samples": frac * n,
        "log_z": est.value,
        "log_z_error": est.error,
        "max_weight": max_weight,
    }
