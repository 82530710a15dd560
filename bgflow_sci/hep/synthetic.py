"""A synthetic H→γγ-like sample in which "data" differs from "MC" by a known, kinematics-dependent transformation.

Each event has two photons (leading ``_1``, subleading ``_2``) with kinematics ``pt`` [GeV], ``eta``, ``phi`` and
three "corrected" per-photon variables (the ones simulation gets wrong and a morphing has to fix):

* ``r9``    = exp(−u) ∈ (0, 1), peaked at 0.9–1, ``log u = a₀ + a_η |η| + a_p log(pT/40) + s_u z₁``;
* ``sieie`` = σiηiη,  ``log σ = b₀ + b_η |η| + b_p log(pT/40) + s_σ z₂`` (≈ 0.008–0.012);
* ``iso``   [GeV]: exactly 0 if ``Φ(z₃) < π₀(|η|)`` (the spike, a fraction π₀ = c₀ − c_η|η| of photons), otherwise
  exponential: ``iso = λ(|η|, pT) · (−log(1 − (Φ(z₃) − π₀) / (1 − π₀)))`` with
  ``λ = λ₀ (1 + λ_η |η|) (pT/40)^{λ_p}``.

The latent ``z = (z₁, z₂, z₃) ~ N(0, C)`` is a Gaussian copula: ``corr(z₁, z₂) = ρ₁₂ > 0`` makes R9 and σiηiη
anticorrelated, ``ρ₁₃`` and ``ρ₂₃`` tie isolation to the shower shapes.  Kinematics are generated identically for
both kinds: the diphoton mass is a Gaussian peak (125 GeV, width 1.6 GeV, fraction 0.25) on an exponential
background (100 GeV + Exp(25 GeV)); the diphoton system has pT ~ Gamma(1.5, 20 GeV), rapidity ~ N(0, 1), uniform φ;
isotropic decay; acceptance |η| < 2.5, pT₁ > m/3, pT₂ > m/4 (events are resampled until ``n`` pass).

MC and data use the parameters :data:`MC_PARAMS` and :data:`DATA_PARAMS`; the differences are the known truth:

=============  =====================  ======================  ===========================================
variable       MC                     data                    meaning
=============  =====================  ======================  ===========================================
r9  a₀, a_η    log 0.05, 0.35         log 0.05 + 0.15, 0.45   data R9 lower, more so at large |η|
r9  a_p, s_u   −0.10, 0.50            −0.05, 0.58             pT dependence, extra smearing
sieie b₀,b_η   log 0.0088, 0.05       log 0.0088 + 0.03, 0.06 data σiηiη ≈ 3 % wider, η-dependent
sieie b_p,s_σ  0.00, 0.06             0.02, 0.07              pT dependence, extra smearing
iso c₀, c_η    0.45, 0.05             0.38, 0.05              fewer zero-isolation photons in data
iso λ₀,λ_η,λ_p 1.0, 0.20, 0.10        1.2, 0.25, 0.15         harder tail, η/pT dependent
ρ₁₂, ρ₁₃, ρ₂₃  0.50, 0.30, 0.20       0.65, 0.30, 0.20        stronger R9–σiηiη anticorrelation in data
=============  =====================  ======================  ===========================================

The exact correction (:func:`true_correction`) maps the MC latent by ``z_data = L_data L_mc⁻¹ z_mc`` (Cholesky
factors, i.e. the Knothe–Rosenblatt map of the copula in the order z₁, z₂, z₃) and re-applies the observation
functions with the data parameters at the same kinematics: this is the chained conditional quantile map, which a
perfect CMS-style correction in the order (r9, sieie, iso) would reproduce.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy.special import ndtr

__all__ = [
    "CORRECTED",
    "DATA_PARAMS",
    "KINEMATICS",
    "MC_PARAMS",
    "from_photon_table",
    "generate",
    "photon_table",
    "true_correction",
    "write_root",
]

KINEMATICS: tuple[str, ...] = ("pt", "eta", "phi")
"""Per-photon context variables (branches ``pt_1, eta_1, phi_1, pt_2, ...``)."""
CORRECTED: tuple[str, ...] = ("r9", "sieie", "iso")
"""Per-photon variables that differ between MC and data (branches ``r9_1, sieie_1, iso_1, r9_2, ...``)."""

MC_PARAMS: dict[str, float] = dict(
    a0=float(np.log(0.05)), a_eta=0.35, a_pt=-0.10, s_u=0.50,
    b0=float(np.log(0.0088)), b_eta=0.05, b_pt=0.00, s_s=0.06,
    c0=0.45, c_eta=0.05, l0=1.0, l_eta=0.20, l_pt=0.10,
    rho12=0.50, rho13=0.30, rho23=0.20,
)  # fmt: skip
DATA_PARAMS: dict[str, float] = dict(
    MC_PARAMS,
    a0=float(np.log(0.05)) + 0.15, a_eta=0.45, a_pt=-0.05, s_u=0.58,
    b0=float(np.log(0.0088)) + 0.03, b_eta=0.06, b_pt=0.02, s_s=0.07,
    c0=0.38, l0=1.2, l_eta=0.25, l_pt=0.15,
    rho12=0.65,
)  # fmt: skip

_MASS_PEAK, _MASS_WIDTH, _SIGNAL_FRACTION, _BKG_SLOPE = 125.0, 1.6, 0.25, 25.0


def _params(kind: str) -> dict[str, float]:
    if kind == "mc":
        return MC_PARAMS
    if kind == "data":
        return DATA_PARAMS
    raise ValueError(f"kind must be 'mc' or 'data', got {kind!r}")


def _cholesky(p: Mapping[str, float]) -> np.ndarray:
    c = np.array([[1.0, p["rho12"], p["rho13"]], [p["rho12"], 1.0, p["rho23"]], [p["rho13"], p["rho23"], 1.0]])
    return np.linalg.cholesky(c)


def _kinematics(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Diphoton events passing the acceptance, ``n`` of them."""
    parts: list[dict[str, np.ndarray]] = []
    have = 0
    while have < n:
        k = int(1.5 * (n - have)) + 100
        sig = rng.random(k) < _SIGNAL_FRACTION
        m = np.where(sig, rng.normal(_MASS_PEAK, _MASS_WIDTH, k), 100.0 + rng.exponential(_BKG_SLOPE, k))
        pt_gg = rng.gamma(1.5, 20.0, k)
        y_gg = rng.normal(0.0, 1.0, k)
        phi_gg = rng.uniform(-np.pi, np.pi, k)
        cos_t = rng.uniform(-1.0, 1.0, k)
        phi_s = rng.uniform(-np.pi, np.pi, k)
        # rest frame: back-to-back photons with energy m/2
        sin_t = np.sqrt(1.0 - cos_t**2)
        p_star = np.stack([sin_t * np.cos(phi_s), sin_t * np.sin(phi_s), cos_t], -1) * (m / 2)[:, None]
        mt = np.sqrt(m**2 + pt_gg**2)
        p_gg = np.stack([pt_gg * np.cos(phi_gg), pt_gg * np.sin(phi_gg), mt * np.sinh(y_gg)], -1)
        e_gg = mt * np.cosh(y_gg)
        beta = p_gg / e_gg[:, None]
        gamma = e_gg / m
        photons = []
        for sign in (1.0, -1.0):
            p = sign * p_star
            e = m / 2
            bp = (beta * p).sum(-1)
            b2 = (beta**2).sum(-1)
            coef = np.where(b2 > 0, (gamma - 1.0) * bp / np.where(b2 > 0, b2, 1.0), 0.0) + gamma * e
            photons.append(p + coef[:, None] * beta)
        pts = [np.hypot(q[:, 0], q[:, 1]) for q in photons]
        etas = [np.arcsinh(q[:, 2] / pt) for q, pt in zip(photons, pts)]
        phis = [np.arctan2(q[:, 1], q[:, 0]) for q in photons]
        lead = pts[0] >= pts[1]
        out = {"mass": m}
        for name, (a, b) in (("pt", pts), ("eta", etas), ("phi", phis)):
            out[f"{name}_1"], out[f"{name}_2"] = np.where(lead, a, b), np.where(lead, b, a)
        ok = (
            (np.abs(out["eta_1"]) < 2.5)
            & (np.abs(out["eta_2"]) < 2.5)
            & (out["pt_1"] > m / 3)
            & (out["pt_2"] > m / 4)
            & (m > 100.0)
            & (m < 180.0)
        )
        parts.append({key: v[ok] for key, v in out.items()})
        have += int(ok.sum())
    return {key: np.concatenate([p[key] for p in parts])[:n] for key in parts[0]}


