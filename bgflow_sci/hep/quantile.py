"""Quantile-mapping baselines for correcting simulation to data.

* :class:`QuantileMapper`: each variable separately, ``x' = Q_data(F_MC(x))`` with weighted empirical CDFs;
  correlations are left as they are in MC.
* :class:`ChainedQuantileMapper`: the CMS H→γγ-style chained one-dimensional conditional quantile mapping
  (CMS Collaboration, "Measurements of Higgs boson properties in the diphoton decay channel", JHEP 07 (2021) 027,
  and the photon-ID corrections therein): variables are corrected one at a time in a fixed order, the k-th
  conditioned on the kinematics *and* the already-corrected variables ``x'_1 .. x'_{k-1}``:
  ``x'_k = Q_data(F_MC(x_k | c, x'_{<k}) | c, x'_{<k})``.  Where CMS regresses conditional quantiles with boosted
  trees, the conditioning here is adaptive equal-population binning: a k-d tree over the conditioning variables
  (standardised; split at the pooled median, cycling through the variables) grown while each side keeps at least
  ``min_per_bin`` MC and data events; one 1D map per leaf.  In the limit of fine bins this is the Knothe–Rosenblatt
  map, the exact correction when the true conditionals are continuous.

Empirical CDF conventions (weights ``w``, total ``W``; atoms = distinct values, ``C_k`` the cumulative weight up to
and including atom ``k``):  single-valued atoms sit at the midpoint ``(C_k − w_k/2)/W`` and the CDF / quantile
function interpolate linearly between them; *spikes* (a value taken by more than one event, e.g. isolation = 0)
occupy the whole interval ``[C_k − w_k, C_k]/W`` -- an MC event in a spike gets a uniform random level inside it
(randomised probability integral transform), and data levels inside a data spike return the spike value exactly.
Negative weights are allowed; the cumulative sums are made non-decreasing (running maximum) before normalising.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["ChainedQuantileMapper", "QuantileMapper"]


def _as_2d(x, name: str) -> np.ndarray:
    x = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (n, n_variables), got {x.shape}")
    return x


def _as_weights(w, n: int, name: str) -> np.ndarray:
    if w is None:
        return np.ones(n)
    w = np.asarray(w.detach().cpu().numpy() if hasattr(w, "detach") else w, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {w.shape}")
    if not np.isfinite(w).all() or not w.sum() > 0:
        raise ValueError(f"{name} must be finite with a positive total")
    return w


class _ECDF:
    """Weighted empirical distribution of one variable (see the module docstring for the conventions)."""

    def __init__(self, x: np.ndarray, w: np.ndarray):
        keep = np.isfinite(x)
        x, w = x[keep], w[keep]
        if len(x) == 0:
            raise ValueError("no finite values to fit")
        values, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
        mass = np.bincount(inverse, weights=w, minlength=len(values))
        cum = np.maximum.accumulate(np.cumsum(mass))
        total = cum[-1]
        if not total > 0:
            raise ValueError("the total weight must be positive")
        hi = cum / total
        lo = np.concatenate([[0.0], hi[:-1]])
        spike = counts > 1
        # knots (level, value): spikes span [lo, hi], single atoms sit at the midpoint
        levels = np.where(spike, lo, 0.5 * (lo + hi))
        lv = [levels, hi[spike]]
        vv = [values, values[spike]]
        order = np.argsort(
            np.concatenate([np.arange(len(values)) * 2.0, np.flatnonzero(spike) * 2.0 + 1]), kind="stable"
        )
        self.levels = np.concatenate(lv)[order]
        self.knots = np.concatenate(vv)[order]
        self.values, self.lo, self.hi, self.spike = values, lo, hi, spike

    def cdf(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Levels in (0, 1); values on a spike get a uniform level inside it."""
        u = np.interp(x, self.knots, self.levels)
        k = np.searchsorted(self.values, x)
        k = np.clip(k, 0, len(self.values) - 1)
        on_spike = (self.values[k] == x) & self.spike[k]
        if on_spike.any():
            lo, hi = self.lo[k[on_spike]], self.hi[k[on_spike]]
            u[on_spike] = lo + rng.random(int(on_spike.sum())) * (hi - lo)
        return u

    def quantile(self, u: np.ndarray) -> np.ndarray:
        return np.interp(u, self.levels, self.knots)


class _Map1D:
    def __init__(self, mc: np.ndarray, w_mc: np.ndarray, data: np.ndarray, w_data: np.ndarray):
        self.mc, self.data = _ECDF(mc, w_mc), _ECDF(data, w_data)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = np.array(x, dtype=np.float64, copy=True)
        ok = np.isfinite(x)
        out[ok] = self.data.quantile(self.mc.cdf(x[ok], rng))
        return out


def _check_names(names: Sequence[str] | None, d: int, what: str) -> list[str]:
    if names is None:
        return [f"x{i}" for i in range(d)]
    names = list(names)
    if len(names) != d or len(set(names)) != d:
        raise ValueError(f"{what} names {names} must be {d} distinct names, one per column")
    return names


