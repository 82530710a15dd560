"""Real collider files shipped in the ``scikit-hep-testdata`` wheel (offline), as muon tables.

* ``uproot-HZZ.root`` (tree ``events``, 2421 entries): simulated H→ZZ events with jagged muon collections
  (``Muon_Px/Py/Pz/E/Charge/Iso``, per-event ``EventWeight``) -- the "MC".
* ``uproot-Zmumu.root`` (tree ``events``, 2304 entries): CMS 2010 dimuon events (``pt1, eta1, phi1, Q1, ...``,
  ``M``) -- the "data".

Install with ``pip install scikit-hep-testdata==0.3.12``; the two files are inside the wheel, no network needed.
"""

from __future__ import annotations

from typing import Any

import awkward as ak
import numpy as np
import torch

from .io import read_tree

__all__ = ["MUON_MASS", "dimuon_mass", "load_hzz_muons", "load_zmumu", "skhep_testdata_path"]

MUON_MASS = 0.1056583755
"""Muon mass [GeV] (PDG 2022)."""

Z_MASS = 91.1876


def skhep_testdata_path(name: str) -> str:
    """Path of a file in the ``scikit-hep-testdata`` wheel (``ImportError`` with the install command if missing)."""
    try:
        import skhep_testdata
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("real HEP test files need `pip install scikit-hep-testdata==0.3.12`") from err
    return skhep_testdata.data_path(name)


def dimuon_mass(pt1: Any, eta1: Any, phi1: Any, pt2: Any, eta2: Any, phi2: Any, mass: float = MUON_MASS) -> Any:
    """Invariant mass [GeV] of two muons from (pT [GeV], η, φ): ``m² = 2m_μ² + 2(E₁E₂ − p⃗₁·p⃗₂)``.

    Works elementwise on numpy arrays or torch tensors (differentiable).
    """
    lib = torch if any(isinstance(a, torch.Tensor) for a in (pt1, eta1, phi1, pt2, eta2, phi2)) else np
    p1 = pt1 * lib.cosh(eta1)
    p2 = pt2 * lib.cosh(eta2)
    e1 = lib.sqrt(p1**2 + mass**2)
    e2 = lib.sqrt(p2**2 + mass**2)
    dot = pt1 * pt2 * (lib.cos(phi1 - phi2) + lib.sinh(eta1) * lib.sinh(eta2))
    m2 = 2 * mass**2 + 2 * (e1 * e2 - dot)
    return np.sqrt(np.maximum(m2, 0.0)) if lib is np else torch.sqrt(torch.clamp(m2, min=0.0))


def _pt_eta_phi(px, py, pz):
    pt = np.hypot(px, py)
    return pt, np.arcsinh(pz / pt), np.arctan2(py, px)


