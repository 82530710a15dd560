"""PNG plots for sim-to-data comparisons in a CMS-like style: per-variable histograms with a ratio panel, ensemble
bands, correlation matrices, m_γγ.

Samples are passed as ``{label: x}`` or ``{label: (x, weights)}`` with ``x`` of shape ``(n, d)`` (or ``(n,)``); the
first entry (conventionally ``"data"``) is the reference: it is drawn as black points with ``sqrt(Σw²)`` error bars
(Poisson errors for unit weights), and every other sample as a step histogram with its ratio to the reference in a
panel underneath. The ratio's error bars propagate the ``Σw²`` errors of both histograms
(:func:`ratio_with_errors`). Events with a non-finite value or weight are left out; negative weights are used as
they are.

``bands={label: [member, ...]}`` adds the spread of an ensemble (one member sample per model of the ensemble, each in
the samples' format) as a shaded band, in the main and in the ratio panel: the per-bin min–max envelope of the member
histograms or their mean ± standard deviation (:func:`ensemble_band`).

Histograms are binned with ``hist`` (boost-histogram, weighted storage) and drawn with ``mplhep`` under
``mplhep.style.CMS``, applied only while a figure is drawn and saved (the global matplotlib settings are left as they
were). ``label="Simulation Preliminary"`` (with ``lumi`` in fb⁻¹ and ``com`` in TeV, both optional) adds an
experiment-style label via ``mplhep.label.exp_label``; by default there is none. Both packages come with
``pip install bgflow_sci[hep]``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

try:
    import hist  # noqa: E402
    import mplhep  # noqa: E402
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(f"bgflow_sci.hep.plots needs hist and mplhep: pip install bgflow_sci[hep] ({err})") from err

from .metrics import weighted_correlation  # noqa: E402

__all__ = ["ensemble_band", "plot_correlations", "plot_mass", "plot_variables", "ratio_with_errors"]

BAND_KINDS = ("envelope", "std")
_BAND_NAMES = {"envelope": "min–max", "std": "±1σ"}
_REF_COLOR = "black"


# --------------------------------------------------------------------------------------------------------------------
# pure helpers


def ratio_with_errors(h_num, var_num, h_den, var_den) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin ratio ``h_num / h_den`` and its statistical error.

    ``var_num`` and ``var_den`` are the bin variances (the sums of squared weights, scaled like the contents); the
    two histograms are taken as independent, so to first order
    ``err² = var_num / h_den² + h_num² · var_den / h_den⁴``. Bins with ``h_den == 0`` (or a non-finite input) give
    NaN in both outputs (matplotlib leaves them out).
    """
    n, vn = np.asarray(h_num, dtype=np.float64), np.asarray(var_num, dtype=np.float64)
    d, vd = np.asarray(h_den, dtype=np.float64), np.asarray(var_den, dtype=np.float64)
    if not (n.shape == vn.shape == d.shape == vd.shape):
        raise ValueError(
            f"ratio_with_errors: shapes differ (h_num {n.shape}, var_num {vn.shape}, h_den {d.shape}, "
            f"var_den {vd.shape})"
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        good = d != 0
        safe = np.where(good, d, 1.0)
        ratio = np.where(good, n / safe, np.nan)
        err = np.where(good, np.sqrt(vn / safe**2 + n**2 * vd / safe**4), np.nan)
    return ratio, err


def ensemble_band(member_values, kind: str = "envelope") -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper edge per bin of the band of an ensemble's histograms ``member_values`` ``(members, bins)``.

    ``kind="envelope"``: the per-bin minimum and maximum over the members; ``kind="std"``: the mean ∓ the standard
    deviation over the members (``ddof=1``; zero for a single member). NaN member bins are ignored; a bin that is
    NaN for every member stays NaN.
    """
    if kind not in BAND_KINDS:
        raise ValueError(f"band must be one of {BAND_KINDS}, got {kind!r}")
    v = np.asarray(member_values, dtype=np.float64)
    if v.ndim != 2 or len(v) == 0:
        raise ValueError(f"ensemble_band needs member histograms of shape (members, bins), got {v.shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bins
        if kind == "envelope":
            return np.nanmin(v, axis=0), np.nanmax(v, axis=0)
        mean = np.nanmean(v, axis=0)
        std = np.nanstd(v, axis=0, ddof=1) if len(v) > 1 else np.zeros_like(mean)
        std = np.where(np.isfinite(mean) & ~np.isfinite(std), 0.0, std)  # bins with a single finite member
        return mean - std, mean + std


def _fill(x: np.ndarray, w: np.ndarray, axis: Any, density: bool) -> tuple[np.ndarray, np.ndarray]:
    """Bin contents and variances of one variable on ``axis``; with ``density``, scaled to unit area in range."""
    ok = np.isfinite(x) & np.isfinite(w)
    h = hist.Hist(axis, storage=hist.storage.Weight())
    h.fill(x[ok], weight=w[ok])
    values, variances = h.values(flow=False).astype(np.float64), h.variances(flow=False).astype(np.float64)
    if density:
        area = float((values * axis.widths).sum())
        if not area > 0:
            nan = np.full_like(values, np.nan)
            return nan, nan
        values, variances = values / area, variances / area**2
    return values, variances


# --------------------------------------------------------------------------------------------------------------------
# input handling


def _as_array(a: Any) -> np.ndarray:
    return np.asarray(a.detach().cpu().numpy() if hasattr(a, "detach") else a, dtype=np.float64)


def _sample(label: str, s: Any) -> tuple[np.ndarray, np.ndarray]:
    x, w = s if isinstance(s, tuple) else (s, None)
    if isinstance(s, tuple) and len(s) != 2:
        raise ValueError(f"sample {label!r} must be x or (x, weights), got a tuple of {len(s)}")
    x = _as_array(x)
    x = x[:, None] if x.ndim == 1 else x
    if x.ndim != 2:
        raise ValueError(f"sample {label!r} must have shape (n, d) or (n,), got {x.shape}")
    w = np.ones(len(x)) if w is None else _as_array(w)
    if w.shape != (len(x),):
        raise ValueError(f"weights of {label!r} must have shape ({len(x)},), got {w.shape}")
    return x, w


def _unpack(samples: Mapping[str, Any]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    if not samples:
        raise ValueError("no samples to plot")
    out = [(label, *_sample(label, s)) for label, s in samples.items()]
    cols = {label: x.shape[1] for label, x, _ in out}
    if len(set(cols.values())) != 1:
        detail = ", ".join(f"{label!r}: {c}" for label, c in cols.items())
        raise ValueError(f"mismatched variables: samples have different numbers of columns ({detail})")
    return out


def _unpack_bands(bands: Mapping[str, Any] | None, d: int, kind: str) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    if kind not in BAND_KINDS:
        raise ValueError(f"band must be one of {BAND_KINDS}, got {kind!r}")
    out: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for label, members in (bands or {}).items():
        if isinstance(members, tuple) or not len(members):
            raise ValueError(f"band {label!r} must be a non-empty sequence of member samples (one per member)")
        out[label] = []
        for i, m in enumerate(members):
            x, w = _sample(f"{label}[{i}]", m)
            if x.shape[1] != d:
                raise ValueError(
                    f"mismatched variables: member {i} of band {label!r} has {x.shape[1]} columns, samples have {d}"
                )
            out[label].append((x, w))
    return out


def _edges(x: np.ndarray, bins: int, quantiles: tuple[float, float]) -> tuple[float, float]:
    x = x[np.isfinite(x)]
    lo, hi = np.quantile(x, quantiles)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return float(lo), float(hi)


# --------------------------------------------------------------------------------------------------------------------
# drawing


def _style(font_size: float) -> Any:
    """The CMS style with a figure-appropriate font size, as a context (nothing global changes)."""
    return plt.style.context([mplhep.style.CMS, {"font.size": font_size, "legend.fontsize": "x-small"}])


def _colors(labels: Sequence[str], band_labels: Sequence[str]) -> dict[str, str]:
    """The reference (first label) black; the others, then bands without a sample of their own, from the cycle."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0", "C1", "C2", "C3", "C4", "C5"])
    order = list(labels[1:]) + [b for b in band_labels if b not in labels]
    colors = {label: cycle[i % len(cycle)] for i, label in enumerate(order)}
    colors[labels[0]] = _REF_COLOR
    return colors


