"""Synthetic H→γγ-like generator: mass peak, spike fraction, ranges, correlations, the known MC→data map, ROOT file."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import ndtr

from bgflow_sci.hep.synthetic import (
    CORRECTED,
    DATA_PARAMS,
    KINEMATICS,
    MC_PARAMS,
    from_photon_table,
    generate,
    photon_table,
    true_correction,
    write_root,
)
from tests.conftest import require


@pytest.fixture(scope="module")
def samples():
    return generate(40_000, "mc", 0, return_latent=True), generate(40_000, "data", 0)


def test_kinematics_and_mass_peak(samples):
    mc, data = samples
    for s in (mc, data):
        assert set(s) >= {"mass", "weight"} | {f"{v}_{i}" for v in KINEMATICS + CORRECTED for i in (1, 2)}
        assert (
            np.all(s["pt_1"] >= s["pt_2"]) and np.all(np.abs(s["eta_1"]) < 2.5) and np.all(np.abs(s["phi_2"]) <= np.pi)
        )
        assert np.all(s["pt_1"] > s["mass"] / 3) and np.all(s["pt_2"] > s["mass"] / 4)
    # the photons reconstruct the generated mass: m² = 2 pT1 pT2 (cosh Δη − cos Δφ)
    m = np.sqrt(2 * mc["pt_1"] * mc["pt_2"] * (np.cosh(mc["eta_1"] - mc["eta_2"]) - np.cos(mc["phi_1"] - mc["phi_2"])))
    np.testing.assert_allclose(m, mc["mass"], rtol=1e-9)
    h, edges = np.histogram(mc["mass"], bins=np.arange(100.0, 181.0, 1.0))
    assert 124.0 <= edges[h.argmax()] <= 125.0
    side = h[(edges[:-1] >= 110) & (edges[:-1] < 115)].mean(), h[(edges[:-1] >= 150) & (edges[:-1] < 155)].mean()
    assert side[0] > 2 * side[1]  # falling background
    # kinematics are generated identically for data and MC
    for v in ("pt_1", "eta_2", "mass"):
        assert abs(np.median(mc[v]) - np.median(data[v])) < 0.05 * (np.std(mc[v]) + 1e-3)


def test_shower_shapes_spike_and_correlations(samples):
    mc, data = samples
    for s, p in ((mc, MC_PARAMS), (data, DATA_PARAMS)):
        r9, sieie, iso, eta = s["r9_1"], s["sieie_1"], s["iso_1"], np.abs(s["eta_1"])
        assert np.all((r9 > 0) & (r9 <= 1)) and 0.88 < np.median(r9) < 0.97
        assert 0.008 < np.median(sieie) < 0.012 and np.all(iso >= 0)
        expected = np.mean(p["c0"] - p["c_eta"] * eta)  # spike fraction, averaged over the η distribution
        assert np.mean(iso == 0) == pytest.approx(expected, abs=0.01)
        assert np.corrcoef(r9, sieie)[0, 1] < -0.4  # anticorrelated
        assert np.median(r9[eta < 0.5]) > np.median(r9[eta > 1.5])  # η dependence
    assert np.corrcoef(data["r9_1"], data["sieie_1"])[0, 1] < np.corrcoef(mc["r9_1"], mc["sieie_1"])[0, 1] - 0.05
    assert np.mean(data["iso_1"] == 0) < np.mean(mc["iso_1"] == 0) - 0.05
    assert np.median(data["r9_1"]) < np.median(mc["r9_1"])


def test_true_correction_reproduces_data(samples):
    mc, data = samples
    corr = true_correction(mc)
    for v in CORRECTED:
        for q in (0.1, 0.5, 0.9):
            a, b = np.quantile(corr[f"{v}_1"], q), np.quantile(data[f"{v}_1"], q)
            assert a == pytest.approx(b, rel=0.03, abs=1e-3), (v, q)
    assert np.corrcoef(corr["r9_2"], corr["sieie_2"])[0, 1] == pytest.approx(
        np.corrcoef(data["r9_2"], data["sieie_2"])[0, 1], abs=0.02
    )
    # r9 is a monotone function of z1 at fixed kinematics, and z1 is unchanged: order within a kinematic point kept
    np.testing.assert_allclose(corr["z"][..., 0], mc["z"][..., 0])
    p = DATA_PARAMS
    u = np.exp(
        p["a0"] + p["a_eta"] * np.abs(mc["eta_1"]) + p["a_pt"] * np.log(mc["pt_1"] / 40) + p["s_u"] * mc["z"][:, 0, 0]
    )
    np.testing.assert_allclose(corr["r9_1"], np.exp(-u))
    assert np.mean(ndtr(corr["z"][:, 0, 2]) < 0.3) > 0.25
    with pytest.raises(ValueError, match="return_latent"):
        true_correction(generate(10, "mc", 0))


def test_photon_table_and_determinism():
    a, b = generate(100, "mc", 3), generate(100, "mc", 3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(generate(100, "data", 3)["r9_1"], a["r9_1"])
    table = photon_table(a, CORRECTED)
    assert table.shape == (200, 3) and table[0, 0] == a["r9_1"][0] and table[1, 0] == a["r9_2"][0]
    back = from_photon_table(table, CORRECTED)
    assert all(np.array_equal(back[k], a[k]) for k in back)
    assert generate(0, "mc")["r9_1"].shape == (0,)
    with pytest.raises(ValueError, match="kind"):
        generate(10, "sim")


def test_write_root(tmp_path):
    uproot = require("uproot")
    from bgflow_sci.hep.io import read_tree

    path = write_root(tmp_path / "hgg.root", 300, 200, seed=1)
    with uproot.open(path) as f:
        assert f.classnames() == {"mc;1": "TTree", "data;1": "TTree"}
    arrays, w = read_tree(path, "data", ["r9_1", "mass"], library="np")
    np.testing.assert_array_equal(arrays["r9_1"], generate(200, "data", 1)["r9_1"])
    assert len(w) == 200
    with pytest.raises(FileExistsError):
        write_root(path, 10, 10)
