"""Distances between data and (corrected) simulation, all with per-event weights.

* :func:`wasserstein_1d`: per-variable 1D Wasserstein-1 distances (``scipy.stats.wasserstein_distance``);
* :func:`weighted_correlation`, :func:`correlation_difference`: Pearson correlation matrices and the Frobenius norm
  of their difference;
* :func:`classifier_auc`: classifier two-sample test (Lopez-Paz & Oquab, ICLR 2017): a small MLP trained to separate
  data from corrected MC on one split, ROC AUC on a held-out split (0.5: indistinguishable);
* :func:`mmd_test`: MMD² with multi-scale RBF kernels and its permutation p-value (:mod:`bgflow_sci.training.mmd`);
* :func:`compare`: all of them for several candidates against the same data.

Inputs are ``(n, d)`` numpy arrays or tensors (``(n,)`` for a single variable); weights ``(n,)`` or ``None``.
Negative weights: the correlation and MMD estimators use them as they are; Wasserstein distances and the classifier
need non-negative weights, so negative weights are set to zero there (with a warning).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy.stats import wasserstein_distance
from torch import nn

from ..training.mmd import MultiScaleRBF, mmd_permutation_test

__all__ = [
    "classifier_auc",
    "compare",
    "correlation_difference",
    "format_table",
    "mmd_test",
    "wasserstein_1d",
    "weighted_auc",
    "weighted_correlation",
]


def _np2d(x, name: str) -> np.ndarray:
    x = np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (n, d) or (n,), got {x.shape}")
    if len(x) == 0:
        raise ValueError(f"{name} is empty (empty selection)")
    return x


def _w(w, n: int, name: str, nonnegative: bool = False) -> np.ndarray:
    if w is None:
        return np.ones(n)
    w = np.asarray(w.detach().cpu().numpy() if isinstance(w, torch.Tensor) else w, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {w.shape}")
    if nonnegative and (w < 0).any():
        warnings.warn(f"{name}: {int((w < 0).sum())} negative weights set to 0 for this metric", stacklevel=3)
        w = np.clip(w, 0.0, None)
    if not np.isfinite(w).all() or not w.sum() > 0:
        raise ValueError(f"{name} must be finite with a positive total")
    return w


def _pair(x, y, xn: str = "x", yn: str = "y") -> tuple[np.ndarray, np.ndarray]:
    x, y = _np2d(x, xn), _np2d(y, yn)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"mismatched variables: {xn} has {x.shape[1]} columns, {yn} has {y.shape[1]}")
    return x, y


def wasserstein_1d(x, y, x_weights=None, y_weights=None) -> np.ndarray:
    """Per-column Wasserstein-1 distance ``(d,)`` between the weighted marginals of ``x`` and ``y``."""
    x, y = _pair(x, y)
    wx, wy = _w(x_weights, len(x), "x_weights", True), _w(y_weights, len(y), "y_weights", True)
    out = np.empty(x.shape[1])
    for j in range(x.shape[1]):
        fx, fy = np.isfinite(x[:, j]), np.isfinite(y[:, j])
        if not fx.any() or not fy.any():
            raise ValueError(f"column {j} has no finite values (all-NaN column)")
        out[j] = wasserstein_distance(x[fx, j], y[fy, j], wx[fx], wy[fy])
    return out


def weighted_correlation(x, weights=None) -> np.ndarray:
    """Weighted Pearson correlation matrix ``(d, d)`` (rows with a non-finite entry are dropped)."""
    x = _np2d(x, "x")
    w = _w(weights, len(x), "weights")
    ok = np.isfinite(x).all(1)
    x, w = x[ok], w[ok]
    if len(x) < 2:
        raise ValueError("correlation needs at least 2 finite rows")
    w = w / w.sum()
    xc = x - w @ x
    cov = (w[:, None] * xc).T @ xc
    sd = np.sqrt(np.clip(np.diag(cov), 1e-300, None))
    return cov / np.outer(sd, sd)


def correlation_difference(x, y, x_weights=None, y_weights=None) -> float:
    """Frobenius norm ``‖corr(x) − corr(y)‖_F`` of the weighted correlation matrices."""
    x, y = _pair(x, y)
    return float(np.linalg.norm(weighted_correlation(x, x_weights) - weighted_correlation(y, y_weights)))


def weighted_auc(scores, labels, weights=None) -> float:
    """ROC AUC ``P(s₊ > s₋) + ½ P(s₊ = s₋)`` with per-sample weights (the weighted Mann–Whitney statistic)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    w = _w(weights, len(s), "weights", True)
    if y.all() or not y.any():
        raise ValueError("AUC needs samples of both classes")
    uniq, inv = np.unique(s, return_inverse=True)
    pos = np.bincount(inv, weights=w * y, minlength=len(uniq))
    neg = np.bincount(inv, weights=w * ~y, minlength=len(uniq))
    below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])
    return float((pos * (below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))


def classifier_auc(
    data,
    mc,
    data_weights=None,
    mc_weights=None,
    hidden: Sequence[int] = (64, 64),
    epochs: int = 20,
    batch_size: int = 256,
    lr: float = 3e-3,
    test_fraction: float = 0.4,
    max_events: int | None = 20_000,
    seed: int = 0,
) -> float:
    """Held-out ROC AUC of an MLP separating ``data`` (label 1) from ``mc`` (label 0).

    Each sample is split (``test_fraction`` held out); features are standardised with training statistics; the
    weighted binary cross-entropy uses class-balanced weights (each class sums to the same total); Adam for
    ``epochs`` passes.  Deterministic for a given ``seed`` and does not touch the global RNG state.  At most
    ``max_events`` per class are used (random subsample).  ≈ 0.5 means the classifier cannot tell them apart.
    """
    xd, xm = _pair(data, mc, "data", "mc")
    wd, wm = _w(data_weights, len(xd), "data_weights", True), _w(mc_weights, len(xm), "mc_weights", True)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)

    def split(x, w):
        idx = rng.permutation(len(x))
        idx = idx[np.isfinite(x[idx]).all(1)]
        if max_events is not None:
            idx = idx[:max_events]
        n_test = int(round(test_fraction * len(idx)))
        if n_test < 1 or len(idx) - n_test < 1:
            raise ValueError(f"too few events ({len(idx)}) for a train/test split")
        return (x[idx[n_test:]], w[idx[n_test:]]), (x[idx[:n_test]], w[idx[:n_test]])

    (xd_tr, wd_tr), (xd_te, wd_te) = split(xd, wd)
    (xm_tr, wm_tr), (xm_te, wm_te) = split(xm, wm)
    x_tr = np.concatenate([xd_tr, xm_tr])
    mu, sd = x_tr.mean(0), x_tr.std(0)
    sd[sd == 0] = 1.0
    y_tr = np.concatenate([np.ones(len(xd_tr)), np.zeros(len(xm_tr))])
    w_tr = np.concatenate([wd_tr / wd_tr.sum(), wm_tr / wm_tr.sum()]) * len(x_tr) / 2
    x_te = np.concatenate([xd_te, xm_te])
    y_te = np.concatenate([np.ones(len(xd_te)), np.zeros(len(xm_te))])
    w_te = np.concatenate([wd_te / wd_te.sum(), wm_te / wm_te.sum()])

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        width = x_tr.shape[1]
        for h in hidden:
            layers += [nn.Linear(width, h), nn.SiLU()]
            width = h
        net = nn.Sequential(*layers, nn.Linear(width, 1))
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        xt = torch.from_numpy((x_tr - mu) / sd).float()
        yt, wt = torch.from_numpy(y_tr).float(), torch.from_numpy(w_tr).float()
        gen = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            perm = torch.randperm(len(xt), generator=gen)
            for i in range(0, len(xt), batch_size):
                b = perm[i : i + batch_size]
                logits = net(xt[b]).squeeze(-1)
                loss = (wt[b] * nn.functional.binary_cross_entropy_with_logits(logits, yt[b], reduction="none")).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            scores = net(torch.from_numpy((x_te - mu) / sd).float()).squeeze(-1).double().numpy()
    return weighted_auc(scores, y_te, w_te)