def _padded(v: np.ndarray) -> np.ndarray:
    return np.append(v, v[-1])


def _panel(
    ax: Any,
    rax: Any,
    items: list[tuple[str, np.ndarray, np.ndarray]],
    bands: dict[str, list[tuple[np.ndarray, np.ndarray]]],
    j: int,
    axis: Any,
    *,
    density: bool,
    band: str,
    colors: dict[str, str],
    log_y: bool,
    xlabel: str,
    ratio_range: tuple[float, float],
    legend: bool,
) -> None:
    """Column ``j`` of every sample (and band) on ``axis``: main panel ``ax``, ratio panel ``rax``."""
    edges = np.asarray(axis.edges)
    ref_label, ref_x, ref_w = items[0]
    ref_h, ref_var = _fill(ref_x[:, j], ref_w, axis, density)
    tops = [ref_h + np.sqrt(ref_var)]

    for label, members in bands.items():
        member_h = np.stack([_fill(x[:, j], w, axis, density)[0] for x, w in members])
        lo, hi = ensemble_band(member_h, band)
        name = f"{label}: {len(members)} members, {_BAND_NAMES[band]}"
        style = {"step": "post", "color": colors[label], "alpha": 0.3, "linewidth": 0}
        ax.fill_between(edges, _padded(lo), _padded(hi), label=name, **style)
        with np.errstate(divide="ignore", invalid="ignore"):
            rlo, rhi = np.where(ref_h != 0, lo / ref_h, np.nan), np.where(ref_h != 0, hi / ref_h, np.nan)
        rax.fill_between(edges, _padded(rlo), _padded(rhi), **style)
        tops.append(hi)

    for label, x, w in items[1:]:
        h, var = _fill(x[:, j], w, axis, density)
        color = colors[label]
        mplhep.histplot(h, edges, yerr=False, histtype="step", color=color, label=label, ax=ax, lw=2)
        ratio, err = ratio_with_errors(h, var, ref_h, ref_var)
        mplhep.histplot(ratio, edges, yerr=err, histtype="step", color=color, ax=rax, lw=1.5)
        tops.append(h)

    mplhep.histplot(ref_h, edges, yerr=np.sqrt(ref_var), histtype="errorbar", color=_REF_COLOR, label=ref_label, ax=ax)

    heights = np.concatenate(tops)
    top = float(np.nanmax(heights)) if np.isfinite(heights).any() else 1.0
    if log_y:
        ax.set_yscale("log")
        positive = heights[np.isfinite(heights) & (heights > 0)]
        bottom = 0.5 * positive.min() if len(positive) else 1e-3
        top = max(top, 10 * bottom)
        ax.set_ylim(bottom, top * (top / bottom) ** 0.45)  # room for the legend
    elif top > 0:
        ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.45 * top)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_ylabel("Density (unit area)" if density else "Events / bin")
    ax.tick_params(labelbottom=False)
    ax.set_xlabel("")
    if legend:
        ax.legend(loc="upper right")

    rax.axhline(1.0, color="gray", lw=1, ls="--")
    rax.set_ylim(*ratio_range)
    rax.yaxis.set_major_locator(MaxNLocator(nbins=4, prune="upper"))  # keep clear of the main panel's labels
    rax.set_xlim(edges[0], edges[-1])
    rax.set_xlabel(xlabel)
    rax.set_ylabel(f"/ {ref_label}", loc="center")


