"""Real collider files shipped in the ``scikit-hep-testdata`` wheel (offline), as muon tables.

* ``uproot-HZZ.root`` (tree ``events``, 2421 entries): simulated H→ZZ events with jagged muon collections
  (``Muon_Px/Py/Pz/E/Charge/Iso``, per-event ``EventWeight``) -- the "MC".
* ``uproot-Zmumu.root`` (tree ``events``, 2304 entries): CMS 2010 dimuon events (``pt1, eta1, phi1, Q1, ...``,
  ``M``) -- the "data".

Install with ``pip install scikit-hep-testdata==0.3.12``; the two files are inside the wheel, no network needed.

The two samples are *not* selected alike, so a comparison needs a common phase space (:func:`fiducial_selection`):

* Zmumu stores each physical event several times, once per reconstruction pairing (``Type`` = ``GT``, ``TT``,
  ``GG``: global/tracker muons; 2304 rows, 500 distinct (run, event)).  Rows of one event are near-copies, so a
  random row split leaks test events into training and shrinks data-vs-data noise floors; ``load_zmumu(reco="GG")``
  keeps one global-global row per event (500 events).
* Zmumu is preselected with both muons pT > 20 GeV (except 296 rows with a soft second muon of pT < 10 GeV, mostly
  ``TT``/``GT`` pairings), 60 < m_μμ < 120 GeV, |η| < 2.43; the HZZ Z-candidate pair reaches pT₁ ≥ 16.8 GeV,
  pT₂ ≥ 10.1 GeV, |η| < 2.44, m_μμ from 11.7 to 418 GeV.  :data:`FIDUCIAL` is the tighter of the two acceptances:
  both muons pT > 20 GeV, |η| < 2.4, opposite charge, 60 < m_μμ < 120 GeV.  Events before/after (seed-independent):
  HZZ Z-candidates 1406 → 1192, Zmumu (``reco="GG"``) 500 → 494 (all rows 2304 → 2004).
"""

from __future__ import annotations

from typing import Any

import awkward as ak
import numpy as np
import torch

from .io import read_tree

__all__ = [
    "FIDUCIAL",
    "MUON_MASS",
    "dimuon_frame",
    "dimuon_mass",
    "fiducial_selection",
    "load_hzz_muons",
    "load_zmumu",
    "muons_from_frame",
    "skhep_testdata_path",
]

MUON_MASS = 0.1056583755
"""Muon mass [GeV] (PDG 2022)."""

Z_MASS = 91.1876

FIDUCIAL = {"pt_min": 20.0, "abs_eta_max": 2.4, "mass_range": (60.0, 120.0), "opposite_charge": True}
"""Common phase space of HZZ-MC and Zmumu-data (the tighter of the two acceptances, see the module docstring)."""


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


def load_zmumu(reco: str | None = None) -> dict[str, np.ndarray]:
    """CMS 2010 dimuon events of ``uproot-Zmumu.root`` as the same table as :func:`load_hzz_muons`.

    Args:
        reco: ``None`` keeps all 2304 rows (several reconstruction pairings per physical event); ``"GG"``, ``"GT"``
            or ``"TT"`` keeps rows of that ``Type`` and then the first row of each (run, event), so that rows are
            independent events (``"GG"``: 500 events).

    Kinematics are computed from the Cartesian momenta ``px, py, pz`` (the file's own ``pt, eta, phi`` branches
    disagree with them by up to 16 GeV in pT for some events, whereas ``M`` is consistent with the momenta).
    Muon 1 has the higher pT; ``mass`` is :func:`dimuon_mass` (agrees with the file's ``M`` to < 1e-6 GeV);
    ``weight`` is one.
    """
    if reco not in (None, "GG", "GT", "TT"):
        raise ValueError(f"reco must be None, 'GG', 'GT' or 'TT', got {reco!r}")
    path = skhep_testdata_path("uproot-Zmumu.root")
    names = ["px1", "py1", "pz1", "Q1", "px2", "py2", "pz2", "Q2", "Type", "Run", "Event"]
    ev, weight = read_tree(path, "events", names, library="np")
    if reco is not None:
        rows = np.flatnonzero(ev["Type"].astype(str) == reco)
        key = ev["Run"][rows].astype(np.int64) * (1 << 40) + ev["Event"][rows].astype(np.int64)
        rows = rows[np.sort(np.unique(key, return_index=True)[1])]
        ev, weight = {k: v[rows] for k, v in ev.items()}, np.asarray(weight)[rows]
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