def _observe(z: np.ndarray, pt: np.ndarray, eta: np.ndarray, p: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Latent ``(.., 3)`` and kinematics -> (r9, sieie, iso) with the parameters ``p``."""
    ae, lpt = np.abs(eta), np.log(pt / 40.0)
    u = np.exp(p["a0"] + p["a_eta"] * ae + p["a_pt"] * lpt + p["s_u"] * z[..., 0])
    r9 = np.exp(-u)
    sieie = np.exp(p["b0"] + p["b_eta"] * ae + p["b_pt"] * lpt + p["s_s"] * z[..., 1])
    pi0 = p["c0"] - p["c_eta"] * ae
    cdf = ndtr(z[..., 2])
    scale = p["l0"] * (1.0 + p["l_eta"] * ae) * (pt / 40.0) ** p["l_pt"]
    tail = np.clip((cdf - pi0) / (1.0 - pi0), 0.0, 1.0 - 1e-16)
    iso = np.where(cdf < pi0, 0.0, -scale * np.log1p(-tail))
    return {"r9": r9, "sieie": sieie, "iso": iso}


def generate(n: int, kind: str = "mc", seed: int = 0, return_latent: bool = False) -> dict[str, np.ndarray]:
    """``n`` synthetic diphoton events of ``kind`` ``"mc"`` or ``"data"`` (see the module docstring).

    Returns ``{branch: (n,) float64 array}`` with ``mass``, ``weight`` (ones) and ``<var>_<i>`` for
    ``var`` in :data:`KINEMATICS` + :data:`CORRECTED` and photon ``i`` in (1, 2); with ``return_latent`` also
    ``z`` of shape ``(n, 2, 3)`` (the copula latents, needed by :func:`true_correction`).
    Kinematics come from a seed stream independent of the kind, shower shapes from a kind-dependent one, so
    ``generate(n, "mc", s)`` and ``generate(n, "data", s)`` are independent samples.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    p = _params(kind)
    rng = np.random.default_rng([seed, 0 if kind == "mc" else 1])
    out = _kinematics(n, rng) if n > 0 else {k: np.zeros(0) for k in ["mass"] + _names(KINEMATICS)}
    z = rng.standard_normal((n, 2, 3)) @ _cholesky(p).T
    for i in (1, 2):
        obs = _observe(z[:, i - 1], out[f"pt_{i}"], out[f"eta_{i}"], p)
        out.update({f"{v}_{i}": obs[v] for v in CORRECTED})
    out["weight"] = np.ones(n)
    if return_latent:
        out["z"] = z
    return out


def _names(variables: Sequence[str]) -> list[str]:
    return [f"{v}_{i}" for i in (1, 2) for v in variables]


def true_correction(sample: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The exact MC -> data map applied to an MC sample generated with ``return_latent=True``.

    Returns a copy of ``sample`` whose corrected variables are distributed exactly as data at the same kinematics.
    """
    if "z" not in sample:
        raise ValueError("true_correction needs the latents: generate(..., kind='mc', return_latent=True)")
    m = _cholesky(DATA_PARAMS) @ np.linalg.inv(_cholesky(MC_PARAMS))
    z = sample["z"] @ m.T
    out = {k: np.array(v, copy=True) for k, v in sample.items()}
    out["z"] = z
    for i in (1, 2):
        obs = _observe(z[:, i - 1], sample[f"pt_{i}"], sample[f"eta_{i}"], DATA_PARAMS)
        out.update({f"{v}_{i}": obs[v] for v in CORRECTED})
    return out


def photon_table(sample: Mapping[str, np.ndarray], variables: Sequence[str]) -> np.ndarray:
    """Per-photon rows ``(2 n, len(variables))``, ordered event by event (leading photon first)."""
    missing = [f"{v}_{i}" for v in variables for i in (1, 2) if f"{v}_{i}" not in sample]
    if missing:
        raise ValueError(f"branches {missing} missing from the sample")
    cols = [np.stack([sample[f"{v}_1"], sample[f"{v}_2"]], axis=1).reshape(-1) for v in variables]
    return np.stack(cols, axis=1).astype(np.float64)


def from_photon_table(table: np.ndarray, variables: Sequence[str]) -> dict[str, np.ndarray]:
    """Inverse of :func:`photon_table`: ``{<var>_1: ..., <var>_2: ...}``."""
    table = np.asarray(table)
    if table.ndim != 2 or table.shape[1] != len(variables) or table.shape[0] % 2:
        raise ValueError(f"table must have shape (2 n, {len(variables)}), got {table.shape}")
    out = {}
    for j, v in enumerate(variables):
        pairs = table[:, j].reshape(-1, 2)
        out[f"{v}_1"], out[f"{v}_2"] = pairs[:, 0].copy(), pairs[:, 1].copy()
    return out


def write_root(path: str | os.PathLike, n_mc: int, n_data: int, seed: int = 0, overwrite: bool = False) -> Path:
    """Write trees ``"mc"`` and ``"data"`` (flat branches as returned by :func:`generate`) to a new ROOT file."""
    import uproot

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{str(path)!r} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    with uproot.recreate(path) as f:
        for kind, n in (("mc", n_mc), ("data", n_data)):
            sample = generate(n, kind, seed)
            f.mktree(kind, {k: v.dtype for k, v in sample.items()})  # a TTree (plain assignment may give an RNTuple)
            f[kind].extend(sample)
    return path