class QuantileMapper:
    """Per-variable quantile mapping MC -> data (weighted); ``fit`` then ``transform``.

    Args:
        seed: seed of the randomised probability integral transform for spikes.
    """

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.names: list[str] | None = None
        self._maps: list[_Map1D] = []

    def fit(self, mc, data, mc_weights=None, data_weights=None, names: Sequence[str] | None = None) -> QuantileMapper:
        """Fit on ``mc (n, d)`` and ``data (m, d)`` with optional per-event weights."""
        mc, data = _as_2d(mc, "mc"), _as_2d(data, "data")
        if mc.shape[1] != data.shape[1]:
            raise ValueError(f"mismatched variables: mc has {mc.shape[1]} columns, data {data.shape[1]}")
        if len(mc) == 0 or len(data) == 0:
            raise ValueError(f"empty selection: {len(mc)} MC and {len(data)} data events")
        self.names = _check_names(names, mc.shape[1], "variable")
        wm, wd = _as_weights(mc_weights, len(mc), "mc_weights"), _as_weights(data_weights, len(data), "data_weights")
        self._maps = []
        for j, name in enumerate(self.names):
            try:
                self._maps.append(_Map1D(mc[:, j], wm, data[:, j], wd))
            except ValueError as err:
                raise ValueError(f"variable {name!r}: {err} (all-NaN column?)") from err
        return self

    def _check(self, x, names) -> np.ndarray:
        if self.names is None:
            raise RuntimeError("call fit() before transform()")
        x = _as_2d(x, "mc")
        if x.shape[1] != len(self.names) or (names is not None and list(names) != self.names):
            got = list(names) if names is not None else f"{x.shape[1]} columns"
            raise ValueError(f"mismatched variables: fitted on {self.names}, got {got}")
        return x

    def transform(self, mc, names: Sequence[str] | None = None, seed: int | None = None) -> np.ndarray:
        """Corrected copy of ``mc (n, d)`` (NaN entries stay NaN)."""
        x = self._check(mc, names)
        rng = np.random.default_rng(self.seed if seed is None else seed)
        return np.stack([m(x[:, j], rng) for j, m in enumerate(self._maps)], axis=1)


class _KDBins:
    """Equal-population k-d tree over standardised conditioning variables (pooled MC + data)."""

    def __init__(self, mc: np.ndarray, data: np.ndarray, min_per_bin: int, max_depth: int):
        pooled = np.concatenate([mc, data])
        self.mean = pooled.mean(0)
        self.std = np.where(pooled.std(0) > 0, pooled.std(0), 1.0)
        self.feature: list[int] = []
        self.threshold: list[float] = []
        self.children: list[tuple[int, int]] = []
        self.n_leaves = 0
        self.leaf: list[int] = []
        self._grow((mc - self.mean) / self.std, (data - self.mean) / self.std, 0, min_per_bin, max_depth)

    def _grow(self, mc: np.ndarray, data: np.ndarray, depth: int, min_per_bin: int, max_depth: int) -> int:
        node = len(self.feature)
        self.feature.append(-1)
        self.threshold.append(0.0)
        self.children.append((-1, -1))
        self.leaf.append(-1)
        d = mc.shape[1]
        if d > 0 and depth < max_depth and len(mc) >= 2 * min_per_bin and len(data) >= 2 * min_per_bin:
            for f in [(depth + i) % d for i in range(d)]:
                t = float(np.median(np.concatenate([mc[:, f], data[:, f]])))
                lm, ld = mc[:, f] <= t, data[:, f] <= t
                sizes = (lm.sum(), (~lm).sum(), ld.sum(), (~ld).sum())
                if min(sizes) >= min_per_bin:
                    self.feature[node], self.threshold[node] = f, t
                    left = self._grow(mc[lm], data[ld], depth + 1, min_per_bin, max_depth)
                    right = self._grow(mc[~lm], data[~ld], depth + 1, min_per_bin, max_depth)
                    self.children[node] = (left, right)
                    return node
        self.leaf[node] = self.n_leaves
        self.n_leaves += 1
        return node

    def assign(self, c: np.ndarray) -> np.ndarray:
        """Leaf index of each row."""
        z = (c - self.mean) / self.std
        feature, threshold = np.asarray(self.feature), np.asarray(self.threshold)
        children, leaf = np.asarray(self.children).reshape(-1, 2), np.asarray(self.leaf)
        node = np.zeros(len(z), dtype=np.int64)
        rows = np.arange(len(z))
        while len(rows):
            feat = feature[node[rows]]
            rows, feat = rows[feat >= 0], feat[feat >= 0]
            go_left = z[rows, feat] <= threshold[node[rows]]
            kids = children[node[rows]]
            node[rows] = np.where(go_left, kids[:, 0], kids[:, 1])
        return leaf[node]


