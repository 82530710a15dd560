"""Sim-to-data morphing and reweighting on the synthetic H→γγ-like sample and on real HZZ-MC → Zmumu-data muons.

Issue 6, "Must show" (held-out events throughout):

* synthetic: classifier AUC(data vs MDMM-morphed MC) ≤ 0.53 and below per-variable quantile mapping (chained
  quantile mapping, the CMS-style baseline, reported beside it); correlation-matrix error ≤ ½ that of per-variable
  quantile mapping; every variable's W1 shrinks relative to uncorrected MC;
* the MDMM constraint is met at convergence (averaged MMD² within ε) with the multiplier history logged;
* HZZ → Zmumu: the corrected dimuon mass and muon kinematics closer to data than uncorrected MC by the same metrics
  (both samples in the common phase space ``datasets.FIDUCIAL``, one Zmumu row per event).  Cross-fitted, held-out
  evaluation (:func:`hzz`): data cut into ``--hzz-data-folds`` evaluation folds, MC into ``--hzz-folds`` folds; every
  MC event is corrected by models that saw neither it nor the data it is compared with; metrics averaged over the
  data folds; data-vs-data W1/correlation noise floors at the evaluation sizes.  MDMM on the muon variables with
  m_μμ added to the MMD (``mmd_features``), and on the dimuon-system variables with the muon variables added to the
  MMD (``--hzz-ablation``: both also without the derived features); repeated for ``--hzz-repeats`` more seeds, with
  mean ± sd and per-metric "closer than uncorrected" counts in ``hzz_to_zmumu.summary``;
* reweighting (flow density ratio; classifier cross-check): weighted MC histograms vs data within statistical
  errors -- χ²/ndf and p-value per variable (Poisson errors of data, sqrt(Σw²) of weighted MC, 40 equiprobable
  bins; equal-width bins also reported), Kish ESS; the exact generator ratio is the reference for what the test gives
  with perfect weights.  Reweighting estimators are trained on an independent sample (``--rw-events``).

Candidates on the synthetic sample (per-photon rows: corrected ``r9, sieie, iso`` with context ``pt, eta``):
uncorrected MC, per-variable quantile mapping, chained conditional quantile mapping, flow quantile morphing
(two conditional spline flows), MDMM-morphed MC (affine masked-autoregressive chain, transport cost subject to
MMD²(x', c; data) ≤ ε) and, as a reference, the exact correction known from the generator.  Metrics are computed on
``(r9, sieie, iso, pt, eta)`` so that the classifier and MMD see the kinematic dependence.

    python benchmarks/sim_to_data.py [--quick] [--out benchmarks/results/sim_to_data.json]

Runs single-threaded (``torch.set_num_threads(1)`` once at start: on the shared 2-core machine OpenMP with two
threads is up to ~100x slower for the small kernels used here).  Runtime: see ``seconds`` in the output (full run,
seed 0, shared 2-core machine: 1233 s).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from bgflow_sci.hep import metrics as hm
from bgflow_sci.hep.event_weights import (
    ClassifierReweighter,
    clip_weights,
    density_ratio_log_weights,
    fit_ratio_flows,
    histogram_chi2,
)
from bgflow_sci.hep.morphing import MorphingFlow, fit_morphing
from bgflow_sci.hep.plots import plot_correlations, plot_mass, plot_variables
from bgflow_sci.hep.quantile import ChainedQuantileMapper, QuantileMapper
from bgflow_sci.hep.quantile_flow import FlowQuantileMorpher
from bgflow_sci.hep.synthetic import CORRECTED, DATA_PARAMS, MC_PARAMS, generate, photon_table, true_correction
from bgflow_sci.reweighting import ess
from bgflow_sci.training import seed_everything

VARS = list(CORRECTED)
CTX = ["pt", "eta"]
KINDS = ["logit", "log", "spike"]
RW_KINDS = ["logit", "log", "spike_asinh"]  # density-ratio flows: logarithmic isolation tail
CTX_KINDS = ["log", "identity"]


def _kish(weights: np.ndarray) -> float:
    """Kish ESS fraction ``(Σw)² / (n Σw²)`` of non-negative (clipped) weights: the package's ESS of ``log w``."""
    return ess(torch.log(torch.as_tensor(weights, dtype=torch.float64)))


def _timer():
    t0 = time.perf_counter()
    return lambda: round(time.perf_counter() - t0, 1)


def _tables(sample):
    return photon_table(sample, VARS), photon_table(sample, CTX)


def _compare(data, candidates, names, args, data_w=None, seed=None):
    seed = args.seed if seed is None else seed
    return hm.compare(data, candidates, data_weights=data_w, names=names, n_permutations=args.permutations, seed=seed)


def _mdmm_history(res, every: int = 10):
    h = res.history
    keep = h[::every] + ([h[-1]] if (len(h) - 1) % every else [])
    return {
        "step": [r["step"] for r in keep],
        "lambda": [r["mmd/lambda"] for r in keep],
        "mmd2_over_eps": [r["mmd/value"] for r in keep],
        "transport": [r["loss/transport"] for r in keep],
    }


