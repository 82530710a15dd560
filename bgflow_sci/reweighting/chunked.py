"""Reweighting sample sets larger than memory: each chunk reduces to weighted sums, the sums add, estimates follow.

::

    sums = merge_sums(chunk_sums(lw_k, start=offset_k, regions={"AB": (a_k, b_k)}, cvs={"phi": phi_k},
                                 edges={"phi": edges}, n_bootstrap=200) for each chunk k)
    est = estimates(sums)          # est["ess"], est["log_z"], est["delta_f"]["AB"], est["profiles"]["phi"], ...

:func:`chunk_sums` keeps, for one chunk, ``S = sum_i m_i w_i`` and the like (``sum m w^2``, ``sum m w o`` for each
observable ``o``, ``sum m w`` over each region and each histogram bin, relative to the chunk's largest log weight);
:func:`merge_sums` adds chunks in any order and grouping; :func:`estimates` gives the Kish ESS, ``log Z``,
self-normalised averages ``<o> = sum w o / sum w``, ``ΔF = -log(S_B / S_A)`` and free-energy profiles, with the same
point estimates as :func:`~.weights.ess`, :func:`~.estimates.log_z`, :func:`~.free_energy.free_energy_difference`
and :func:`~.free_energy.free_energy_profile` on all samples at once (to float round-off).

**Errors** come from the Poisson bootstrap (Hanley & MacGibbon 2006; Chamandy et al. 2012): replicate ``b`` gives
sample ``i`` the multiplicity ``m_ib ~ Poisson(1)`` -- the large-``n`` limit of the multinomial counts of an ordinary
bootstrap -- computed from a hash of the *global* sample number ``i = start + j``, ``b`` and ``seed``
(:func:`~bgflow_sci._hashing.hashed_uniform`). Replicate sums are then chunk sums like the others, and the result
does not depend on the chunking, on the order of merging or on which worker reduced which chunk. Row 0 of every sum
is the sample itself (``m_i0 = 1``). Non-finite log weights (``-inf``: invalid samples) weigh zero and are counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .._hashing import hashed_uniform
from .bootstrap import Estimate, bootstrap_std
from .free_energy import Profile, align_replicates
from .histogram import bin_index
from .weights import as_log_weights

__all__ = ["WeightedSums", "chunk_sums", "estimates", "merge_sums", "poisson_multiplicities"]

_POISSON_CDF = np.cumsum([math.exp(-1.0) / math.factorial(k) for k in range(24)])
_BLOCK = 8192  # samples per block of the multiplicity matrix


def poisson_multiplicities(index: np.ndarray, n_bootstrap: int, seed: int) -> np.ndarray:
    """``(n, 1 + n_bootstrap)`` float64: 1 in column 0, ``Poisson(1)`` draws keyed by ``(index_i, b, seed)`` after."""
    index = np.asarray(index, dtype=np.int64)
    out = np.ones((len(index), 1 + n_bootstrap))
    if n_bootstrap:
        keys = index[:, None].astype(np.uint64) * np.uint64(n_bootstrap) + np.arange(n_bootstrap, dtype=np.uint64)
        out[:, 1:] = np.searchsorted(_POISSON_CDF, hashed_uniform(keys, seed), side="right")
    return out


@dataclass
class WeightedSums:
    """The reduced form of weighted samples (see the module docstring); every sum has ``1 + n_bootstrap`` rows.

    ``shift``: the log weight the sums are relative to (``w = exp(log w - shift)``); ``count``: ``sum m``;
    ``w``, ``w2``: ``sum m w``, ``sum m w^2``; ``observables[name]``: ``sum m w o``; ``regions[name]``: ``(rows, 2)``,
    ``sum m w`` over regions A and B; ``histograms[name]``: ``(rows, bins)`` ``sum m w`` per bin, ``counts[name]``
    the unweighted samples per bin, ``edges[name]`` the bin edges. Regions and bins have shifts of their own
    (``region_shifts[name]`` ``(2,)``, ``bin_shifts[name]`` ``(bins,)``: the largest log weight in each), so that a
    bin far below the largest weight keeps its precision instead of underflowing. All float64 on the CPU.
    """

    n: int
    invalid: int
    n_bootstrap: int
    seed: int
    shift: float
    count: Tensor
    w: Tensor
    w2: Tensor
    observables: dict[str, Tensor] = field(default_factory=dict)
    regions: dict[str, Tensor] = field(default_factory=dict)
    histograms: dict[str, Tensor] = field(default_factory=dict)
    counts: dict[str, Tensor] = field(default_factory=dict)
    edges: dict[str, Tensor] = field(default_factory=dict)
    region_shifts: dict[str, Tensor] = field(default_factory=dict)
    bin_shifts: dict[str, Tensor] = field(default_factory=dict)

    def _layout(self) -> tuple:
        hist = tuple(sorted((k, tuple(e.tolist())) for k, e in self.edges.items()))
        return self.n_bootstrap, self.seed, tuple(sorted(self.observables)), tuple(sorted(self.regions)), hist

    def __add__(self, other: WeightedSums) -> WeightedSums:
        if self._layout() != other._layout():
            raise ValueError(
                "cannot merge weighted sums of different layouts (n_bootstrap, seed, observables, regions, "
                f"histogram edges): {self._layout()} vs {other._layout()}"
            )
        shift = max(self.shift, other.shift)
        fa = 0.0 if self.shift == -math.inf else math.exp(self.shift - shift)
        fb = 0.0 if other.shift == -math.inf else math.exp(other.shift - shift)

        def add(a: Tensor, b: Tensor, power: int = 1) -> Tensor:
            return a * fa**power + b * fb**power

        def add_shifted(a: Tensor, sa: Tensor, b: Tensor, sb: Tensor) -> tuple[Tensor, Tensor]:
            top = torch.maximum(sa, sb)
            ga = torch.where(torch.isfinite(sa), torch.exp(sa - torch.where(torch.isfinite(top), top, 0.0)), 0.0)
            gb = torch.where(torch.isfinite(sb), torch.exp(sb - torch.where(torch.isfinite(top), top, 0.0)), 0.0)
            return a * ga + b * gb, top

        regions = {k: add_shifted(v, self.region_shifts[k], other.regions[k], other.region_shifts[k])
                   for k, v in self.regions.items()}  # fmt: skip
        hists = {k: add_shifted(v, self.bin_shifts[k], other.histograms[k], other.bin_shifts[k])
                 for k, v in self.histograms.items()}  # fmt: skip

        return WeightedSums(
            n=self.n + other.n,
            invalid=self.invalid + other.invalid,
            n_bootstrap=self.n_bootstrap,
            seed=self.seed,
            shift=shift,
            count=self.count + other.count,
            w=add(self.w, other.w),
            w2=add(self.w2, other.w2, 2),
            observables={k: add(v, other.observables[k]) for k, v in self.observables.items()},
            regions={k: v[0] for k, v in regions.items()},
            histograms={k: v[0] for k, v in hists.items()},
            counts={k: v + other.counts[k] for k, v in self.counts.items()},
            edges=dict(self.edges),
            region_shifts={k: v[1] for k, v in regions.items()},
            bin_shifts={k: v[1] for k, v in hists.items()},
        )


def _as_float(values, name: str, n: int) -> Tensor:
    t = torch.as_tensor(np.asarray(values), dtype=torch.float64).reshape(-1)
    if t.numel() != n:
        raise ValueError(f"{name} must have one value per sample ({n}), got shape {tuple(np.shape(values))}")
    return t


def chunk_sums(
    log_w: Tensor | np.ndarray,
    start: int = 0,
    observables: Mapping[str, Tensor | np.ndarray] | None = None,
    regions: Mapping[str, tuple[Tensor | np.ndarray, Tensor | np.ndarray]] | None = None,
    cvs: Mapping[str, Tensor | np.ndarray] | None = None,
    edges: Mapping[str, Tensor | np.ndarray] | None = None,
    n_bootstrap: int = 200,
    seed: int = 0,
) -> WeightedSums:
    """The :class:`WeightedSums` of one chunk of ``n`` samples, numbered ``start ... start + n - 1`` in the whole set.

    ``log_w``: ``(n,)``; ``observables``: ``{name: (n,)}`` averaged with the weights; ``regions``: ``{name: (in_a,
    in_b)}`` boolean ``(n,)`` masks for ``ΔF = F_B - F_A``; ``cvs``: ``{name: (n,)}`` collective variables histogrammed
    on ``edges[name]`` (fixed for all chunks; samples outside them are left out of the profile). Observables must be
    finite where the weight is non-zero.
    """
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be non-negative, got {n_bootstrap}")
    lw = as_log_weights(torch.as_tensor(np.asarray(log_w)), "log_w").detach().cpu()
    n = lw.numel()
    finite = torch.isfinite(lw)
    shift = float(lw[finite].max()) if bool(finite.any()) else -math.inf
    e = torch.where(finite, torch.exp(lw - (shift if math.isfinite(shift) else 0.0)), torch.zeros_like(lw))
    obs = {k: _as_float(v, f"observable {k!r}", n) for k, v in (observables or {}).items()}
    for k, v in obs.items():
        if not bool(torch.isfinite(v[e > 0]).all()):
            raise ValueError(f"observable {k!r} is not finite at some samples of non-zero weight")
    reg = {}
    for k, (a, b) in (regions or {}).items():
        ab = torch.stack([torch.as_tensor(np.asarray(a)), torch.as_tensor(np.asarray(b))], 1)
        if ab.dtype != torch.bool or ab.shape != (n, 2):
            raise ValueError(f"region {k!r} needs two boolean masks of shape ({n},), got {tuple(ab.shape)} {ab.dtype}")
        reg[k] = ab.to(torch.float64)
    cvs, edges = (
        dict(cvs or {}),
        {k: torch.as_tensor(np.asarray(v), dtype=torch.float64) for k, v in (edges or {}).items()},
    )
    if set(cvs) != set(edges):
        raise ValueError(f"every collective variable needs its bin edges: cvs {sorted(cvs)}, edges {sorted(edges)}")
    index = {k: bin_index(_as_float(v, f"collective variable {k!r}", n), edges[k]) for k, v in cvs.items()}

    neg_inf = torch.full_like(lw, -math.inf)
    region_shifts, region_e = {}, {}
    for k, ab in reg.items():
        masked = torch.where(ab.bool() & finite[:, None], lw[:, None], neg_inf[:, None])
        region_shifts[k] = masked.max(0).values if n else torch.full((2,), -math.inf, dtype=torch.float64)
        base = torch.where(torch.isfinite(region_shifts[k]), region_shifts[k], 0.0)
        region_e[k] = torch.where(torch.isfinite(masked), torch.exp(masked - base), 0.0)
    bin_shifts, bin_e = {}, {}
    for k, idx in index.items():
        n_bins = len(edges[k]) - 1
        peak = torch.full((n_bins + 1,), -math.inf, dtype=torch.float64)
        peak = peak.scatter_reduce(0, idx, torch.where(finite, lw, neg_inf), reduce="amax", include_self=True)
        bin_shifts[k] = peak[:n_bins]
        base = torch.where(torch.isfinite(peak), peak, 0.0)[idx]
        bin_e[k] = torch.where(finite, torch.exp(lw - base), 0.0)
    rows = 1 + n_bootstrap
    zeros = torch.zeros(rows, dtype=torch.float64)
    out = WeightedSums(
        n=n,
        invalid=int((~finite).sum()),
        n_bootstrap=n_bootstrap,
        seed=seed,
        shift=shift,
        count=zeros.clone(),
        w=zeros.clone(),
        w2=zeros.clone(),
        observables={k: zeros.clone() for k in obs},
        regions={k: torch.zeros(rows, 2, dtype=torch.float64) for k in reg},
        histograms={k: torch.zeros(rows, len(edges[k]) - 1, dtype=torch.float64) for k in cvs},
        counts={k: torch.bincount(index[k], minlength=len(edges[k]))[:-1].to(torch.float64) for k in cvs},
        edges=edges,
        region_shifts=region_shifts,
        bin_shifts=bin_shifts,
    )
    for lo in range(0, n, _BLOCK):
        hi = min(n, lo + _BLOCK)
        m = torch.from_numpy(poisson_multiplicities(np.arange(start + lo, start + hi), n_bootstrap, seed)).T
        eb = e[lo:hi]
        out.count += m.sum(1)
        out.w += m @ eb
        out.w2 += m @ eb**2
        for k, v in obs.items():
            out.observables[k] += m @ torch.where(eb > 0, eb * v[lo:hi], torch.zeros_like(eb))
        for k in reg:
            out.regions[k] += m @ region_e[k][lo:hi]
        for k, idx in index.items():
            n_bins = len(edges[k]) - 1
            onehot = torch.nn.functional.one_hot(idx[lo:hi], n_bins + 1)[:, :n_bins].to(torch.float64)
            out.histograms[k] += m @ (bin_e[k][lo:hi, None] * onehot)
    return out


def merge_sums(parts: Iterable[WeightedSums]) -> WeightedSums:
    """The sums of all chunks together (any order and grouping)."""
    total = None
    for part in parts:
        total = part if total is None else total + part
    if total is None:
        raise ValueError("merge_sums needs at least one chunk")
    return total


def _estimate(values: Tensor) -> Estimate:
    """Row 0 the value, rows 1.. the bootstrap replicates."""
    error = float(bootstrap_std(values[1:])) if len(values) > 2 else math.nan
    return Estimate(float(values[0]), error)


def _log(x: Tensor) -> Tensor:
    return torch.where(x > 0, torch.log(torch.clamp(x, min=1e-300)), torch.full_like(x, -math.inf))


def estimates(sums: WeightedSums) -> dict:
    """``{"n", "invalid", "ess", "log_z", "averages", "delta_f", "profiles"}`` from merged sums.

    ``ess``: Kish fraction of ``n``; ``log_z``, ``averages[name]``, ``delta_f[name]`` (kT): :class:`~.Estimate`;
    ``profiles[name]``: ``{"reweighted": Profile, "flow": Profile}`` (the second unweighted, without errors), ``F``
    in kT with minimum 0 over populated bins as :func:`~.free_energy.free_energy_profile` defines it (the per-bin
    ``ess`` of a :class:`~.Profile` is not kept by the sums: ``nan``).
    """
    s = sums
    log_w = _log(s.w) + s.shift
    result: dict = {"n": s.n, "invalid": s.invalid}
    result["ess"] = float(s.w[0] ** 2 / (s.w2[0] * s.n)) if s.n and s.w[0] > 0 else (math.nan if not s.n else 0.0)
    result["log_z"] = _estimate(log_w - _log(s.count)) if s.n else Estimate(math.nan, math.nan)
    result["averages"] = {k: _estimate(v / s.w) for k, v in s.observables.items()}
    result["delta_f"] = {
        k: _estimate(_log(v[:, 0]) + s.region_shifts[k][0] - _log(v[:, 1]) - s.region_shifts[k][1])
        for k, v in s.regions.items()
    }
    result["profiles"] = {}
    for k, hist in s.histograms.items():
        edges = s.edges[k]
        log_width = torch.log(edges[1:] - edges[:-1])
        log_sums = _log(hist) + torch.where(torch.isfinite(s.bin_shifts[k]), s.bin_shifts[k], 0.0)
        f_all = log_width - log_sums
        f_raw = f_all[0]
        populated = torch.isfinite(f_raw)
        inf = torch.full_like(f_raw, math.inf)
        f_min = torch.where(populated, f_raw, inf).min() if bool(populated.any()) else torch.tensor(0.0)
        reps = align_replicates(f_all[1:], f_raw, log_sums[0])
        error = torch.where(populated, bootstrap_std(reps), torch.full_like(f_raw, math.nan))
        if len(reps) < 2:
            error = torch.full_like(f_raw, math.nan)
        centers = 0.5 * (edges[1:] + edges[:-1])
        counts = s.counts[k].round().long()
        f_flow = log_width - _log(s.counts[k])
        flow_ok = torch.isfinite(f_flow)
        f_flow = torch.where(flow_ok, f_flow - (f_flow[flow_ok].min() if bool(flow_ok.any()) else 0.0), inf)
        nan = torch.full_like(f_raw, math.nan)
        result["profiles"][k] = {
            "reweighted": Profile(centers, edges, torch.where(populated, f_raw - f_min, inf), error, counts, nan),
            "flow": Profile(centers, edges, f_flow, nan, counts, nan),
        }
    return result