def _exp_label(
    ax: Any, label: str | None, lumi: float | str | None, com: float | str | None, exp: str, fontsize: float
) -> None:
    if label is None:
        return
    right = [f"{lumi} fb$^{{-1}}$" if lumi is not None else "", f"({com} TeV)" if com is not None else ""]
    # llabel/rlabel spelled out, so that neither "Simulation" nor a centre-of-mass energy is added on our behalf
    mplhep.label.exp_label(
        exp=exp, llabel=label, rlabel=" ".join(r for r in right if r), ax=ax, loc=0, fontsize=fontsize
    )


# --------------------------------------------------------------------------------------------------------------------
# public plots


def plot_variables(
    samples: Mapping[str, Any],
    path: str | os.PathLike,
    names: Sequence[str] | None = None,
    bins: int = 50,
    quantiles: tuple[float, float] = (0.001, 0.999),
    log_y: Sequence[str] = (),
    ncols: int = 3,
    *,
    density: bool = True,
    bands: Mapping[str, Sequence[Any]] | None = None,
    band: str = "envelope",
    label: str | None = None,
    lumi: float | str | None = None,
    com: float | str | None = None,
    exp: str = "bgflow_sci",
    ratio_range: tuple[float, float] = (0.5, 1.5),
) -> Path:
    """Histogram of every column for every sample, with a ratio-to-reference panel underneath each.

    The binning of a column spans the reference sample's ``quantiles``; with ``density`` every histogram is scaled to
    unit area in that range, otherwise the bins hold sums of weights. ``log_y`` names the columns drawn with a
    logarithmic y axis. ``bands={label: [member, ...]}`` draws an ensemble's spread (``band="envelope"`` or
    ``"std"``, see :func:`ensemble_band`) in the colour of the sample of that label (a new colour if there is none);
    members are ``(n, d)`` arrays or ``(x, weights)`` like the samples. ``label`` (e.g.
    ``"Simulation Preliminary"``), with optional ``lumi`` (fb⁻¹) and ``com`` (TeV), adds an experiment label
    ``exp`` above every panel. Returns ``path`` (PNG).
    """
    items = _unpack(samples)
    d = items[0][1].shape[1]
    names = list(names) if names is not None else [f"x{j}" for j in range(d)]
    if len(names) != d:
        raise ValueError(f"mismatched variables: {len(names)} names for {d} columns")
    band_items = _unpack_bands(bands, d, band)
    if ncols < 1:
        raise ValueError(f"ncols must be at least 1, got {ncols}")
    ncols = min(ncols, d)
    nrows = (d + ncols - 1) // ncols
    pooled = np.concatenate([x for _, x, _ in items])
    with _style(18):
        colors = _colors([lab for lab, _, _ in items], list(band_items))
        fig = plt.figure(figsize=(7.5 * ncols, 7.5 * nrows))
        outer = fig.add_gridspec(nrows, ncols, hspace=0.32, wspace=0.38)
        for j, name in enumerate(names):
            r, c = divmod(j, ncols)
            inner = outer[r, c].subgridspec(2, 1, height_ratios=[3, 1], hspace=0.0)
            ax = fig.add_subplot(inner[0])
            rax = fig.add_subplot(inner[1], sharex=ax)
            ref = items[0][1][:, j]
            source = ref if np.isfinite(ref).any() else pooled[:, j]
            if not np.isfinite(source).any():
                raise ValueError(f"variable {name!r}: no finite values in any sample")
            axis = hist.axis.Regular(bins, *_edges(source, bins, quantiles), name=str(name))
            _panel(
                ax,
                rax,
                items,
                band_items,
                j,
                axis,
                density=density,
                band=band,
                colors=colors,
                log_y=name in log_y,
                xlabel=name,
                ratio_range=ratio_range,
                legend=j == 0,
            )
            _exp_label(ax, label, lumi, com, exp, 14)
        return _save(fig, path)