def _plot_history(hist: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for ax, key, label in zip(axes, ("mmd2_over_eps", "lambda", "transport"), ("MMD² / ε", "λ", "transport cost")):
        ax.plot(hist["step"], hist[key], lw=1)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        if key == "mmd2_over_eps":
            ax.axhline(1.0, color="k", ls="--", lw=0.8)
            ax.set_yscale("log")
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def synthetic(args, plots: Path) -> dict:
    out: dict = {"seconds": {}}
    n = args.events
    train_mc, train_data = generate(n, "mc", args.seed), generate(n, "data", args.seed)
    test_mc = generate(n, "mc", args.seed + 1, return_latent=True)
    test_data = generate(n, "data", args.seed + 1)
    xm, cm = _tables(train_mc)
    xd, cd = _tables(train_data)
    xmt, cmt = _tables(test_mc)
    xdt, cdt = _tables(test_data)
    out["photons"] = {"train_mc": len(xm), "train_data": len(xd), "test_mc": len(xmt), "test_data": len(xdt)}
    corrected: dict[str, np.ndarray] = {"uncorrected MC": xmt}

    t = _timer()
    corrected["quantile (per variable)"] = QuantileMapper(seed=args.seed).fit(xm, xd, names=VARS).transform(xmt)
    out["seconds"]["quantile"] = t()
    t = _timer()
    cqm = ChainedQuantileMapper(min_per_bin=args.min_per_bin, seed=args.seed).fit(xm, cm, xd, cd, names=VARS)
    corrected["chained quantile (CMS-style)"] = cqm.transform(xmt, cmt)
    out["chained_bins"] = cqm.n_bins
    out["seconds"]["chained_quantile"] = t()

    t = _timer()
    seed_everything(args.seed)
    fq = FlowQuantileMorpher(VARS, CTX, KINDS, CTX_KINDS, transformer="spline", n_layers=4, seed=args.seed)
    fq.fit(xm, xd, cm, cd, steps=args.flow_steps, batch_size=512, lr=2e-3, seed=args.seed)
    corrected["flow quantile morphing"] = fq.morph(xmt, cmt, seed=args.seed)
    out["seconds"]["flow_quantile"] = t()

    t = _timer()
    seed_everything(args.seed)
    model = MorphingFlow(VARS, CTX, KINDS, CTX_KINDS, transformer="affine", n_layers=4, seed=args.seed)
    res = fit_morphing(
        model, xm, xd, cm, cd, steps=args.mdmm_steps, batch_size=args.batch_size, lr=2e-3, damping=2.0,
        multiplier_lr=0.1, seed=args.seed,
    )  # fmt: skip
    corrected["MDMM morphing"] = model.morph(xmt, cmt, seed=args.seed)
    out["seconds"]["mdmm"] = t()
    hist = _mdmm_history(res)
    out["mdmm"] = {
        "config": {"batch_size": args.batch_size, "steps": args.mdmm_steps, "lr": 2e-3, "damping": 2.0,
                   "multiplier_lr": 0.1, "epsilon": "mean of the data-vs-data biased MMD² noise floor",
                   "constraint": "MMD²/ε ≤ 1", "transformer": "affine", "layers": 4},
        "final": res.final,
        "constraint_met": bool(res.satisfied),
        "final_lambda": float(res.multipliers[-1]),
        "history_every_10_steps": hist,
    }  # fmt: skip
    _plot_history(hist, plots / "synthetic_mdmm_history.png", "MDMM on the synthetic sample")
    corrected["exact correction (reference)"] = photon_table(true_correction(test_mc), VARS)

    t = _timer()
    full = {k: np.concatenate([v, cmt], 1) for k, v in corrected.items()}
    data_full = np.concatenate([xdt, cdt], 1)
    out["metrics"] = _compare(data_full, full, VARS + CTX, args)
    out["seconds"]["metrics"] = t()
    print("\n## Synthetic sample: held-out data vs corrected MC (features r9, sieie, iso, pt, eta)\n")
    print(hm.format_table(out["metrics"]))

    # --------------------------------------------------------------- plots
    samples = {"data": xdt, **{k: v for k, v in corrected.items() if k != "exact correction (reference)"}}
    plot_variables(samples, plots / "synthetic_variables.png", names=VARS, log_y=("iso",))
    plot_correlations(
        {"data": data_full, "MC": full["uncorrected MC"], "quantile": full["quantile (per variable)"],
         "chained": full["chained quantile (CMS-style)"], "MDMM": full["MDMM morphing"]},
        plots / "synthetic_correlations.png", names=VARS + CTX,
    )  # fmt: skip
    # --------------------------------------------------------------- targets
    m = out["metrics"]
    mc, qm, md = m["uncorrected MC"], m["quantile (per variable)"], m["MDMM morphing"]
    out["targets"] = {
        "auc_mdmm_le_0.53": md["auc"] <= 0.53,
        "auc_mdmm_below_per_variable_quantile": md["auc"] < qm["auc"],
        "auc_mdmm_below_chained_quantile": md["auc"] < m["chained quantile (CMS-style)"]["auc"],
        "corr_error_le_half_per_variable_quantile": md["corr_diff"] <= 0.5 * qm["corr_diff"],
        "every_w1_shrinks": all(md["w1"][v] < mc["w1"][v] for v in VARS),
        "mdmm_constraint_met": bool(res.satisfied),
    }
    return out


def _log_density(x: np.ndarray, c: np.ndarray, p: dict) -> np.ndarray:
    """Exact ``log p(r9, σiηiη, iso | pT, η)`` of the synthetic generator with parameters ``p`` (iso = 0: the log
    probability of the spike).  Gaussian copula: bivariate normal of (z₁, z₂) with the Jacobians of the observation
    functions, times the conditional law of z₃ | z₁, z₂ pushed through the isolation map."""
    from scipy.special import log_ndtr, ndtri

    r9, s, iso, pt, ae = x[:, 0], x[:, 1], x[:, 2], c[:, 0], np.abs(c[:, 1])
    lpt = np.log(pt / 40.0)
    u = -np.log(r9)
    z1 = (np.log(u) - p["a0"] - p["a_eta"] * ae - p["a_pt"] * lpt) / p["s_u"]
    z2 = (np.log(s) - p["b0"] - p["b_eta"] * ae - p["b_pt"] * lpt) / p["s_s"]
    r12, r13, r23 = p["rho12"], p["rho13"], p["rho23"]
    det = 1 - r12**2
    out = -np.log(2 * np.pi) - 0.5 * np.log(det) - 0.5 * (z1**2 - 2 * r12 * z1 * z2 + z2**2) / det
    out += -np.log(p["s_u"] * u * r9) - np.log(p["s_s"] * s)
    b1, b2 = (r13 - r12 * r23) / det, (r23 - r12 * r13) / det
    mu, sd = b1 * z1 + b2 * z2, np.sqrt(1 - b1 * r13 - b2 * r23)
    pi0 = p["c0"] - p["c_eta"] * ae
    lam = p["l0"] * (1 + p["l_eta"] * ae) * (pt / 40.0) ** p["l_pt"]
    tail = (1 - pi0) * np.exp(-iso / lam)  # = 1 − Φ(z₃)
    z3 = -ndtri(tail)
    dens = -0.5 * ((z3 - mu) / sd) ** 2 - np.log(sd) + 0.5 * z3**2 + np.log(tail / lam)
    return out + np.where(iso <= 0, log_ndtr((ndtri(pi0) - mu) / sd), dens)


def reweighting(args, plots: Path) -> dict:
    """MC → data weights on the synthetic sample: flow density ratio, classifier, and the exact generator ratio.

    The estimators are trained on an independent sample of ``--rw-events`` events per kind (seed + 2) and evaluated
    on the held-out test sample (seed + 1, the one of the morphing metrics).  Features (r9, σiηiη, iso, pT, |η|):
    the generator is symmetric in η, so is the detector it mimics."""
    out: dict = {"seconds": {}}
    t = _timer()
    n = args.rw_events
    tr_m, tr_d = generate(n, "mc", args.seed + 2), generate(n, "data", args.seed + 2)
    te_m, te_d = generate(args.events, "mc", args.seed + 1), generate(args.events, "data", args.seed + 1)

    def tab(s):
        return photon_table(s, VARS), photon_table(s, ["pt"]), np.abs(photon_table(s, ["eta"]))

    (xm, pm, am), (xd, pd_, ad), (xmt, pmt, amt), (xdt, pdt, adt) = (tab(s) for s in (tr_m, tr_d, te_m, te_d))
    cm, cd, cmt = (np.concatenate(v, 1) for v in ((pm, am), (pd_, ad), (pmt, amt)))
    out["photons"] = {"train_mc": len(xm), "train_data": len(xd), "test_mc": len(xmt), "test_data": len(xdt)}
    ctx = ["pt", "abs_eta"]

    seed_everything(args.seed)
    # iso: spike + asinh tail, preprocessing fitted on MC + data: both samples' tails inside the splines' range ±6
    ratio = FlowQuantileMorpher(
        VARS, ctx, RW_KINDS, ["log", "identity"], transformer="spline", n_layers=4, bound=6.0, seed=args.seed
    )
    fit_ratio_flows(ratio, xm, xd, cm, cd, steps=args.rw_flow_steps, batch_size=1024, lr=2e-3, seed=args.seed)
    lw_flow = density_ratio_log_weights(ratio.mc, ratio.data, xmt, cmt, seed=args.seed, n_dequantization=16)
    out["seconds"]["flow_ratio"] = t()
    t = _timer()
    clf_kinds = ["logit", "log", "spike", "log", "log"]
    clf = ClassifierReweighter(5, kinds=clf_kinds).fit(
        np.concatenate([xm, cm], 1), np.concatenate([xd, cd], 1), steps=args.clf_steps, batch_size=1024,
        validation_fraction=0.2, eval_every=250, seed=args.seed,
    )  # fmt: skip
    lw_clf = clf.log_weights(np.concatenate([xmt, cmt], 1))
    out["seconds"]["classifier"] = t()
    lw_exact = _log_density(xmt, cmt, DATA_PARAMS) - _log_density(xmt, cmt, MC_PARAMS)
    out["config"] = {
        "flow ratio": f"two conditional spline flows (4 layers, spline range ±6), ML {args.rw_flow_steps} steps, "
        "batch 1024, "
        "context (pT, |η|), preprocessing logit r9, log σiηiη, iso spike + asinh tail ('spike_asinh') fitted on "
        "pooled MC + data (fit_ratio_flows), spike "
        "averaged over 16 dequantisations",
        "classifier": f"MLP 64×64, features logit r9, log σiηiη, iso + (iso == 0), log pT, log |η|; "
        f"{args.clf_steps} steps, batch 1024 per class, early stopping on a 20 % validation split",
        "weights": "normalised to mean 1, unclipped (the 99.9 % clipped variant is in 'clipped')",
        "chi2": "40 equiprobable bins between the 0.5 % and 99.5 % data quantiles (primary) and 40 equal-width "
        "bins; errors: Poisson for data, sqrt(Σw²) for weighted MC normalised to the data total",
        "classifier_validation": clf.history[-1] if clf.history else None,
    }
    cols = {**{v: (xmt[:, j], xdt[:, j]) for j, v in enumerate(VARS)}, "pt": (pmt[:, 0], pdt[:, 0])}
    cols["eta"] = (photon_table(te_m, ["eta"])[:, 0], photon_table(te_d, ["eta"])[:, 0])
    rows = {"unweighted MC": None, "exact ratio (generator, reference)": lw_exact,
            "flow density ratio": lw_flow.numpy(), "classifier": lw_clf.numpy()}  # fmt: skip
    weights = {}
    for label, lw in rows.items():
        w = None if lw is None else clip_weights(np.exp(lw))
        weights[label] = w
        r: dict = {"ess": 1.0 if w is None else _kish(w),
                   "max_weight": None if w is None else float(w.max())}  # fmt: skip
        for binning in ("quantile", "uniform"):
            chi = {v: histogram_chi2(a, b, w, bins=40, binning=binning) for v, (a, b) in cols.items()}
            r[f"chi2_ndf_{binning}"] = {v: round(c["chi2_ndf"], 3) for v, c in chi.items()}
            r[f"p_value_{binning}"] = {v: round(c["p_value"], 4) for v, c in chi.items()}
            r[f"ndf_{binning}"] = {v: c["ndf"] for v, c in chi.items()}
        if w is not None:
            wc = clip_weights(np.exp(lw), max_quantile=0.999)
            chi = {v: histogram_chi2(a, b, wc, bins=40, binning="quantile") for v, (a, b) in cols.items()}
            r["clipped"] = {"ess": _kish(wc), "chi2_ndf_quantile": {v: round(c["chi2_ndf"], 3)
                            for v, c in chi.items()}}  # fmt: skip
        out[label] = r
    if args.reweight_metrics:
        full_t = np.concatenate([xmt, pmt, cols["eta"][0][:, None]], 1)
        full_d = np.concatenate([xdt, pdt, cols["eta"][1][:, None]], 1)
        out["metrics"] = _compare(
            full_d, {k: (full_t, w) for k, w in weights.items() if k != "unweighted MC"}, VARS + CTX, args
        )
    out["seconds"]["total"] = round(sum(out["seconds"].values()) + t(), 1)
    names = list(cols)
    print("\n## Reweighting MC to data (held-out): χ²/ndf (p-value), 40 equiprobable bins; Kish ESS\n")
    print("| weights | ESS | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for label in rows:
        r = out[label]
        cells = [f"{r['chi2_ndf_quantile'][v]:.2f} ({r['p_value_quantile'][v]:.2g})" for v in names]
        print(f"| {label} | {r['ess']:.3f} | " + " | ".join(cells) + " |")
    plot_variables(
        {"data": xdt, "MC": xmt, "MC × flow ratio": (xmt, weights["flow density ratio"]),
         "MC × classifier": (xmt, weights["classifier"])},
        plots / "synthetic_reweighted.png", names=VARS, log_y=("iso",),
    )  # fmt: skip
    ok = {k: all(p > 0.01 for p in out[k]["p_value_quantile"].values()) for k in ("flow density ratio", "classifier")}
    out["targets"] = {
        "flow_chi2_p_above_0.01_every_variable": ok["flow density ratio"],
        "classifier_chi2_p_above_0.01_every_variable": ok["classifier"],
        **{f"{k.split()[0]}_chi2_ndf_le_1.3_every_variable": all(v <= 1.3 for v in out[k]["chi2_ndf_quantile"].values())
           for k in ("flow density ratio", "classifier")},
    }  # fmt: skip
    return out


def _noise_floor(x: np.ndarray, n_a: int, target_sizes: tuple[float, float], repeats: int, seed: int) -> dict:
    """W1 per column and correlation-matrix error between disjoint random splits of the *same* sample ``x`` (data
    vs data), sizes ``n_a`` and the rest.

    ``mean``/``std`` over ``repeats`` splits; ``scaled`` multiplies the means by
    sqrt((1/a + 1/b) / (1/n_a + 1/n_rest)) with ``(a, b) = target_sizes``: the expected value for two
    same-distribution samples of sizes ``a`` and ``b`` (both fall as sqrt(1/n + 1/m))."""
    rng = np.random.default_rng(seed)
    n_rest = len(x) - n_a
    w1, corr = [], []
    for _ in range(repeats):
        p = rng.permutation(len(x))
        w1.append(hm.wasserstein_1d(x[p[:n_a]], x[p[n_a:]]))
        corr.append(hm.correlation_difference(x[p[:n_a]], x[p[n_a:]]))
    w1, corr = np.stack(w1), np.array(corr)
    a, b = target_sizes
    scale = float(np.sqrt((1 / a + 1 / b) / (1 / n_a + 1 / n_rest)))
    return {"split_sizes": [n_a, n_rest], "target_sizes": [a, b], "repeats": repeats, "scale_to_target": scale,
            "w1_mean": w1.mean(0), "w1_std": w1.std(0), "w1_scaled": w1.mean(0) * scale,
            "w1_scaled_std": w1.std(0) * scale, "corr_diff_mean": float(corr.mean()),
            "corr_diff_std": float(corr.std()), "corr_diff_scaled": float(corr.mean() * scale)}  # fmt: skip


HZZ_NAMES = ["pt1", "eta1", "pt2", "eta2", "dphi"]
HZZ_KINDS = ["log", "identity", "log", "identity", ("logit", 0.0, float(np.pi))]
FRAME_NAMES = ["m", "pt_ll", "y_ll", "cos_theta", "phi_star"]
HZZ_COLS = HZZ_NAMES + ["mass"]


def _muon_table(s: dict) -> tuple[np.ndarray, np.ndarray]:
    """``(pT₁, η₁, pT₂, η₂, |Δφ|)`` of a dimuon table and the sign of Δφ = φ₂ − φ₁ (wrapped to (−π, π])."""
    dphi = np.angle(np.exp(1j * (s["phi2"] - s["phi1"])))
    return np.stack([s["pt1"], s["eta1"], s["pt2"], s["eta2"], np.abs(dphi)], 1), np.sign(dphi)


def _mass_feature(x, c=None):
    """m_μμ of muon variables ``(pT₁, η₁, pT₂, η₂, |Δφ|)`` (numpy or differentiable torch), shape ``(n, 1)``."""
    from bgflow_sci.hep.datasets import dimuon_mass

    m = dimuon_mass(x[:, 0], x[:, 1], 0.0 * x[:, 0], x[:, 2], x[:, 3], x[:, 4])
    return m[:, None]


def _frame_to_muons(f, phi_ll=None):
    """Muon variables ``(n, 5)`` (and the muons' table) of dimuon-frame rows ``(m, pT_ll, y_ll, cos θ*, φ*)``."""
    from bgflow_sci.hep.datasets import muons_from_frame

    lib = torch if isinstance(f, torch.Tensor) else np
    phi = 0.0 * f[:, 0] if phi_ll is None else phi_ll  # |Δφ|, pT and η do not depend on the pair's azimuth
    mu = muons_from_frame({**dict(zip(FRAME_NAMES, f.T if lib is np else f.unbind(1))), "phi_ll": phi})
    d = mu["phi2"] - mu["phi1"]
    dphi = lib.abs(lib.arctan2(lib.sin(d), lib.cos(d)))
    return lib.stack([mu["pt1"], mu["eta1"], mu["pt2"], mu["eta2"], dphi], 1), mu


def _muon_features(f, c=None):
    """Muon variables of dimuon-frame rows as MMD features of a dimuon-frame morphing (differentiable)."""
    return _frame_to_muons(f)[0]


_HZZ_CACHE: dict = {}


def _hzz_samples() -> dict:
    """Fiducial HZZ Z-candidate muons (MC) and Zmumu global-global events (data) as arrays (loaded once)."""
    if _HZZ_CACHE:
        return _HZZ_CACHE
    from bgflow_sci.hep.datasets import FIDUCIAL, dimuon_frame, fiducial_selection, load_hzz_muons, load_zmumu

    mc_all, data_all = load_hzz_muons(pair="z"), load_zmumu(reco="GG")
    mc, data = fiducial_selection(mc_all)[0], fiducial_selection(data_all)[0]
    xm, xd = _muon_table(mc)[0], _muon_table(data)[0]
    fr_m, fr_d = dimuon_frame(mc), dimuon_frame(data)
    _HZZ_CACHE.update(
        xm=xm, wm=mc["weight"], mass_m=mc["mass"], xd=xd, mass_d=data["mass"],
        fm=np.stack([fr_m[k] for k in FRAME_NAMES], 1), phi_ll_m=fr_m["phi_ll"],
        fd=np.stack([fr_d[k] for k in FRAME_NAMES], 1),
        selection={
            "fiducial": {k: list(v) if isinstance(v, tuple) else v for k, v in FIDUCIAL.items()},
            "mc_events": {"z_candidates": len(mc_all["pt1"]), "selected": len(mc["pt1"])},
            "data_events": {"rows_all_reconstructions": len(load_zmumu()["pt1"]),
                            "gg_one_per_event": len(data_all["pt1"]), "selected": len(data["pt1"])},
            "mc_weight_sum": {"before": float(mc_all["weight"].sum()), "after": float(mc["weight"].sum())},
        },
    )  # fmt: skip
    return _HZZ_CACHE


def _frame_features(x, c=None):
    """Dimuon-frame variables ``(m, pT_ll, y_ll, cos θ*, φ*)`` of muon variables ``(pT₁, η₁, pT₂, η₂, |Δφ|)`` (muon 1
    at φ = 0 taken as the reference muon of the decay angles) as MMD features of a muon-variable morphing."""
    from bgflow_sci.hep.datasets import dimuon_frame

    lib = torch if isinstance(x, torch.Tensor) else np
    zero = 0.0 * x[:, 0]
    fr = dimuon_frame({"pt1": x[:, 0], "eta1": x[:, 1], "phi1": zero, "pt2": x[:, 2], "eta2": x[:, 3], "phi2": x[:, 4]})
    return lib.stack([fr[k] for k in FRAME_NAMES], 1)


def _hzz_variants(args) -> list[dict]:
    """MDMM variants: muon variables with derived features (``--hzz-muon-features``: m_μμ or the dimuon frame) in the
    MMD, dimuon frame with the muon variables in the MMD (and, with ``--hzz-ablation``, both without features)."""
    from bgflow_sci.hep.datasets import FIDUCIAL

    fkinds = [("logit", *FIDUCIAL["mass_range"]), "log", "identity", ("logit", -1.0, 1.0), ("logit", -np.pi, np.pi)]
    mf = {"mass": ("m_μμ", _mass_feature), "frame": ("dimuon frame", _frame_features)}[args.hzz_muon_features]
    out = [
        {"label": f"MDMM, muon variables + {mf[0]} in MMD", "frame": False, "kinds": HZZ_KINDS, "features": mf[1]},
        {"label": "MDMM, dimuon frame + muon variables in MMD", "frame": True, "kinds": fkinds,
         "features": _muon_features},
    ]  # fmt: skip
    if args.hzz_ablation:
        out += [
            {"label": "MDMM, muon variables", "frame": False, "kinds": HZZ_KINDS, "features": None},
            {"label": "MDMM, dimuon frame", "frame": True, "kinds": fkinds, "features": None},
        ]
    return out


def _fit_hzz_variant(args, v: dict, x_tr, x_data, w_tr, batch: int, seed: int):
    seed_everything(seed)
    names = FRAME_NAMES if v["frame"] else HZZ_NAMES
    model = MorphingFlow(names, (), v["kinds"], transformer="affine", n_layers=4, hidden=(64, 64), seed=seed)
    res = fit_morphing(
        model, x_tr, x_data, mc_weights=w_tr, steps=args.hzz_steps, batch_size=batch, lr=args.hzz_lr, damping=2.0,
        multiplier_lr=0.1, scales=tuple(args.hzz_scales), seed=seed, mmd_features=v["features"],
        feature_weight=args.hzz_feature_weight,
    )  # fmt: skip
    return model, res


def _with_mass(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x, _mass_feature(x)], 1)


def _mean_metrics(results: list[dict]) -> dict:
    """Average of :func:`hm.compare` results (same candidates) over evaluation folds."""
    out = {}
    for label, r in results[0].items():
        out[label] = {"w1": {n: float(np.mean([x[label]["w1"][n] for x in results])) for n in r["w1"]}}
        out[label].update({m: float(np.mean([x[label][m] for x in results])) for m in r if m != "w1"})
    return out


def hzz(args, plots: Path | None, seed: int) -> dict:
    """Morph the Z-candidate muon pair of simulated HZZ events to CMS Zmumu data; cross-fitted, held-out evaluation.

    Both samples in the common phase space :data:`bgflow_sci.hep.datasets.FIDUCIAL`; data: one global-global
    reconstruction row per event.  Data are cut into ``L = --hzz-data-folds`` random evaluation folds and MC into
    ``K = --hzz-folds`` folds (``seed``).  For each evaluation fold ``l`` every MC event of fold ``j`` is corrected
    by a model trained on the data *outside* fold ``l`` and the MC outside fold ``j`` (``L·K`` fits per method),
    so that all MC events, each corrected by a model that never saw it, are compared with data fold ``l``, which no
    model of that comparison saw; the metrics are averaged over ``l``.  (Pooling the out-of-fold corrections of a
    single K-fold split and comparing them with *all* data is not held out: each model trained on most of those
    data events, and the metrics come out below the data-vs-data noise floor.)  ``plots=None`` skips the plots."""
    S = _hzz_samples()
    xm, wm, xd, fm, fd = S["xm"], S["wm"], S["xd"], S["fm"], S["fd"]
    n_m, n_d, L, K = len(xm), len(xd), args.hzz_data_folds, args.hzz_folds
    rng = np.random.default_rng(seed)
    fold_m, fold_d = rng.permutation(n_m) % K, rng.permutation(n_d) % L
    out: dict = {"seconds": {}, "selection": S["selection"], "data_folds": L, "mc_folds": K}
    out["events"] = {"mc": n_m, "data": n_d, "data_eval_per_fold": [int((fold_d == l).sum()) for l in range(L)],
                     "data_train": [int((fold_d != l).sum()) for l in range(L)],
                     "mc_train": [int((fold_m != j).sum()) for j in range(K)]}  # fmt: skip
    variants = _hzz_variants(args)
    labels = ["uncorrected MC", "per-variable quantile mapping"] + [v["label"] for v in variants]
    cand = {c: [xm.copy() if c == "uncorrected MC" else np.empty_like(xm) for _ in range(L)] for c in labels}
    fits: dict = {v["label"]: [] for v in variants}
    out["seconds"] = {v["label"]: 0.0 for v in variants}
    for l in range(L):
        trd = fold_d != l
        batch = min(args.hzz_batch, int(trd.sum()) // 2)
        for j in range(K):
            trm, tem = fold_m != j, fold_m == j
            qm = QuantileMapper(seed=seed).fit(xm[trm], xd[trd], wm[trm], names=HZZ_NAMES)
            cand["per-variable quantile mapping"][l][tem] = qm.transform(xm[tem])
            for v in variants:
                t = _timer()
                src, tgt = (fm, fd) if v["frame"] else (xm, xd)
                model, res = _fit_hzz_variant(args, v, src[trm], tgt[trd], wm[trm], batch, seed + 100 * l + 10 * j)
                morphed = model.morph(src[tem], seed=seed)
                cand[v["label"]][l][tem] = _frame_to_muons(morphed, S["phi_ll_m"][tem])[0] if v["frame"] else morphed
                fits[v["label"]].append({"data_fold": l, "mc_fold": j, "batch_size": batch, "final": res.final,
                                         "constraint_met": bool(res.satisfied),
                                         "final_lambda": float(res.multipliers[-1])})  # fmt: skip
                out["seconds"][v["label"]] += t()
                if l == 0 and j == 0 and plots is not None:
                    if v["features"] is not None:
                        name = "hzz_frame_mdmm_history.png" if v["frame"] else "hzz_mdmm_history.png"
                        _plot_history(_mdmm_history(res), plots / name, f"{v['label']} (data fold 0, MC fold 0)")
    out["mdmm_fits"] = fits
    out["mdmm_config"] = {"steps": args.hzz_steps, "lr": args.hzz_lr, "damping": 2.0, "multiplier_lr": 0.1,
                          "scales": args.hzz_scales, "feature_weight": args.hzz_feature_weight,
                          "transformer": "affine", "layers": 4, "hidden": [64, 64]}  # fmt: skip
    data_full = np.concatenate([xd, S["mass_d"][:, None]], 1)
    out["check_mass_formula_max_abs_diff"] = float(np.abs(_mass_feature(xm)[:, 0] - S["mass_m"]).max())
    t = _timer()
    per_fold = [
        _compare(data_full[fold_d == l], {c: (_with_mass(v[l]), wm) for c, v in cand.items()}, HZZ_COLS, args,
                 seed=seed + l)
        for l in range(L)
    ]  # fmt: skip
    out["metrics_per_data_fold"] = per_fold
    out["metrics"] = _mean_metrics(per_fold)
    out["seconds"]["metrics"] = t()
    n_eff = float(wm.sum() ** 2 / (wm**2).sum())
    n_ev = n_d / L
    floor = _noise_floor(data_full, n_d // 2, (n_ev, n_eff), 500, seed)
    floor["mc_kish_n_eff"] = n_eff
    for key in ("w1_mean", "w1_std", "w1_scaled", "w1_scaled_std"):
        floor[key] = dict(zip(HZZ_COLS, floor[key].tolist()))
    out["noise_floor_data_vs_data"] = floor
    print(f"\n## HZZ simulated muons → Zmumu CMS data (fiducial; {L} data × {K} MC folds, held out; seed {seed})\n")
    print(hm.format_table(out["metrics"]))
    w1f = {k: round(v, 4) for k, v in floor["w1_scaled"].items()}
    print("noise floor (data vs data at the evaluation sizes): W1", w1f, "corr", round(floor["corr_diff_scaled"], 3))
    _hzz_targets(out)
    if plots is not None:
        xs = {c: (v[0], wm) for c, v in cand.items()}
        plot_variables({"Zmumu data": xd[fold_d == 0], **xs}, plots / "hzz_muons.png", names=HZZ_NAMES)
        plot_mass(
            {"Zmumu data": S["mass_d"][fold_d == 0], **{c: (_mass_feature(v[0])[:, 0], wm) for c, v in cand.items()}},
            plots / "hzz_dimuon_mass.png",
            bins=30,
            range_=(60.0, 120.0),
            xlabel=r"$m_{\mu\mu}$ [GeV]",
        )
    return out


def _closer(d: dict, u: dict) -> dict:
    """Per metric: is candidate ``d`` closer to data than uncorrected ``u``?"""
    res = {f"w1 {v}": d["w1"][v] < u["w1"][v] for v in HZZ_COLS}
    res.update({m: d[m] < u[m] for m in ("corr_diff", "auc", "mmd2") if m in d})
    return res


def _hzz_targets(out: dict) -> dict:
    m = out["metrics"]
    u = m["uncorrected MC"]
    out["targets"] = {}
    for label, d in m.items():
        if label != "uncorrected MC":
            c = _closer(d, u)
            out["targets"][label] = {"all_closer": all(c.values()), "not_closer": [k for k, v in c.items() if not v]}
    fl = out["noise_floor_data_vs_data"]
    out["targets"]["w1_uncorrected_within_noise_floor"] = [v for v in HZZ_COLS if u["w1"][v] <= fl["w1_scaled"][v]]
    out["targets"]["constraint_met_all_fits"] = {
        k: all(f["constraint_met"] for f in v) for k, v in out["mdmm_fits"].items()
    }
    return out


def _hzz_summary(runs: dict) -> dict:
    """Mean ± sd over seeds of every metric and per-metric counts of seeds where a candidate beats uncorrected MC."""
    summary: dict = {}
    for key in ("metrics",):
        labels = list(next(iter(runs.values()))[key])
        tab: dict = {}
        for label in labels:
            rows = [r[key][label] for r in runs.values()]
            metr = {f"w1 {v}": [r["w1"][v] for r in rows] for v in HZZ_COLS}
            metr.update({m: [r[m] for r in rows] for m in ("corr_diff", "auc", "mmd2") if m in rows[0]})
            tab[label] = {m: {"mean": float(np.mean(x)), "sd": float(np.std(x, ddof=1)) if len(x) > 1 else 0.0}
                          for m, x in metr.items()}  # fmt: skip
            if label != "uncorrected MC":
                closer = [_closer(r[key][label], r[key]["uncorrected MC"]) for r in runs.values()]
                tab[label]["closer_count"] = {m: int(sum(c[m] for c in closer)) for m in closer[0]}
        summary[key] = tab
    summary["seeds"] = list(runs)
    return summary


def _print_hzz_summary(summary: dict) -> None:
    n = len(summary["seeds"])
    for key in ("metrics",):
        tab = summary[key]
        mets = list(next(iter(tab.values())))
        mets = [m for m in mets if m != "closer_count"]
        print(f"\n### HZZ {key}: mean ± sd over seeds {summary['seeds']} (closer than uncorrected: count of {n})\n")
        print("| sample | " + " | ".join(mets) + " |")
        print("|---|" + "---|" * len(mets))
        for label, r in tab.items():
            cells = []
            for m in mets:
                cell = f"{r[m]['mean']:.3g} ± {r[m]['sd']:.2g}"
                if "closer_count" in r:
                    cell += f" ({r['closer_count'][m]}/{n})"
                cells.append(cell)
            print(f"| {label} | " + " | ".join(cells) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="benchmarks/results/sim_to_data.json")
    p.add_argument("--plots", default="benchmarks/results/hep_plots")
    p.add_argument("--events", type=int, default=25_000, help="events per sample and split (2 photons each)")
    p.add_argument("--mdmm-steps", type=int, default=1200)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--flow-steps", type=int, default=1200)
    p.add_argument("--rw-events", type=int, default=100_000, help="training events per kind for the reweighting")
    p.add_argument("--rw-flow-steps", type=int, default=3000)
    p.add_argument("--clf-steps", type=int, default=6000)
    p.add_argument("--reweight-metrics", action="store_true", help="also AUC/MMD/W1 of the weighted samples")
    p.add_argument("--hzz-steps", type=int, default=800)
    p.add_argument("--hzz-batch", type=int, default=256)
    p.add_argument("--hzz-lr", type=float, default=2e-3)
    p.add_argument("--hzz-scales", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    p.add_argument("--hzz-repeats", type=int, default=4, help="extra HZZ runs with seeds seed+1.. (no plots)")
    p.add_argument("--hzz-data-folds", type=int, default=2, help="data folds: held-out evaluation samples")
    p.add_argument("--hzz-folds", type=int, default=2, help="MC folds of the cross-fitting")
    p.add_argument("--hzz-muon-features", choices=["mass", "frame"], default="mass",
                   help="derived MMD features of the muon-variable morphing")  # fmt: skip
    p.add_argument("--hzz-feature-weight", type=float, default=1.0, help="weight of the derived MMD features")
    p.add_argument("--hzz-ablation", action="store_true", help="also the MDMM variants without derived features")
    p.add_argument("--min-per-bin", type=int, default=500)
    p.add_argument("--permutations", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument("--only", choices=["synthetic", "reweighting", "hzz"], nargs="+", help="run only these parts")
    args = p.parse_args()
    if args.quick:
        args.events, args.mdmm_steps, args.flow_steps, args.clf_steps, args.hzz_steps = 2000, 60, 60, 100, 60
        args.rw_events, args.rw_flow_steps = 4000, 60
        args.batch_size, args.min_per_bin, args.permutations = 256, 100, 20
    torch.set_num_threads(args.threads)
    t_all = _timer()
    plots = Path(args.plots)
    result = {
        "benchmark": "sim_to_data (MDMM morphing, flow quantile morphing, quantile baselines, reweighting)",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "threads": args.threads,
            "note": "development machine shared with other jobs: timings are inflated",
        },
        "args": vars(args),
    }

    def hzz_all(args, plots):
        res = hzz(args, plots, args.seed)
        res["repeats"] = {}
        for s in range(args.seed + 1, args.seed + 1 + args.hzz_repeats):
            r = hzz(args, None, s)
            res["repeats"][s] = {k: r[k] for k in ("metrics", "metrics_per_data_fold", "noise_floor_data_vs_data",
                                                   "mdmm_fits", "targets", "seconds")}  # fmt: skip
        res["summary"] = _hzz_summary({args.seed: res, **res["repeats"]})
        _print_hzz_summary(res["summary"])
        return res

    parts = {"synthetic": synthetic, "reweighting": reweighting, "hzz_to_zmumu": hzz_all}
    for key, fn in parts.items():
        if args.only is None or key.split("_")[0] in args.only:
            result[key] = fn(args, plots)
    result["seconds"] = t_all()
    print("\ntargets:", json.dumps({k: result[k]["targets"] for k in parts if k in result}, indent=1))
    print(f"total {result['seconds']} s")
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if args.only is not None and out_path.exists():
        # partial run: replace only the parts that ran, keep the others (and the full run's header) as they are
        with open(out_path, encoding="utf-8") as f:
            merged = json.load(f)
        runs = merged.setdefault("partial_runs", {})
        for key in parts:
            if key in result:
                merged[key] = result[key]
                runs[key] = {k: result[k] for k in ("date", "machine", "args", "seconds")}
        result = merged
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))


if __name__ == "__main__":
    main()
