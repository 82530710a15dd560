"""Plots are written as PNG files."""

from __future__ import annotations

import hist
import matplotlib.pyplot as plt
import numpy as np
import pytest

from bgflow_sci.hep.plots import _fill, ensemble_band, plot_correlations, plot_mass, plot_variables, ratio_with_errors
from bgflow_sci.hep.synthetic import CORRECTED, generate, photon_table


def is_png(path) -> bool:
    return path.stat().st_size > 5000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots(tmp_path):
    mc, data = generate(2000, "mc", 0), generate(2000, "data", 1)
    xm, xd = photon_table(mc, CORRECTED), photon_table(data, CORRECTED)
    samples = {"data": xd, "MC": xm, "MC (weighted)": (xm, np.full(len(xm), 2.0))}
    assert is_png(plot_variables(samples, tmp_path / "vars.png", names=list(CORRECTED), log_y=["iso"]))
    assert is_png(plot_correlations(samples, tmp_path / "sub" / "corr.png", names=list(CORRECTED)))
    assert is_png(plot_mass({"data": data["mass"], "MC": (mc["mass"], mc["weight"])}, tmp_path / "mgg.png"))


# --------------------------------------------------------------------------------------------------------------------
# hist/mplhep rewrite: ratio panel errors, ensemble bands, experiment label, style isolation, input errors


def _small_samples(n=1500, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(n, 3))
    data[::37, 1] = np.nan  # NaN entries are left out
    mc = rng.normal(0.1, 1.1, size=(n, 3))
    w = rng.normal(1.0, 0.8, size=n)  # includes negative weights
    members = [(mc + 0.05 * rng.normal(size=mc.shape), w) for _ in range(4)]
    return data, mc, w, members


def test_plots_with_weights_bands_and_label(tmp_path):
    data, mc, w, members = _small_samples()
    samples = {"data": (data, np.ones(len(data))), "MC": mc, "corrected MC": (mc, w)}
    path = plot_variables(
        samples,
        tmp_path / "vars.png",
        names=["a", "b", "c"],
        log_y=["c"],
        bands={"corrected MC": members, "ensemble only": members[:2]},
        label="Simulation Preliminary",
        lumi=138,
    )
    assert is_png(path)
    m_members = [x[:, 0] for x, _ in members]
    m_path = plot_mass(
        {"data": data[:, 0] + 125, "MC": (mc[:, 0] + 125, w)},
        tmp_path / "m.png",
        range_=(120.0, 130.0),
        bands={"MC": [(m + 125, w) for m in m_members]},
        band="std",
        density=False,
        log_y=True,
        label="Simulation",
        com=13.6,
    )
    assert is_png(m_path)


def test_ratio_with_errors_by_hand():
    h_num, var_num = np.array([2.0, 3.0, 0.0, 1.0]), np.array([0.5, 0.3, 0.1, 0.2])
    h_den, var_den = np.array([4.0, 1.0, 2.0, 0.0]), np.array([1.0, 0.2, 0.3, 0.1])
    ratio, err = ratio_with_errors(h_num, var_num, h_den, var_den)
    np.testing.assert_allclose(ratio[:3], [0.5, 3.0, 0.0])
    # relative errors add in quadrature: (σ_r / r)² = var_num / h_num² + var_den / h_den²
    expected = [0.5 * np.sqrt(0.5 / 4 + 1.0 / 16), 3.0 * np.sqrt(0.3 / 9 + 0.2 / 1), np.sqrt(0.1) / 2]
    np.testing.assert_allclose(err[:3], expected)
    assert np.isnan(ratio[3]) and np.isnan(err[3])  # empty reference bin
    with pytest.raises(ValueError, match="shapes differ"):
        ratio_with_errors(h_num, var_num[:2], h_den, var_den)


def test_ratio_with_errors_on_hist_contents():
    rng = np.random.default_rng(3)
    axis = hist.axis.Regular(10, -2, 2)
    x, w = rng.normal(size=4000), rng.uniform(0.5, 1.5, size=4000)
    hn = hist.Hist(axis, storage=hist.storage.Weight()).fill(x[:2000], weight=w[:2000])
    hd = hist.Hist(axis, storage=hist.storage.Weight()).fill(x[2000:], weight=w[2000:])
    ratio, err = ratio_with_errors(hn.values(), hn.variances(), hd.values(), hd.variances())
    n, vn = (
        np.histogram(x[:2000], axis.edges, weights=w[:2000])[0],
        np.histogram(x[:2000], axis.edges, weights=w[:2000] ** 2)[0],
    )
    d, vd = (
        np.histogram(x[2000:], axis.edges, weights=w[2000:])[0],
        np.histogram(x[2000:], axis.edges, weights=w[2000:] ** 2)[0],
    )
    np.testing.assert_allclose(ratio, n / d)
    np.testing.assert_allclose(err, n / d * np.sqrt(vn / n**2 + vd / d**2))


