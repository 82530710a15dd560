"""Flat ROOT files for trying ``bgflow-sci morph`` on real events (``bgflow-sci morph example NAME --out DIR``).

Both examples are built from the ``scikit-hep-testdata`` files (:mod:`bgflow_sci.hep.datasets`), inside the common
phase space :data:`~bgflow_sci.hep.datasets.FIDUCIAL`, as flat trees ``events`` with branches
``pt1 eta1 phi1 charge1 pt2 eta2 phi2 charge2 mass weight event_id`` (GeV; muon 1 the leading one):

* ``"hzz-zmumu"``: ``mc.root`` = simulated H→ZZ Z-candidate muon pairs (1182 events, ``weight`` = the generator
  weight), ``data.root`` = CMS 2010 Z→μμ data, one global-global row per physical event (494 events).
* ``"zmumu-closure"``: the CMS Z→μμ data (all reconstruction pairings, 2004 rows of 500 physical events) split by
  physical event into two halves (``seed``); ``data.root`` is one half as it is, ``mc.root`` the other half with
  the muon momenta distorted by the known correlated map :func:`closure_distortion` (η-dependent scale plus a
  cross-talk between the two muons); ``mc.root`` keeps the undistorted values as ``pt1_true``, ``pt2_true``,
  ``mass_true``.  ``event_id`` (run·2⁴⁰ + event) is the same for all rows of one physical event: split with
  ``morph train --holdout F --holdout-key event_id`` so that no event is on both sides.

Use ``mass`` (recomputed) or the massless ``--derive mass=sqrt(2*pt1*pt2*(cosh(eta1-eta2)-cos(phi1-phi2)))``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .datasets import dimuon_mass, fiducial_selection, load_hzz_muons, load_zmumu, skhep_testdata_path
from .io import read_tree

__all__ = ["EXAMPLES", "closure_distortion", "write_example"]

EXAMPLES = ("hzz-zmumu", "zmumu-closure")

_BRANCHES = ["pt1", "eta1", "phi1", "charge1", "pt2", "eta2", "phi2", "charge2", "mass", "weight"]


def closure_distortion(pt1: np.ndarray, eta1: np.ndarray, pt2: np.ndarray, eta2: np.ndarray):
    """The closure test's known map ``(pT₁, η₁, pT₂, η₂) -> (pT₁', pT₂')`` [GeV] (η unchanged)::

        s(η)  = 1 + 0.05 η + 0.05 η²                      (η-dependent momentum scale)
        pT₁'  = s(η₁) pT₁ + 0.15 (pT₂ − 40)               (cross-talk: each muon shifted by the other's pT)
        pT₂'  = s(η₂) pT₂ + 0.15 (pT₁ − 40)

    Deterministic and invertible in the fiducial region, so every distorted event has one true origin.
    """
    scale = lambda eta: 1.0 + 0.05 * eta + 0.05 * eta**2  # noqa: E731
    return scale(eta1) * pt1 + 0.15 * (pt2 - 40.0), scale(eta2) * pt2 + 0.15 * (pt1 - 40.0)


def _zmumu_event_ids() -> np.ndarray:
    ev, _ = read_tree(skhep_testdata_path("uproot-Zmumu.root"), "events", ["Run", "Event"], library="np")
    return ev["Run"].astype(np.int64) * (1 << 40) + ev["Event"].astype(np.int64)


def _write(path: Path, table: dict[str, np.ndarray]) -> None:
    import uproot

    with uproot.recreate(path) as f:
        f.mktree("events", {k: v.dtype for k, v in table.items()})
        f["events"].extend(table)


def write_example(name: str, out: str | os.PathLike, *, seed: int = 0, overwrite: bool = False) -> dict[str, Any]:
    """Write ``mc.root`` and ``data.root`` (tree ``events``) of example ``name`` into folder ``out``.

    Returns ``{"mc": path, "data": path, "events_mc": n, "events_data": m, "variables": [...]}``.  Existing files
    are refused unless ``overwrite``.
    """
    if name not in EXAMPLES:
        raise ValueError(f"unknown example {name!r}; choose one of {list(EXAMPLES)}")
    out = Path(out)
    paths = {"mc": out / "mc.root", "data": out / "data.root"}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing} exist; pass --overwrite to replace them")
    out.mkdir(parents=True, exist_ok=True)
    if name == "hzz-zmumu":
        mc, _ = fiducial_selection(load_hzz_muons())
        mc["event_id"] = np.arange(len(mc["pt1"]), dtype=np.int64)
        zmumu = load_zmumu()
        zmumu["event_id"] = _zmumu_event_ids()
        rows = _gg_rows()  # one global-global row per physical event, as load_zmumu(reco="GG")
        data, _ = fiducial_selection({k: v[rows] for k, v in zmumu.items()})
    else:
        zmumu = load_zmumu()
        zmumu["event_id"] = _zmumu_event_ids()
        table, _ = fiducial_selection(zmumu)
        events = np.unique(table["event_id"])
        rng = np.random.default_rng(seed)
        half = set(rng.permutation(events)[: len(events) // 2].tolist())
        in_mc = np.array([e in half for e in table["event_id"]])
        data = {k: v[~in_mc] for k, v in table.items()}
        mc = {k: v[in_mc] for k, v in table.items()}
        mc["pt1_true"], mc["pt2_true"], mc["mass_true"] = mc["pt1"].copy(), mc["pt2"].copy(), mc["mass"].copy()
        mc["pt1"], mc["pt2"] = closure_distortion(mc["pt1"], mc["eta1"], mc["pt2"], mc["eta2"])
        mc["mass"] = dimuon_mass(mc["pt1"], mc["eta1"], mc["phi1"], mc["pt2"], mc["eta2"], mc["phi2"])
    for key, table in (("mc", mc), ("data", data)):
        extra = [k for k in table if k not in _BRANCHES]
        _write(paths[key], {k: np.ascontiguousarray(table[k]) for k in _BRANCHES + extra})
    return {
        "example": name,
        "mc": f"{paths['mc']}:events",
        "data": f"{paths['data']}:events",
        "events_mc": int(len(mc["pt1"])),
        "events_data": int(len(data["pt1"])),
        "branches": _BRANCHES + ["event_id"],
    }


def _gg_rows() -> np.ndarray:
    """Rows of ``uproot-Zmumu.root`` that :func:`load_zmumu` keeps for ``reco="GG"`` (first GG row of each event)."""
    ev, _ = read_tree(skhep_testdata_path("uproot-Zmumu.root"), "events", ["Type"], library="np")
    ids = _zmumu_event_ids()
    rows = np.flatnonzero(ev["Type"].astype(str) == "GG")
    return rows[np.sort(np.unique(ids[rows], return_index=True)[1])]