def fiducial_selection(
    sample: dict[str, np.ndarray],
    pt_min: float = FIDUCIAL["pt_min"],
    abs_eta_max: float = FIDUCIAL["abs_eta_max"],
    mass_range: tuple[float, float] | None = FIDUCIAL["mass_range"],
    opposite_charge: bool = FIDUCIAL["opposite_charge"],
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Events of a dimuon table (:func:`load_hzz_muons`, :func:`load_zmumu`) inside a common phase space.

    Keeps ``pT₁, pT₂ > pt_min`` [GeV], ``|η₁|, |η₂| < abs_eta_max``, ``mass_range[0] < m_μμ < mass_range[1]`` [GeV]
    (``None``: no mass cut) and, if ``opposite_charge``, ``q₁q₂ < 0``.  Apply the same cuts to MC and data.

    Returns ``(selected table, boolean mask over the input events)``.
    """
    need = ("pt1", "pt2", "eta1", "eta2", "mass", "charge1", "charge2")
    missing = [k for k in need if k not in sample]
    if missing:
        raise ValueError(f"fiducial_selection needs a dimuon table with columns {list(need)}; missing {missing}")
    keep = (sample["pt1"] > pt_min) & (sample["pt2"] > pt_min)
    keep &= (np.abs(sample["eta1"]) < abs_eta_max) & (np.abs(sample["eta2"]) < abs_eta_max)
    if mass_range is not None:
        keep &= (sample["mass"] > mass_range[0]) & (sample["mass"] < mass_range[1])
    if opposite_charge:
        keep &= sample["charge1"] * sample["charge2"] < 0
    return {k: np.asarray(v)[keep] for k, v in sample.items()}, keep


def _lib(*arrays: Any) -> Any:
    """``torch`` if any input is a tensor, else ``numpy``: the frame functions below work on either."""
    return torch if any(isinstance(a, torch.Tensor) for a in arrays) else np


def _norm(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    return np.linalg.norm(v, axis=-1, keepdims=True)


def _columns(table: dict[str, Any], keys: tuple[str, ...]) -> list[Any]:
    """Columns of ``table`` as float64 numpy arrays, or as tensors (others converted alike) if any is a tensor."""
    vals = [table[k] for k in keys]
    ref = next((v for v in vals if isinstance(v, torch.Tensor)), None)
    if ref is None:
        return [np.asarray(v, dtype=np.float64) for v in vals]
    return [torch.as_tensor(v, dtype=ref.dtype, device=ref.device) for v in vals]


def _four(pt, eta, phi, mass):
    lib = _lib(pt)
    px, py, pz = pt * lib.cos(phi), pt * lib.sin(phi), pt * lib.sinh(eta)
    return lib.sqrt(px**2 + py**2 + pz**2 + mass**2), lib.stack([px, py, pz], -1)


def _helicity_axes(p: Any) -> tuple[Any, Any, Any]:
    """Helicity-frame axes: z* along the pair momentum ``p`` (n, 3), x* in the (beam, z*) plane, y* = z* × x*."""
    lib = _lib(p)
    z = p / _norm(p)
    beam = lib.zeros_like(z)
    beam[:, 2] = 1.0
    x = beam - z[:, 2:3] * z
    n = _norm(x)
    x = x / (np.maximum(n, 1e-300) if lib is np else torch.clamp(n, min=torch.finfo(n.dtype).tiny))
    y = np.cross(z, x) if lib is np else torch.linalg.cross(z, x, dim=-1)
    return x, y, z


def _boost(e: Any, p: Any, beta: Any) -> tuple[Any, Any]:
    """Lorentz boost of (e, p⃗) by velocity ``beta`` (n, 3) (a frame moving with −β sees the particle boosted by β)."""
    lib = _lib(e, p, beta)
    b2 = (beta**2).sum(-1)
    gamma = 1.0 / lib.sqrt(1.0 - b2)
    bp = (beta * p).sum(-1)
    coef = lib.where(b2 > 0, (gamma - 1.0) * bp / lib.where(b2 > 0, b2, 1.0), 0.0 * bp)
    return gamma * (e + bp), p + (coef + gamma * e)[:, None] * beta


def dimuon_frame(sample: dict[str, Any], mass: float = MUON_MASS) -> dict[str, Any]:
    """Dimuon-system coordinates of a dimuon table (:func:`load_hzz_muons`, :func:`load_zmumu`).

    Returns ``m`` [GeV], ``pt_ll`` [GeV], ``y_ll`` (rapidity), ``phi_ll`` of the pair and the helicity-frame decay
    angles ``cos_theta``, ``phi_star`` ∈ (−π, π] of the negative muon (muon 1 if the charges are equal) in the pair
    rest frame (z* along the pair momentum, x* in the plane of z* and the beam).  Six numbers for the six momentum
    components: :func:`muons_from_frame` is the inverse.  Numpy columns give numpy arrays, torch columns give
    differentiable tensors (the charges may stay numpy; missing charges: muon 1 is taken as the negative one).
    """
    pt1, eta1, phi1, pt2, eta2, phi2 = _columns(sample, ("pt1", "eta1", "phi1", "pt2", "eta2", "phi2"))
    lib = _lib(pt1)
    e1, p1 = _four(pt1, eta1, phi1, mass)
    e2, p2 = _four(pt2, eta2, phi2, mass)
    if "charge1" in sample and "charge2" in sample:
        neg1 = (np.asarray(sample["charge1"]) <= 0) | (np.asarray(sample["charge2"]) > 0)
    else:
        neg1 = np.ones(len(pt1), dtype=bool)
    if lib is torch:
        neg1 = torch.as_tensor(neg1, device=pt1.device)
    ea, pa = lib.where(neg1, e1, e2), lib.where(neg1[:, None], p1, p2)
    e, p = e1 + e2, p1 + p2
    m = lib.sqrt(lib.clip(e**2 - (p**2).sum(-1), 0.0, None))
    _, pa_star = _boost(ea, pa, -p / e[:, None])
    x, y, z = _helicity_axes(p)
    u = pa_star / _norm(pa_star)
    return {
        "m": m,
        "pt_ll": lib.hypot(p[:, 0], p[:, 1]),
        "y_ll": 0.5 * lib.log((e + p[:, 2]) / (e - p[:, 2])),
        "phi_ll": lib.arctan2(p[:, 1], p[:, 0]),
        "cos_theta": lib.clip((u * z).sum(-1), -1.0, 1.0),
        "phi_star": lib.arctan2((u * y).sum(-1), (u * x).sum(-1)),
    }


def muons_from_frame(frame: dict[str, Any], mass: float = MUON_MASS) -> dict[str, Any]:
    """Inverse of :func:`dimuon_frame`: ``pt1, eta1, phi1, pt2, eta2, phi2`` (muon 1 the higher pT) and
    ``first_is_negative`` (whether muon 1 is the muon whose angles ``cos_theta, phi_star`` were given).

    Numpy in, numpy out; torch columns give differentiable tensors (``sin θ*`` is floored at 1e-12 before the
    square root so that the gradient stays finite at ``cos θ* = ±1``)."""
    m, pt, y, phi, ct, ps = _columns(frame, ("m", "pt_ll", "y_ll", "phi_ll", "cos_theta", "phi_star"))
    lib = _lib(m)
    mt = lib.sqrt(m**2 + pt**2)
    e = mt * lib.cosh(y)
    p = lib.stack([pt * lib.cos(phi), pt * lib.sin(phi), mt * lib.sinh(y)], -1)
    x, yy, z = _helicity_axes(p)
    ct = lib.clip(ct, -1.0, 1.0)
    st = lib.sqrt(lib.clip(1.0 - ct**2, 1e-24, None))
    q = lib.sqrt(lib.clip(m**2 / 4.0 - mass**2, 0.0, None))
    u = (st * lib.cos(ps))[:, None] * x + (st * lib.sin(ps))[:, None] * yy + ct[:, None] * z
    beta = p / e[:, None]
    e_star = lib.sqrt(q**2 + mass**2)
    ea, pa = _boost(e_star, q[:, None] * u, beta)
    eb, pb = _boost(e_star, -q[:, None] * u, beta)
    kin = []
    for vec in (pa, pb):
        ptv = lib.hypot(vec[:, 0], vec[:, 1])
        kin.append((ptv, lib.arcsinh(vec[:, 2] / ptv), lib.arctan2(vec[:, 1], vec[:, 0])))
    a_first = kin[0][0] >= kin[1][0]
    out = {}
    for j, f in enumerate(("pt", "eta", "phi")):
        out[f"{f}1"] = lib.where(a_first, kin[0][j], kin[1][j])
        out[f"{f}2"] = lib.where(a_first, kin[1][j], kin[0][j])
    out["first_is_negative"] = a_first
    return out
