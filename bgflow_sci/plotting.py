"""Plots shared by the CLI, tutorials and benchmarks (matplotlib, Agg backend, PNG output)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from .training.trainer import read_metrics  # noqa: E402


def _np(t: Tensor | np.ndarray) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, Tensor) else np.asarray(t)


def grid_2d(extent: Sequence[float], n: int = 200) -> tuple[np.ndarray, np.ndarray, Tensor]:
    """A ``n x n`` grid over ``extent = (x0, x1, y0, y1)``; returns mesh arrays and the flat ``(n*n, 2)`` points."""
    xs, ys = np.linspace(extent[0], extent[1], n), np.linspace(extent[2], extent[3], n)
    xx, yy = np.meshgrid(xs, ys)
    return xx, yy, torch.as_tensor(np.stack([xx.ravel(), yy.ravel()], -1), dtype=torch.float64)


def plot_2d_densities(
    log_densities: Mapping[str, Callable[[Tensor], Tensor]],
    extent: Sequence[float],
    path: str | Path,
    samples: Mapping[str, Tensor] | None = None,
    n: int = 200,
) -> Path:
    """Side-by-side images of normalised 2D densities ``exp(log_density(points))`` over ``extent``."""
    xx, yy, pts = grid_2d(extent, n)
    cell = (extent[1] - extent[0]) * (extent[3] - extent[2]) / (n - 1) ** 2
    fig, axes = plt.subplots(1, len(log_densities), figsize=(4.2 * len(log_densities), 3.8), squeeze=False)
    for ax, (name, fn) in zip(axes[0], log_densities.items()):
        with torch.no_grad():
            logp = _np(fn(pts)).reshape(xx.shape)
        p = np.exp(logp - np.nanmax(logp))
        p /= np.nansum(p) * cell
        ax.imshow(p, extent=extent, origin="lower", aspect="auto", cmap="viridis")
        if samples and name in samples:
            s = _np(samples[name])[:2000]
            ax.scatter(s[:, 0], s[:, 1], s=1, c="w", alpha=0.3)
        ax.set(title=name, xlabel="$x_1$", ylabel="$x_2$")
    fig.tight_layout()
    return _save(fig, path)


def plot_free_energy_profiles(
    profiles: Mapping[str, object],
    path: str | Path,
    exact: tuple[Tensor | np.ndarray, Tensor | np.ndarray] | None = None,
    xlabel: str = "$x_1$",
    ylim: tuple[float, float] | None = None,
) -> Path:
    """Free-energy profiles (objects with ``centers``, ``free_energy`` and optional ``error``) with error bars.

    ``ylim`` fixes the energy axis (kT) so that a few huge error bars of sparse bins do not flatten the plot."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    if exact is not None:
        ax.plot(_np(exact[0]), _np(exact[1]), "k-", lw=2, label="exact", zorder=0)
    for name, prof in profiles.items():
        c, f = _np(prof.centers), _np(prof.free_energy)
        err = getattr(prof, "error", None)
        ok = np.isfinite(f)
        if err is None:
            ax.plot(c[ok], f[ok], "--", label=name)
        else:
            ax.errorbar(c[ok], f[ok], yerr=np.nan_to_num(_np(err)[ok]), fmt="o", ms=3, capsize=2, label=name)
    ax.set(xlabel=xlabel, ylabel="free energy / kT")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [(r["step"], r[key]) for r in history if r.get(key) is not None]
    if not rows:
        return np.empty(0), np.empty(0)
    steps, vals = zip(*rows)
    return np.asarray(steps, dtype=float), np.asarray(vals, dtype=float)