def plot_correlations(
    samples: Mapping[str, Any],
    path: str | os.PathLike,
    names: Sequence[str] | None = None,
    difference: bool = True,
    *,
    label: str | None = None,
    lumi: float | str | None = None,
    com: float | str | None = None,
    exp: str = "bgflow_sci",
) -> Path:
    """Weighted correlation matrices side by side (and, with ``difference``, each minus the first sample's)."""
    items = _unpack(samples)
    d = items[0][1].shape[1]
    names = list(names) if names is not None else [f"x{j}" for j in range(d)]
    if len(names) != d:
        raise ValueError(f"mismatched variables: {len(names)} names for {d} columns")
    mats = [(lab, weighted_correlation(x, w)) for lab, x, w in items]
    rows = 2 if difference and len(items) > 1 else 1
    size = max(5.5, 0.55 * d + 2.5)
    cell_font = float(np.clip(110 / max(d, 1), 5, 11))
    with _style(18):
        fig, axes = plt.subplots(rows, len(items), figsize=(1.15 * size * len(items), size * rows), squeeze=False)
        ref = mats[0][1]
        for i, (lab, m) in enumerate(mats):
            panels = [(axes[0, i], m, f"{lab}", 1.0)]
            if rows == 2:
                panels.append((axes[1, i], m - ref, f"{lab} − {mats[0][0]}", 0.2))
            for ax, mat, title, vmax in panels:
                im = ax.imshow(mat, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
                ax.set_xticks(range(d), names, rotation=60, ha="right", fontsize="small")
                ax.set_yticks(range(d), names, fontsize="small")
                ax.tick_params(which="minor", bottom=False, top=False, left=False, right=False)
                ax.set_title(title, fontsize="small", pad=8 if label is None else 34)
                for a in range(d):
                    for b in range(d):
                        ax.text(b, a, f"{mat[a, b]:.2f}", ha="center", va="center", fontsize=cell_font)
                fig.colorbar(im, ax=ax, fraction=0.046)
                _exp_label(ax, label, lumi, com, exp, 12)
        fig.tight_layout()
        return _save(fig, path)


def plot_mass(
    samples: Mapping[str, Any],
    path: str | os.PathLike,
    bins: int = 80,
    range_: tuple[float, float] = (100.0, 180.0),
    xlabel: str = r"$m_{\gamma\gamma}$ [GeV]",
    *,
    density: bool = True,
    log_y: bool = False,
    bands: Mapping[str, Sequence[Any]] | None = None,
    band: str = "envelope",
    label: str | None = None,
    lumi: float | str | None = None,
    com: float | str | None = None,
    exp: str = "bgflow_sci",
    ratio_range: tuple[float, float] = (0.5, 1.5),
) -> Path:
    """Invariant-mass histograms (``{label: m}`` or ``{label: (m, w)}``, ``m`` of shape ``(n,)``) in ``range_``
    with a ratio-to-reference panel; ``density``, ``bands``/``band``, ``label``/``lumi``/``com``/``exp`` as in
    :func:`plot_variables` (band members are ``(n,)`` arrays or ``(m, w)``)."""
    items = _unpack(samples)
    if items[0][1].shape[1] != 1:
        raise ValueError(f"plot_mass needs 1-D samples, got {items[0][1].shape[1]} columns")
    lo, hi = float(range_[0]), float(range_[1])
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise ValueError(f"range_ must be finite with range_[0] < range_[1], got {range_}")
    band_items = _unpack_bands(bands, 1, band)
    axis = hist.axis.Regular(bins, lo, hi, name="mass")
    with _style(22):
        colors = _colors([lab for lab, _, _ in items], list(band_items))
        fig = plt.figure(figsize=(10, 10))
        grid = fig.add_gridspec(2, 1, height_ratios=[3, 1], hspace=0.0)
        ax = fig.add_subplot(grid[0])
        rax = fig.add_subplot(grid[1], sharex=ax)
        _panel(
            ax,
            rax,
            items,
            band_items,
            0,
            axis,
            density=density,
            band=band,
            colors=colors,
            log_y=log_y,
            xlabel=xlabel,
            ratio_range=ratio_range,
            legend=True,
        )
        _exp_label(ax, label, lumi, com, exp, 22)
        return _save(fig, path)


def _save(fig: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