def mmd_test(
    x,
    y,
    x_weights=None,
    y_weights=None,
    n_permutations: int = 200,
    max_events: int | None = 2000,
    standardize: bool = True,
    seed: int = 0,
) -> tuple[float, float]:
    """Biased MMD² (multi-scale RBF, median bandwidth) and its permutation p-value; returns ``(mmd2, p)``.

    Variables are standardised with ``y``'s (weighted) mean and std if ``standardize``; at most ``max_events`` per
    sample are used (random subsample, the kernel matrix is ``(n + m)²``).
    """
    x, y = _pair(x, y)
    wx, wy = _w(x_weights, len(x), "x_weights"), _w(y_weights, len(y), "y_weights")
    rng = np.random.default_rng(seed)
    ix = rng.permutation(len(x))[:max_events] if max_events else np.arange(len(x))
    iy = rng.permutation(len(y))[:max_events] if max_events else np.arange(len(y))
    x, wx, y, wy = x[ix], wx[ix], y[iy], wy[iy]
    if standardize:
        wn = wy / wy.sum()
        mu = wn @ y
        sd = np.sqrt(wn @ (y - mu) ** 2)
        sd[sd == 0] = 1.0
        x, y = (x - mu) / sd, (y - mu) / sd
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    kernel = MultiScaleRBF.from_data(xt, yt, seed=seed)
    return mmd_permutation_test(xt, yt, kernel, torch.from_numpy(wx), torch.from_numpy(wy), n_permutations, seed)


