"""Importance weights: validation, normalisation and the Kish effective sample size.

Log weights are ``log w = -u(x) - log q(x)`` up to an additive constant (Noé et al., Science 2019); every function
here is invariant to that constant. A zero weight is ``log w = -inf`` (an invalid sample); it still counts in ``n``.
NaN or ``+inf`` log weights are rejected with a ``ValueError``: the Boltzmann generator maps invalid samples to
``-inf``, so a NaN means a bug upstream, and one infinite weight would make every estimate undefined.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def as_log_weights(log_w: Tensor, name: str = "log_w") -> Tensor:
    """Validate log weights of shape ``(batch,)``; return them as float64 on their device (gradients kept)."""
    if not isinstance(log_w, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (batch,), got {type(log_w).__name__}")
    if log_w.dim() != 1:
        raise ValueError(f"{name} must have shape (batch,), got {tuple(log_w.shape)}")
    lw = log_w.to(torch.float64)
    if lw.numel() == 0:
        return lw
    n_nan, n_posinf = torch.stack([torch.isnan(lw).sum(), torch.isposinf(lw).sum()]).tolist()
    if n_nan:
        raise ValueError(
            f"{name} contains {n_nan} NaN value(s) out of {lw.numel()}; give invalid samples log weight -inf "
            "(zero weight) instead"
        )
    if n_posinf:
        raise ValueError(
            f"{name} contains {n_posinf} +inf value(s) out of {lw.numel()}; an infinite weight makes every "
            "importance-sampling estimate undefined"
        )
    return lw


def log_mean_exp(x: Tensor, dim: int = -1, keepdim: bool = False) -> Tensor:
    """``log(mean(exp(x)))`` along ``dim``, computed stably: ``logsumexp(x) - log n``; ``nan`` for an empty ``dim``.

    Differentiable and dtype-preserving (a tensor helper, usable inside losses).
    """
    n = x.shape[dim]
    if n == 0:
        return torch.logsumexp(x, dim=dim, keepdim=keepdim).fill_(math.nan)
    return torch.logsumexp(x, dim=dim, keepdim=keepdim) - math.log(n)


def normalized_weights(log_w: Tensor) -> Tensor:
    """Self-normalised weights ``w_i / sum_j w_j`` (a softmax of ``log_w``), shape ``(batch,)``, summing to 1.

    Computed in float64 and returned in the dtype and device of ``log_w``; differentiable. An empty input gives an
    empty result; if every weight is zero there is no distribution to normalise and a ``ValueError`` is raised.
    """
    lw = as_log_weights(log_w)
    if lw.numel() == 0:
        return log_w.new_empty(0)
    if bool(torch.isneginf(lw).all()):
        raise ValueError(f"all {lw.numel()} log weights are -inf (zero weight): the weights cannot be normalised")
    return torch.softmax(lw, dim=0).to(log_w.dtype if log_w.is_floating_point() else torch.get_default_dtype())


def ess(log_w: Tensor) -> float:
    """Kish effective sample size as a fraction of ``n``: ``(sum w)^2 / (n sum w^2)`` in ``(0, 1]``.

    Evaluated as ``exp(2 logsumexp(lw) - logsumexp(2 lw)) / n``. Returns ``nan`` for an empty batch and ``0.0`` if
    every weight is zero (no effective samples).
    """
    lw = as_log_weights(log_w).detach()
    if lw.numel() == 0:
        return math.nan
    return float(ess_tensor(lw))


def ess_tensor(log_w: Tensor) -> Tensor:
    """:func:`ess` of a non-empty 1D tensor of log weights as a 0-d tensor on its device (no host synchronisation,
    for logging inside training loops); float64."""
    lw = log_w.to(torch.float64)
    lse = torch.logsumexp(lw, dim=0)
    frac = torch.exp(2 * lse - torch.logsumexp(2 * lw, dim=0) - math.log(lw.numel())).clamp(max=1.0)
    return torch.where(torch.isfinite(lse), frac, torch.zeros_like(frac))
