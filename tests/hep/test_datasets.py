"""Real collider test files from the scikit-hep-testdata wheel: HZZ (simulation) and Zmumu (CMS 2010 data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import require

require("skhep_testdata")
uproot = require("uproot")

from bgflow_sci.hep.datasets import (  # noqa: E402
    FIDUCIAL,
    MUON_MASS,
    dimuon_frame,
    dimuon_mass,
    fiducial_selection,
    load_hzz_muons,
    load_zmumu,
    muons_from_frame,
    skhep_testdata_path,
)

KEYS = ["pt1", "eta1", "phi1", "charge1", "pt2", "eta2", "phi2", "charge2", "mass", "weight"]


def test_zmumu():
    z = load_zmumu()
    assert list(z) == KEYS and len(z["mass"]) == 2304
    ref = uproot.open(skhep_testdata_path("uproot-Zmumu.root"))["events"].arrays(["M", "E1", "E2"], library="np")
    np.testing.assert_allclose(z["mass"], ref["M"], atol=1e-6)  # independent: the file's own invariant mass
    assert np.all(z["pt1"] >= z["pt2"]) and set(np.unique(z["charge1"])) == {-1, 1}
    assert 85 < np.median(z["mass"]) < 95 and np.all(z["weight"] == 1)


def test_hzz_muons():
    h = load_hzz_muons()
    assert list(h) == KEYS and len(h["mass"]) == 1413  # events with >= 2 muons
    assert np.all(h["pt1"] >= h["pt2"]) and np.all(h["weight"] >= 0) and h["weight"].sum() > 0
    # independent mass from the file's four-momenta of the two leading muons
    t = uproot.open(skhep_testdata_path("uproot-HZZ.root"))["events"].arrays(
        ["Muon_Px", "Muon_Py", "Muon_Pz", "Muon_E"], library="np"
    )
    masses = []
    for px, py, pz, e in zip(t["Muon_Px"], t["Muon_Py"], t["Muon_Pz"], t["Muon_E"]):
        if len(px) >= 2:
            i, j = np.argsort(-np.hypot(px, py))[:2]
            masses.append(
                np.sqrt(max((e[i] + e[j]) ** 2 - (px[i] + px[j]) ** 2 - (py[i] + py[j]) ** 2 - (pz[i] + pz[j]) ** 2, 0))
            )
    np.testing.assert_allclose(h["mass"], masses, rtol=1e-4, atol=1e-3)
    z = load_hzz_muons(pair="z")
    assert np.all(z["charge1"] * z["charge2"] == -1) and np.median(np.abs(z["mass"] - 91.19)) < 5
    jag = load_hzz_muons(jagged=True)
    assert len(jag) == 2421 and set(jag.muons.fields) == {"pt", "eta", "phi", "energy", "charge", "iso"}


def test_dimuon_mass_numpy_and_torch(device):
    rng = np.random.default_rng(0)
    pt1, pt2 = rng.uniform(20, 60, (2, 10))
    eta1, eta2, phi1, phi2 = rng.uniform(-2, 2, (4, 10))

    def four(pt, eta, phi):
        p = np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)], -1)
        return np.sqrt((p**2).sum(-1) + MUON_MASS**2), p

    (e1, p1), (e2, p2) = four(pt1, eta1, phi1), four(pt2, eta2, phi2)
    ref = np.sqrt((e1 + e2) ** 2 - ((p1 + p2) ** 2).sum(-1))
    np.testing.assert_allclose(dimuon_mass(pt1, eta1, phi1, pt2, eta2, phi2), ref, rtol=1e-10)
    args = [torch.tensor(a, device=device, requires_grad=True) for a in (pt1, eta1, phi1, pt2, eta2, phi2)]
    m = dimuon_mass(*args)
    assert m.device == args[0].device
    np.testing.assert_allclose(m.detach().cpu().numpy(), ref, rtol=1e-10)
    m.sum().backward()
    assert all(torch.isfinite(a.grad).all() for a in args)


def test_zmumu_one_row_per_event_and_fiducial_selection():
    raw = uproot.open(skhep_testdata_path("uproot-Zmumu.root"))["events"].arrays(["Type", "Run", "Event"], library="np")
    gg = load_zmumu(reco="GG")
    assert len(gg["mass"]) == len(set(zip(raw["Run"], raw["Event"]))) == 500  # one row per physical event
    with pytest.raises(ValueError, match="reco"):
        load_zmumu(reco="XX")
    mc = load_hzz_muons(pair="z")
    for sample, n_before, n_after in ((mc, 1406, 1192), (gg, 500, 494), (load_zmumu(), 2304, 2004)):
        sel, keep = fiducial_selection(sample)
        assert len(keep) == n_before and keep.sum() == n_after == len(sel["pt1"])
        lo, hi = FIDUCIAL["mass_range"]
        assert np.all(np.minimum(sel["pt1"], sel["pt2"]) > 20) and np.all((sel["mass"] > lo) & (sel["mass"] < hi))
        assert np.all(np.abs(np.r_[sel["eta1"], sel["eta2"]]) < 2.4) and np.all(sel["charge1"] != sel["charge2"])
    assert fiducial_selection(mc, mass_range=None, opposite_charge=False, pt_min=0, abs_eta_max=9)[1].all()
    with pytest.raises(ValueError, match="missing"):
        fiducial_selection({"pt1": np.ones(3)})


def test_dimuon_frame_round_trip_and_known_configuration():
    sample = fiducial_selection(load_zmumu(reco="GG"))[0]
    frame = dimuon_frame(sample)
    np.testing.assert_allclose(frame["m"], sample["mass"], rtol=1e-9)
    back = muons_from_frame(frame)
    for k in ("pt1", "eta1", "pt2", "eta2"):
        np.testing.assert_allclose(back[k], sample[k], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.cos(back["phi1"] - sample["phi1"]), 1.0, atol=1e-12)
    # by hand: pair of mass m moving along x with momentum P; rest-frame decay along the beam (θ* = 90°, φ* = 0)
    m, big_p = 91.0, 30.0
    q, e_star = np.sqrt(m**2 / 4 - MUON_MASS**2), m / 2
    gamma_beta = big_p / m
    f = {"m": [m], "pt_ll": [big_p], "y_ll": [0.0], "phi_ll": [0.0], "cos_theta": [0.0], "phi_star": [0.0]}
    mu = muons_from_frame(f)
    assert mu["pt1"][0] == pytest.approx(gamma_beta * e_star) and mu["pt2"][0] == pytest.approx(gamma_beta * e_star)
    eta = np.arcsinh(q / (gamma_beta * e_star))
    assert sorted([mu["eta1"][0], mu["eta2"][0]]) == pytest.approx([-eta, eta])
    assert mu["phi1"][0] == pytest.approx(0.0, abs=1e-12)


def test_dimuon_frame_torch_matches_numpy_and_is_differentiable(device):
    sample = fiducial_selection(load_zmumu(reco="GG"))[0]
    sub = {k: v[:40] for k, v in sample.items()}
    frame = dimuon_frame(sub)
    cols = ("pt1", "eta1", "phi1", "pt2", "eta2", "phi2")
    t_frame = dimuon_frame({**{k: torch.as_tensor(sub[k], device=device) for k in cols}, "charge1": sub["charge1"],
                            "charge2": sub["charge2"]})  # fmt: skip
    for k, v in frame.items():
        np.testing.assert_allclose(t_frame[k].cpu().numpy(), v, rtol=1e-10, atol=1e-10)
    back = muons_from_frame({k: torch.as_tensor(v, device=device) for k, v in frame.items()})
    for k in ("pt1", "eta1", "pt2", "eta2"):
        np.testing.assert_allclose(back[k].cpu().numpy(), sub[k], rtol=1e-9, atol=1e-9)
    names = ("m", "pt_ll", "y_ll", "cos_theta", "phi_star")
    inputs = tuple(torch.as_tensor(frame[k][:4], device=device).requires_grad_() for k in names)

    def muons(*f):
        mu = muons_from_frame({**dict(zip(names, f)), "phi_ll": torch.zeros(4, dtype=torch.float64, device=device)})
        return mu["pt1"], mu["eta1"], mu["pt2"], mu["eta2"], torch.cos(mu["phi2"] - mu["phi1"])

    assert torch.autograd.gradcheck(muons, inputs)
    # at cos θ* = ±1 the gradient stays finite (sin θ* floored before the square root)
    edge = {k: torch.as_tensor(frame[k][:2], device=device) for k in frame}
    edge["cos_theta"] = torch.tensor([1.0, -1.0], dtype=torch.float64, device=device, requires_grad=True)
    sum(v.sum() for k, v in muons_from_frame(edge).items() if k != "first_is_negative").backward()
    assert torch.isfinite(edge["cos_theta"].grad).all()