def test_fill_matches_numpy_histogram_with_negative_and_nan():
    rng = np.random.default_rng(1)
    x, w = rng.normal(size=3000), rng.normal(1.0, 1.0, size=3000)
    x[::11] = np.nan
    w[5::13] = np.nan
    axis = hist.axis.Regular(20, -2.5, 2.5)
    ok = np.isfinite(x) & np.isfinite(w)
    h, _ = np.histogram(x[ok], axis.edges, weights=w[ok])
    h2, _ = np.histogram(x[ok], axis.edges, weights=w[ok] ** 2)
    values, variances = _fill(x, w, axis, density=False)
    np.testing.assert_allclose(values, h)
    np.testing.assert_allclose(variances, h2)
    values, variances = _fill(x, w, axis, density=True)
    area = (h * np.diff(axis.edges)).sum()
    np.testing.assert_allclose((values * np.diff(axis.edges)).sum(), 1.0)
    np.testing.assert_allclose(values, h / area)
    np.testing.assert_allclose(variances, h2 / area**2)


def test_ensemble_band_envelope_and_std():
    rng = np.random.default_rng(2)
    edges = np.linspace(-3, 3, 16)
    member_h = np.stack([np.histogram(rng.normal(size=500), edges)[0] for _ in range(6)]).astype(float)
    lo, hi = ensemble_band(member_h)  # default: envelope
    np.testing.assert_array_equal(lo, member_h.min(axis=0))
    np.testing.assert_array_equal(hi, member_h.max(axis=0))
    for b in range(len(edges) - 1):  # per bin, by hand
        assert lo[b] == min(h[b] for h in member_h) and hi[b] == max(h[b] for h in member_h)
    lo, hi = ensemble_band(member_h, "std")
    mean, std = member_h.mean(axis=0), member_h.std(axis=0, ddof=1)
    np.testing.assert_allclose(lo, mean - std)
    np.testing.assert_allclose(hi, mean + std)
    lo, hi = ensemble_band(member_h[:1], "std")  # a single member: zero width
    np.testing.assert_array_equal(lo, hi)
    with_nan = member_h.copy()
    with_nan[0, 0] = np.nan
    lo, _ = ensemble_band(with_nan)
    assert lo[0] == member_h[1:, 0].min()
    with pytest.raises(ValueError, match="band must be one of"):
        ensemble_band(member_h, "quantile")


def test_style_does_not_leak(tmp_path):
    data, mc, w, members = _small_samples(400)
    before, figures = dict(plt.rcParams), plt.get_fignums()
    plot_variables({"data": data, "MC": (mc, w)}, tmp_path / "v.png", bands={"MC": members}, label="Simulation")
    plot_mass({"data": data[:, 0], "MC": mc[:, 0]}, tmp_path / "m.png", range_=(-3, 3), label="Simulation")
    plot_correlations({"data": data, "MC": (mc, w)}, tmp_path / "c.png", label="Simulation Preliminary")
    after = dict(plt.rcParams)
    assert {k for k in before if before[k] != after[k]} == set()
    assert plt.get_fignums() == figures  # every figure is closed


def test_bad_input_names_the_label(tmp_path):
    data, mc, w, members = _small_samples(200)
    with pytest.raises(ValueError, match="mismatched variables.*'MC': 2"):
        plot_variables({"data": data, "MC": mc[:, :2]}, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"weights of 'MC' must have shape \(200,\)"):
        plot_variables({"data": data, "MC": (mc, w[:10])}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="2 names for 3 columns"):
        plot_variables({"data": data, "MC": mc}, tmp_path / "x.png", names=["a", "b"])
    with pytest.raises(ValueError, match="member 1 of band 'MC' has 2 columns"):
        plot_variables({"data": data, "MC": mc}, tmp_path / "x.png", bands={"MC": [mc, mc[:, :2]]})
    with pytest.raises(ValueError, match=r"weights of 'MC\[0\]'"):
        plot_variables({"data": data, "MC": mc}, tmp_path / "x.png", bands={"MC": [(mc, w[:3])]})
    with pytest.raises(ValueError, match="band 'MC' must be a non-empty sequence"):
        plot_mass({"data": data[:, 0], "MC": mc[:, 0]}, tmp_path / "x.png", bands={"MC": []})
    with pytest.raises(ValueError, match="band must be one of"):
        plot_mass({"data": data[:, 0], "MC": mc[:, 0]}, tmp_path / "x.png", bands={"MC": [mc[:, 0]]}, band="iqr")
    with pytest.raises(ValueError, match="1-D samples"):
        plot_mass({"data": data, "MC": mc}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
