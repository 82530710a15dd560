"""Free energies (in kT) from weighted samples: differences between regions and profiles along a collective variable.

Noé et al., Science 2019: ``F_A = -log sum_{x in A} w(x)``; profiles ``F(s) = -log sum w 1[s(x) in bin]``, with
bootstrap errors over samples. ``log_w=None`` means unweighted samples (e.g. MD data).
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch
from torch import Tensor

from .bootstrap import Estimate, block_bootstrap_sums, bootstrap, bootstrap_std
from .histogram import bin_index, cv_and_log_weights, histogram_edges, log_bin_sums
from .weights import as_log_weights


class Profile(NamedTuple):
    """Free-energy profile along a collective variable (all ``(n_bins,)`` except ``edges``, ``(n_bins + 1,)``).

    ``free_energy`` is in kT with minimum 0 over populated bins and ``inf`` in bins without weight, where ``error``
    is ``nan``. ``counts`` is the number of samples per bin, ``ess`` the Kish effective number within each bin.
    """

    centers: Tensor
    edges: Tensor
    free_energy: Tensor
    error: Tensor
    counts: Tensor
    ess: Tensor


def _as_mask(mask: Tensor, name: str, n: int | None, device: torch.device | None = None) -> Tensor:
    """Validate a boolean region mask of shape ``(n,)`` (any length if ``n`` is ``None``)."""
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a boolean torch.Tensor of shape (batch,), e.g. cv < 0")
    if mask.dim() != 1 or (n is not None and mask.shape[0] != n):
        raise ValueError(f"{name} must have shape ({'batch' if n is None else n},), got {tuple(mask.shape)}")
    return mask if device is None else mask.to(device)


def free_energy_difference(
    log_w: Tensor | None,
    in_a: Tensor,
    in_b: Tensor,
    n_bootstrap: int = 200,
    generator: torch.Generator | None = None,
) -> Estimate:
    """``ΔF = F_B - F_A = -log sum_{x in B} w + log sum_{x in A} w`` in kT, with its bootstrap standard error.

    ``in_a``, ``in_b``: boolean masks ``(batch,)`` (regions may overlap or leave samples out); ``log_w``:
    ``(batch,)`` or ``None`` for unweighted samples. If a region has zero weight the value is ``±inf`` (``nan`` if
    both do) with a ``nan`` error and a ``RuntimeWarning``. Empty batch: ``Estimate(nan, nan)``.
    """
    if log_w is None:
        ref = _as_mask(in_a, "in_a", None)
        lw = torch.zeros(ref.shape[0], dtype=torch.float64, device=ref.device)
    else:
        lw = as_log_weights(log_w).detach()
    n = lw.numel()
    a = _as_mask(in_a, "in_a", n, lw.device)
    b = _as_mask(in_b, "in_b", n, lw.device)
    if n == 0:
        return Estimate(math.nan, math.nan)

    def delta_f(lw_r: Tensor, a_r: Tensor, b_r: Tensor) -> Tensor:
        neg_inf = torch.full_like(lw_r, -math.inf)
        log_a = torch.logsumexp(torch.where(a_r, lw_r, neg_inf), dim=-1)
        log_b = torch.logsumexp(torch.where(b_r, lw_r, neg_inf), dim=-1)
        return log_a - log_b

    value = float(delta_f(lw, a, b))
    if not math.isfinite(value):
        empty = [name for name, m in (("A", a), ("B", b)) if not bool(torch.isfinite(lw[m]).any())]
        warnings.warn(
            f"region(s) {' and '.join(empty)} have zero total weight in the sample: ΔF = {value}",
            RuntimeWarning,
            stacklevel=2,
        )
        return Estimate(value, math.nan)
    reps = bootstrap(lambda r: delta_f(lw[r], a[r], b[r]), n, n_bootstrap, generator, lw.device)
    return Estimate(value, float(bootstrap_std(reps)))


def align_replicates(f_rep: Tensor, f_raw: Tensor, log_sums: Tensor) -> Tensor:
    """Bootstrap replicates ``f_rep`` ``(..., n_bins)`` of an unshifted profile ``f_raw`` ``(n_bins,)``, each shifted
    by the constant minimising ``sum_k p_k (F^b_k - c_b - F_k)^2`` over bins populated in both (``p_k`` the bin
    probabilities from the bins' ``log_sums``); ``inf`` where a replicate or the estimate leaves a bin empty."""
    populated = torch.isfinite(f_raw)
    p = torch.softmax(torch.where(populated, log_sums, torch.full_like(log_sums, -math.inf)), dim=0)
    p = torch.where(populated, p, torch.zeros_like(p))
    both = torch.isfinite(f_rep) & populated
    diff = torch.where(both, f_rep - f_raw, torch.zeros_like(f_rep))
    pw = torch.where(both, p.expand_as(f_rep), torch.zeros_like(f_rep))
    shift = (pw * diff).sum(-1, keepdim=True) / pw.sum(-1, keepdim=True).clamp_min(1e-300)
    return torch.where(both, f_rep - shift, torch.full_like(f_rep, math.inf))


def free_energy_profile(
    cv: Tensor,
    log_w: Tensor | None = None,
    bins: int | Tensor = 50,
    range: tuple[float, float] | None = None,
    n_bootstrap: int = 200,
    generator: torch.Generator | None = None,
    chain_ids: Tensor | None = None,
    block_length: int | None = None,
) -> Profile:
    """Free-energy profile ``F_k = -log sum_{s_i in bin k} w_i + log width_k`` (``-log`` of the density), in kT.

    ``cv``, ``log_w``: ``(batch,)``; ``bins``/``range`` as in :func:`~.histogram.histogram_edges`. The profile is
    shifted so that its minimum over populated bins is 0.

    Errors: each bootstrap replicate ``F^b`` is aligned to the (unshifted) estimate ``F`` by the constant that
    minimises ``sum_k p_k (F^b_k - c_b - F_k)^2`` over bins populated in both, ``p_k`` the estimated bin
    probabilities; the error is the standard deviation of the aligned replicates. This keeps the error of the
    reference (minimum) bin non-zero, unlike shifting every replicate by its own minimum. Replicates in which a bin
    is empty are left out of that bin's error. Replicates resample single samples (independent draws, e.g. from a
    flow), or, with ``chain_ids`` ``(batch,)`` and ``block_length``, contiguous blocks of each chain
    (:func:`~.bootstrap.block_bootstrap_sums`: correlated samples such as MD frames). Results have ``cv``'s floating
    dtype and device; an empty batch gives all bins ``inf`` with ``nan`` errors and zero counts.
    """
    out_dtype = cv.dtype if cv.is_floating_point() else torch.get_default_dtype()
    s, lw = cv_and_log_weights(cv, log_w)
    edges = histogram_edges(s, lw, bins, range)
    n_bins, n = edges.numel() - 1, s.numel()
    log_width = torch.log(edges[1:] - edges[:-1])
    idx = bin_index(s, edges)

    log_sums = log_bin_sums(lw, idx, n_bins)
    f_raw = log_width - log_sums
    populated = torch.isfinite(f_raw)
    inf = torch.full_like(f_raw, math.inf)
    f_min = torch.where(populated, f_raw, inf).min()
    f_value = torch.where(populated, f_raw - f_min, inf)

    def align(f_rep: Tensor) -> Tensor:
        return align_replicates(f_rep, f_raw, log_sums)

    n_rep = n_bootstrap if bool(populated.any()) else 0
    if chain_ids is not None:
        if block_length is None:
            raise ValueError("chain_ids needs block_length (samples per bootstrap block)")
        offset = lw.max() if n else lw.new_zeros(())
        weighted = (
            torch.nn.functional.one_hot(idx, n_bins + 1)[:, :n_bins].to(lw.dtype) * torch.exp(lw - offset)[:, None]
        )
        if n_rep:
            sums = block_bootstrap_sums(weighted, chain_ids, block_length, n_rep, generator).to(lw.device)
            reps = align(log_width - offset - torch.log(sums))
        else:
            reps = f_raw.new_empty(0, n_bins)
    else:
        reps = bootstrap(
            lambda r: align(log_width - log_bin_sums(lw[r], idx[r], n_bins)), n, n_rep, generator, s.device
        )
    error = torch.where(populated, bootstrap_std(reps), torch.full_like(f_raw, math.nan))

    counts = torch.bincount(idx, minlength=n_bins + 1)[:n_bins]
    ess_bins = torch.exp(2 * log_sums - log_bin_sums(2 * lw, idx, n_bins))
    ess_bins = torch.where(populated, ess_bins, torch.zeros_like(ess_bins))
    centers = 0.5 * (edges[1:] + edges[:-1])
    return Profile(
        centers.to(out_dtype),
        edges.to(out_dtype),
        f_value.to(out_dtype),
        error.to(out_dtype),
        counts,
        ess_bins.to(out_dtype),
    )


class ProfileDifference(NamedTuple):
    """How far a free-energy profile lies from a reference on the same bins (kT): the probability-weighted rms and
    the largest absolute difference after the best constant shift, over ``bins`` compared bins."""

    rms: float
    max_abs: float
    bins: int


def profile_difference(
    free_energy: Tensor, reference: Tensor, below_kt: float = 5.0, edges: Tensor | None = None
) -> ProfileDifference:
    """Compare profile ``F`` to reference ``R`` (both ``(n_bins,)`` kT on the same bins, each up to a constant).

    Compared bins: finite in both and with ``R_k - min R <= below_kt``. With reference bin probabilities
    ``p_k ∝ exp(-R_k) width_k`` over those bins (``edges`` give the widths, equal widths when ``None``) the shift
    ``c = sum_k p_k (F_k - R_k)`` minimises ``sum_k p_k (F_k - c - R_k)^2``; returns
    ``rms = sqrt(sum_k p_k (F_k - c - R_k)^2)`` and ``max_abs = max_k |F_k - c - R_k|``. No bin in common gives
    ``nan`` values and ``bins = 0``.
    """
    f = torch.as_tensor(free_energy, dtype=torch.float64).reshape(-1)
    r = torch.as_tensor(reference, dtype=torch.float64).reshape(-1)
    if f.shape != r.shape:
        raise ValueError(f"profile and reference must have the same bins, got {tuple(f.shape)} and {tuple(r.shape)}")
    finite = torch.isfinite(f) & torch.isfinite(r)
    if not bool(finite.any()):
        return ProfileDifference(math.nan, math.nan, 0)
    r_min = r[finite].min()
    keep = finite & (r - r_min <= below_kt)
    log_p = -(r - r_min)
    if edges is not None:
        log_p = log_p + torch.log(torch.diff(torch.as_tensor(edges, dtype=torch.float64).reshape(-1)))
    p = torch.softmax(torch.where(keep, log_p, torch.full_like(log_p, -math.inf)), dim=0)
    diff = torch.where(keep, f - r, torch.zeros_like(f))
    shifted = diff - (p * diff).sum()
    rms = float(torch.sqrt((p * shifted**2).sum()))
    return ProfileDifference(rms, float(shifted[keep].abs().max()), int(keep.sum()))
