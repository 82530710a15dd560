"""PNG plots for sim-to-data comparisons: per-variable histograms with a ratio panel, correlation matrices, m_γγ.

Samples are passed as ``{label: x}`` or ``{label: (x, weights)}`` with ``x`` of shape ``(n, d)`` (or ``(n,)``); the
first entry (conventionally ``"data"``) is the reference of the ratio panels and is drawn as points with
Poisson (sum of squared weights) error bars.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .metrics import weighted_correlation  # noqa: E402

__all__ = ["plot_correlations", "plot_mass", "plot_variables"]


def _unpack(samples: Mapping[str, Any]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    if not samples:
        raise ValueError("no samples to plot")
    out = []
    for label, s in samples.items():
        x, w = s if isinstance(s, tuple) else (s, None)
        x = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
        x = x[:, None] if x.ndim == 1 else x
        w = np.ones(len(x)) if w is None else np.asarray(w, dtype=np.float64)
        if w.shape != (len(x),):
            raise ValueError(f"weights of {label!r} must have shape ({len(x)},), got {w.shape}")
        out.append((label, x, w))
    d = {x.shape[1] for _, x, _ in out}
    if len(d) != 1:
        raise ValueError(f"mismatched variables: samples have {sorted(d)} columns")
    return out


def _hist(x: np.ndarray, w: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ok = np.isfinite(x)
    h, _ = np.histogram(x[ok], edges, weights=w[ok])
    e2, _ = np.histogram(x[ok], edges, weights=w[ok] ** 2)
    norm = w[ok].sum() * np.diff(edges)
    return h / norm, np.sqrt(e2) / norm


def _edges(x: np.ndarray, bins: int, quantiles: tuple[float, float]) -> np.ndarray:
    x = x[np.isfinite(x)]
    lo, hi = np.quantile(x, quantiles)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def plot_variables(
    samples: Mapping[str, Any],
    path: str | os.PathLike,
    names: Sequence[str] | None = None,
    bins: int = 50,
    quantiles: tuple[float, float] = (0.001, 0.999),
    log_y: Sequence[str] = (),
    ncols: int = 3,
) -> Path:
    """Normalised histogram of every column for every sample, with a ratio-to-reference panel underneath."""
    items = _unpack(samples)
    d = items[0][1].shape[1]
    names = list(names) if names is not None else [f"x{j}" for j in range(d)]
    if len(names) != d:
        raise ValueError(f"mismatched variables: {len(names)} names for {d} columns")
    ncols = min(ncols, d)
    nrows = (d + ncols - 1) // ncols
    fig = plt.figure(figsize=(4.2 * ncols, 4.2 * nrows))
    grid = fig.add_gridspec(2 * nrows, ncols, height_ratios=[3, 1] * nrows, hspace=0.08)
    ref_label, ref_x, ref_w = items[0]
    for j, name in enumerate(names):
        r, c = divmod(j, ncols)
        ax, rax = fig.add_subplot(grid[2 * r, c]), None
        rax = fig.add_subplot(grid[2 * r + 1, c], sharex=ax)
        edges = _edges(ref_x[:, j], bins, quantiles)
        centers = 0.5 * (edges[1:] + edges[:-1])
        ref_h, ref_e = _hist(ref_x[:, j], ref_w, edges)
        ax.errorbar(centers, ref_h, ref_e, fmt="o", ms=2.5, color="black", label=ref_label)
        with np.errstate(divide="ignore", invalid="ignore"):
            rax.errorbar(centers, np.ones_like(ref_h), ref_e / ref_h, fmt="o", ms=2, color="black")
            for label, x, w in items[1:]:
                h, _ = _hist(x[:, j], w, edges)
                ax.stairs(h, edges, label=label, lw=1.4)
                rax.stairs(h / ref_h, edges, lw=1.2)
        if name in log_y:
            ax.set_yscale("log")
        ax.set_ylabel("density")
        ax.tick_params(labelbottom=False)
        ax.set_title(name)
        rax.set_ylim(0.5, 1.5)
        rax.axhline(1.0, color="gray", lw=0.8)
        rax.set_ylabel(f"/ {ref_label}")
        rax.set_xlabel(name)
        if j == 0:
            ax.legend(fontsize=8)
    return _save(fig, path)


def plot_correlations(
    samples: Mapping[str, Any], path: str | os.PathLike, names: Sequence[str] | None = None, difference: bool = True
) -> Path:
    """Weighted correlation matrices side by side (and, with ``difference``, each minus the first sample's)."""
    items = _unpack(samples)
    d = items[0][1].shape[1]
    names = list(names) if names is not None else [f"x{j}" for j in range(d)]
    mats = [(label, weighted_correlation(x, w)) for label, x, w in items]
    rows = 2 if difference and len(items) > 1 else 1
    fig, axes = plt.subplots(rows, len(items), figsize=(3.6 * len(items), 3.4 * rows), squeeze=False)
    ref = mats[0][1]
    for i, (label, m) in enumerate(mats):
        panels = [(axes[0, i], m, f"{label}", 1.0)]
        if rows == 2:
            panels.append((axes[1, i], m - ref, f"{label} − {mats[0][0]}", 0.2))
        for ax, mat, title, vmax in panels:
            im = ax.imshow(mat, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            ax.set_xticks(range(d), names, rotation=60, fontsize=7)
            ax.set_yticks(range(d), names, fontsize=7)
            ax.set_title(title, fontsize=9)
            for a in range(d):
                for b in range(d):
                    ax.text(b, a, f"{mat[a, b]:.2f}", ha="center", va="center", fontsize=6)
            fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)


def plot_mass(
    samples: Mapping[str, Any],
    path: str | os.PathLike,
    bins: int = 80,
    range_: tuple[float, float] = (100.0, 180.0),
    xlabel: str = r"$m_{\gamma\gamma}$ [GeV]",
) -> Path:
    """Normalised invariant-mass histograms (``{label: m}`` or ``{label: (m, w)}``) with a ratio panel."""
    items = _unpack(samples)
    edges = np.linspace(*range_, bins + 1)
    centers = 0.5 * (edges[1:] + edges[:-1])
    fig, (ax, rax) = plt.subplots(2, 1, figsize=(6, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ref_label, ref_x, ref_w = items[0]
    ref_h, ref_e = _hist(ref_x[:, 0], ref_w, edges)
    ax.errorbar(centers, ref_h, ref_e, fmt="o", ms=2.5, color="black", label=ref_label)
    with np.errstate(divide="ignore", invalid="ignore"):
        for label, x, w in items[1:]:
            h, _ = _hist(x[:, 0], w, edges)
            ax.stairs(h, edges, label=label, lw=1.4)
            rax.stairs(h / ref_h, edges, lw=1.2)
    rax.axhline(1.0, color="gray", lw=0.8)
    rax.set_ylim(0.5, 1.5)
    rax.set_xlabel(xlabel)
    rax.set_ylabel(f"/ {ref_label}")
    ax.set_ylabel("density")
    ax.legend()
    return _save(fig, path)


def _save(fig: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