def compare(
    data,
    candidates: Mapping[str, Any],
    data_weights=None,
    names: Sequence[str] | None = None,
    auc: bool = True,
    mmd: bool = True,
    seed: int = 0,
    mmd_max_events: int | None = 2000,
    n_permutations: int = 200,
    **auc_kwargs: Any,
) -> dict[str, dict[str, Any]]:
    """All metrics of each candidate (``{label: x}`` or ``{label: (x, weights)}``) against ``data``.

    ``auc_kwargs`` go to :func:`classifier_auc`; ``mmd_max_events`` and ``n_permutations`` to :func:`mmd_test`.

    Returns ``{label: {"w1": {name: value}, "corr_diff": float, "auc": float, "mmd2": float, "mmd_p": float}}``.
    """
    xd = _np2d(data, "data")
    names = list(names) if names is not None else [f"x{j}" for j in range(xd.shape[1])]
    if len(names) != xd.shape[1]:
        raise ValueError(f"mismatched variables: {len(names)} names for {xd.shape[1]} data columns")
    out: dict[str, dict[str, Any]] = {}
    for label, cand in candidates.items():
        x, w = cand if isinstance(cand, tuple) else (cand, None)
        res: dict[str, Any] = {"w1": dict(zip(names, wasserstein_1d(x, xd, w, data_weights).tolist()))}
        res["corr_diff"] = correlation_difference(x, xd, w, data_weights)
        if auc:
            res["auc"] = classifier_auc(xd, x, data_weights, w, seed=seed, **auc_kwargs)
        if mmd:
            res["mmd2"], res["mmd_p"] = mmd_test(
                x, xd, w, data_weights, n_permutations=n_permutations, max_events=mmd_max_events, seed=seed
            )
        out[label] = res
    return out


def format_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown table of :func:`compare` results (one row per candidate)."""
    first = next(iter(results.values()))
    names = list(first["w1"])
    extra = [k for k in ("corr_diff", "auc", "mmd2", "mmd_p") if k in first]
    head = ["sample"] + [f"W1 {n}" for n in names] + extra
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, r in results.items():
        cells = [label] + [f"{r['w1'][n]:.4g}" for n in names] + [f"{r[k]:.4g}" for k in extra]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