def plot_metrics(
    history_or_path: Iterable[Mapping[str, Any]] | str | os.PathLike,
    out_png: str | os.PathLike,
    log_scale: bool = False,
    keys: Sequence[str] | None = None,
) -> Path:
    """Plot training curves (loss terms and total; learning rate; gradient norm; batch ESS of energy-based
    losses when logged, ``*/ess``) into a PNG (Agg, no pyplot).

    ``log_scale`` uses a log y-axis for the losses (symlog when a curve is not positive); ``keys`` selects the
    curves of the first panel (default: every ``loss/*`` and ``constraint/*`` term and ``total``).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if isinstance(history_or_path, (str, os.PathLike)):
        history = read_metrics(history_or_path)
    else:
        history = list(history_or_path)
    if keys is None:
        keys = sorted({k for r in history for k in r if k.startswith(("loss/", "constraint/"))}) + ["total"]

    ess_keys = sorted({k for r in history for k in r if k.endswith("/ess")})
    fig = Figure(figsize=(7, 7.5 + 1.5 * bool(ess_keys)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(3 + bool(ess_keys), 1, sharex=True, height_ratios=[3, 1, 1] + [1] * bool(ess_keys))
    ax_loss, ax_lr, ax_grad = axes[:3]
    for key in ess_keys:
        x, y = _series(history, key)
        axes[3].plot(x, y, lw=0.5, alpha=0.4, label=f"{key} (batch)")
        if len(y) >= 20:  # running mean over 20 logged steps
            axes[3].plot(x[19:], np.convolve(y, np.ones(20) / 20, mode="valid"), lw=1.2, label=f"{key}, mean of 20")
    if ess_keys:
        axes[3].set_ylabel("ESS / n")
        axes[3].set_ylim(0, None)
        axes[3].legend(fontsize="small")
    positive = True
    for key in keys:
        x, y = _series(history, key)
        if len(x):
            ax_loss.plot(x, y, label=key, lw=1)
            positive &= bool(np.all(y[np.isfinite(y)] > 0))
    skipped = [r["step"] for r in history if r.get("skipped")]
    for s in skipped:
        ax_loss.axvline(s, color="red", lw=0.5, alpha=0.5)
    if log_scale:
        ax_loss.set_yscale("log" if positive else "symlog")
    ax_loss.set_ylabel("loss")
    if ax_loss.lines:
        ax_loss.legend(fontsize="small")
    ax_lr.plot(*_series(history, "lr"), color="k", lw=1)
    ax_lr.set_ylabel("lr")
    x, y = _series(history, "grad_norm")
    ax_grad.plot(x, y, color="tab:gray", lw=1)
    if log_scale and len(y) and np.all(y[np.isfinite(y)] > 0):
        ax_grad.set_yscale("log")
    ax_grad.set_ylabel("grad norm")
    axes[-1].set_xlabel("step")
    title = f"{len(history)} logged steps"
    if skipped:
        title += f", {len(skipped)} skipped (red)"
    ax_loss.set_title(title)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    return out_png


def plot_2d_histograms(
    panels: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    path: str | Path,
    xlabel: str = "$x_1$",
    ylabel: str = "$x_2$",
    bins: int = 60,
    extent: Sequence[float] | None = None,
    vmax: float = 8.0,
) -> Path:
    """Free-energy maps ``-log p`` (kT, minimum 0, capped at ``vmax``) of weighted 2D samples, side by side.

    ``panels``: ``{title: (x, y, weights or None)}``; ``extent`` defaults to ``(-π, π, -π, π)`` when every
    value lies there (torsions, e.g. a Ramachandran plot) and to the data range otherwise.
    """
    xs = np.concatenate([np.asarray(p[0]) for p in panels.values()])
    ys = np.concatenate([np.asarray(p[1]) for p in panels.values()])
    if extent is None:
        on_circle = np.abs(xs).max() <= np.pi + 1e-6 and np.abs(ys).max() <= np.pi + 1e-6
        extent = (-np.pi, np.pi, -np.pi, np.pi) if on_circle else (xs.min(), xs.max(), ys.min(), ys.max())
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), squeeze=False)
    image = None
    for ax, (name, (x, y, w)) in zip(axes[0], panels.items()):
        h, _, _ = np.histogram2d(x, y, bins=bins, range=[extent[:2], extent[2:]], weights=w, density=True)
        with np.errstate(divide="ignore"):
            f = -np.log(h.T)
        f = f - np.min(f[np.isfinite(f)]) if np.isfinite(f).any() else f
        image = ax.imshow(f, extent=extent, origin="lower", vmin=0, vmax=vmax, cmap="viridis", aspect="auto")
        ax.set(title=name, xlabel=xlabel, ylabel=ylabel)
    if image is not None:
        fig.colorbar(image, ax=list(axes[0]), label="free energy / kT", shrink=0.85)
    return _save(fig, path)