def load_hzz_muons(jagged: bool = False, pair: str = "leading") -> Any:
    """Muons of the simulated ``uproot-HZZ.root`` sample.

    Args:
        jagged: return all muons per event as an awkward record array with fields ``pt, eta, phi, energy, charge,
            iso`` (``var *`` per event) and ``weight`` (per event).
        pair: for the flat table, which two muons of events with at least two: ``"leading"`` (two highest pT)
            or ``"z"`` (the opposite-charge pair with mass closest to the Z mass; events without one are dropped).

    Returns (``jagged=False``): ``{name: (n,) array}`` with ``pt1, eta1, phi1, charge1, pt2, eta2, phi2, charge2``
    (muon 1 has the higher pT), ``mass`` (:func:`dimuon_mass`) and ``weight`` (``EventWeight``).
    """
    if pair not in ("leading", "z"):
        raise ValueError(f"pair must be 'leading' or 'z', got {pair!r}")
    path = skhep_testdata_path("uproot-HZZ.root")
    branches = ["Muon_Px", "Muon_Py", "Muon_Pz", "Muon_E", "Muon_Charge", "Muon_Iso"]
    events, weight = read_tree(path, "events", branches, weight_branch="EventWeight")
    pt, eta, phi = _pt_eta_phi(events.Muon_Px, events.Muon_Py, events.Muon_Pz)
    muons = ak.zip(
        {
            "pt": pt,
            "eta": eta,
            "phi": phi,
            "energy": events.Muon_E,
            "charge": events.Muon_Charge,
            "iso": events.Muon_Iso,
        }
    )
    muons = muons[ak.argsort(muons.pt, axis=1, ascending=False)]
    if jagged:
        return ak.zip({"muons": muons, "weight": weight}, depth_limit=1)
    keep = ak.to_numpy(ak.num(muons, axis=1)) >= 2
    muons, weight = muons[keep], np.asarray(weight)[keep]
    if pair == "leading":
        a, b = muons[:, 0], muons[:, 1]
    else:
        pairs = ak.combinations(muons, 2, fields=["a", "b"])
        pairs = pairs[pairs.a.charge != pairs.b.charge]
        m = dimuon_mass(pairs.a.pt, pairs.a.eta, pairs.a.phi, pairs.b.pt, pairs.b.eta, pairs.b.phi)
        best = ak.argmin(abs(m - Z_MASS), axis=1, keepdims=True)
        chosen = ak.firsts(pairs[best])
        ok = ~ak.to_numpy(ak.is_none(chosen))
        chosen, weight = ak.drop_none(chosen[ok]), weight[ok]
        a, b = chosen.a, chosen.b  # already pT-ordered: combinations keep the sorted order
    out = {}
    for i, mu in ((1, a), (2, b)):
        for f in ("pt", "eta", "phi"):
            out[f"{f}{i}"] = ak.to_numpy(mu[f]).astype(np.float64)
        out[f"charge{i}"] = ak.to_numpy(mu.charge).astype(np.int32)
    out["mass"] = dimuon_mass(out["pt1"], out["eta1"], out["phi1"], out["pt2"], out["eta2"], out["phi2"])
    out["weight"] = weight.astype(np.float64)
    return out


def load_zmumu() -> dict[str, np.ndarray]:
    """CMS 2010 dimuon events of ``uproot-Zmumu.root`` as the same table as :func:`load_hzz_muons`.

    Kinematics are computed from the Cartesian momenta ``px, py, pz`` (the file's own ``pt, eta, phi`` branches
    disagree with them by up to 16 GeV in pT for some events, whereas ``M`` is consistent with the momenta).
    Muon 1 has the higher pT; ``mass`` is :func:`dimuon_mass` (agrees with the file's ``M`` to < 1e-6 GeV);
    ``weight`` is one.
    """
    path = skhep_testdata_path("uproot-Zmumu.root")
    names = ["px1", "py1", "pz1", "Q1", "px2", "py2", "pz2", "Q2"]
    ev, weight = read_tree(path, "events", names, library="np")
    kin = {}
    for i in (1, 2):
        kin[f"pt{i}"], kin[f"eta{i}"], kin[f"phi{i}"] = _pt_eta_phi(ev[f"px{i}"], ev[f"py{i}"], ev[f"pz{i}"])
        kin[f"charge{i}"] = ev[f"Q{i}"]
    swap = kin["pt2"] > kin["pt1"]
    out = {}
    for f in ("pt", "eta", "phi", "charge"):
        a, b = kin[f"{f}1"], kin[f"{f}2"]
        out[f"{f}1"], out[f"{f}2"] = np.where(swap, b, a), np.where(swap, a, b)
    for k in ("charge1", "charge2"):
        out[k] = out[k].astype(np.int32)
    for k in ("pt1", "eta1", "phi1", "pt2", "eta2", "phi2"):
        out[k] = out[k].astype(np.float64)
    out["mass"] = dimuon_mass(out["pt1"], out["eta1"], out["phi1"], out["pt2"], out["eta2"], out["phi2"])
    out["weight"] = weight
    return {k: out[k] for k in ["pt1", "eta1", "phi1", "charge1", "pt2", "eta2", "phi2", "charge2", "mass", "weight"]}