class ChainedQuantileMapper:
    """Chained conditional quantile mapping (CMS style) with k-d-tree binning of the conditioning variables.

    Args:
        min_per_bin: minimum number of MC and of data events per bin (per side of each split).
        max_depth: maximum depth of each k-d tree (``2**max_depth`` bins at most).
        order: indices of the corrected variables in the order they are corrected (default: column order).
        seed: seed of the randomised PIT for spikes.
    """

    def __init__(self, min_per_bin: int = 500, max_depth: int = 8, order: Sequence[int] | None = None, seed: int = 0):
        if min_per_bin < 1:
            raise ValueError(f"min_per_bin must be >= 1, got {min_per_bin}")
        self.min_per_bin, self.max_depth, self.order, self.seed = min_per_bin, max_depth, order, seed
        self.names: list[str] | None = None
        self.context_names: list[str] | None = None
        self._steps: list[tuple[int, _KDBins, list[_Map1D]]] = []

    def fit(
        self,
        mc,
        mc_context,
        data,
        data_context,
        mc_weights=None,
        data_weights=None,
        names: Sequence[str] | None = None,
        context_names: Sequence[str] | None = None,
    ) -> ChainedQuantileMapper:
        """Fit on MC ``(n, d)`` with context ``(n, k)`` and data ``(m, d)`` with context ``(m, k)``."""
        mc, data = _as_2d(mc, "mc"), _as_2d(data, "data")
        cm, cd = _as_2d(mc_context, "mc_context"), _as_2d(data_context, "data_context")
        if mc.shape[1] != data.shape[1] or cm.shape[1] != cd.shape[1]:
            raise ValueError(
                f"mismatched variables: mc/data have {mc.shape[1]}/{data.shape[1]} columns, "
                f"contexts {cm.shape[1]}/{cd.shape[1]}"
            )
        if len(cm) != len(mc) or len(cd) != len(data):
            raise ValueError("each context must have one row per event")
        if len(mc) == 0 or len(data) == 0:
            raise ValueError(f"empty selection: {len(mc)} MC and {len(data)} data events")
        d = mc.shape[1]
        self.names = _check_names(names, d, "variable")
        self.context_names = _check_names(context_names, cm.shape[1], "context")
        order = list(range(d)) if self.order is None else [int(i) for i in self.order]
        if sorted(order) != list(range(d)):
            raise ValueError(f"order must be a permutation of range({d}), got {order}")
        wm, wd = _as_weights(mc_weights, len(mc), "mc_weights"), _as_weights(data_weights, len(data), "data_weights")
        for j, name in enumerate(self.names):
            if not np.isfinite(mc[:, j]).any() or not np.isfinite(data[:, j]).any():
                raise ValueError(f"variable {name!r} has no finite values (all-NaN column)")
        rng = np.random.default_rng(self.seed)
        corrected = mc.copy()
        self._steps = []
        done: list[int] = []
        for j in order:
            cond_mc = np.concatenate([cm, corrected[:, done]], axis=1)
            cond_data = np.concatenate([cd, data[:, done]], axis=1)
            bins = _KDBins(cond_mc, cond_data, self.min_per_bin, self.max_depth)
            leaf_mc, leaf_data = bins.assign(cond_mc), bins.assign(cond_data)
            maps = []
            for b in range(bins.n_leaves):
                im, idd = leaf_mc == b, leaf_data == b
                maps.append(_Map1D(mc[im, j], wm[im], data[idd, j], wd[idd]))
                corrected[im, j] = maps[-1](mc[im, j], rng)
            self._steps.append((j, bins, maps))
            done.append(j)
        return self

    def transform(self, mc, mc_context, names: Sequence[str] | None = None, seed: int | None = None) -> np.ndarray:
        """Corrected copy of ``mc (n, d)`` given its context ``(n, k)``."""
        if self.names is None:
            raise RuntimeError("call fit() before transform()")
        x, c = _as_2d(mc, "mc"), _as_2d(mc_context, "mc_context")
        if x.shape[1] != len(self.names) or (names is not None and list(names) != self.names):
            raise ValueError(f"mismatched variables: fitted on {self.names}, got {names or x.shape[1]}")
        if c.shape != (len(x), len(self.context_names)):
            raise ValueError(f"mc_context must have shape ({len(x)}, {len(self.context_names)}), got {c.shape}")
        rng = np.random.default_rng(self.seed + 1 if seed is None else seed)
        out = x.copy()
        done: list[int] = []
        for j, bins, maps in self._steps:
            leaf = bins.assign(np.concatenate([c, out[:, done]], axis=1))
            for b in np.unique(leaf):
                idx = leaf == b
                out[idx, j] = maps[b](x[idx, j], rng)
            done.append(j)
        return out

    @property
    def n_bins(self) -> list[int]:
        """Number of bins used for each corrected variable (in correction order)."""
        return [bins.n_leaves for _, bins, _ in self._steps]
