"""Tutorial 4 — morph simulated photons into data-like photons without pairs, and reweight them (HEP, ROOT files).

Run:  python tutorials/04_hep_sim_to_data.py [--quick] [--out DIR]

In an H→γγ analysis simulated photons differ from real ones in shower shapes (R9, σiηiη) and isolation, in a way
that depends on pT and η, and no simulated event has a "data twin".  We

1. write a synthetic H→γγ-like MC and "data" sample to ROOT files (:mod:`bgflow_sci.hep.synthetic`; the true
   MC → data difference is known) and read them back with :mod:`bgflow_sci.hep.io`;
2. train the MDMM morphing flow (Gendreau-Distler, Le Pottier, Wang, arXiv:2504.12343): a conditional masked
   autoregressive flow x' = f(x | pT, η) that moves each photon as little as possible (transport cost) subject to
   MMD²(morphed MC, data) ≤ ε, the data-vs-data noise floor; the Lagrange multiplier λ is learnt by MDMM and its
   history is printed and plotted;
3. apply it to held-out MC and write ``<branch>_corr`` branches to a new ROOT file next to the originals;
4. compare with per-variable quantile mapping (the simplest correction: it fixes the 1D marginals but not the
   correlations);
5. compute per-event weights that reweight MC to data instead (a classifier density ratio), with the ESS;
6. score everything with the package metrics (per-variable W1, correlation-matrix error, classifier AUC, MMD) and
   plot the variables with ratio panels, the correlation matrices and m_γγ after a photon-ID selection.

The same steps from the shell::

    bgflow-sci morph train --mc hgg_train.root:mc --data hgg_train.root:data --vars r9_1 sieie_1 iso_1 \\
        --context pt_1 eta_1 --kinds r9_1=logit sieie_1=log iso_1=spike pt_1=log --out model.pt
    bgflow-sci morph apply model.pt --in hgg_test.root:mc --out hgg_test_corrected.root
    bgflow-sci morph report --data hgg_test.root:data --corrected hgg_test_corrected.root:mc --model model.pt

(the CLI morphs one set of branches; here both photons share one per-photon model, as in the benchmark).
Figures: ``tutorials/figures/hep_*.png`` in full mode (≈ 3 min on one CPU thread), ``--out`` otherwise.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from bgflow_sci.hep import metrics as hm
from bgflow_sci.hep.event_weights import ClassifierReweighter, clip_weights, histogram_chi2
from bgflow_sci.hep.io import read_tree, write_corrected
from bgflow_sci.hep.morphing import MorphingFlow, fit_morphing
from bgflow_sci.hep.plots import plot_correlations, plot_mass, plot_variables
from bgflow_sci.hep.quantile import QuantileMapper
from bgflow_sci.hep.synthetic import CORRECTED, from_photon_table, photon_table, write_root
from bgflow_sci.plotting import plot_metrics
from bgflow_sci.reweighting import ess as kish_ess

VARS = list(CORRECTED)  # r9, sieie, iso: what simulation gets wrong
CTX = ["pt", "eta"]  # the kinematics the correction depends on
KINDS = ["logit", "log", "spike"]  # R9 ∈ (0, 1); σiηiη > 0; isolation has a spike at exactly 0
CTX_KINDS = ["log", "identity"]
BRANCHES = [f"{v}_{i}" for i in (1, 2) for v in VARS + CTX] + ["mass"]
FIGURES = Path(__file__).resolve().parent / "figures"


def photon_id(sample: dict) -> np.ndarray:
    """A toy photon identification on both photons: R9 > 0.85 and isolation < 1.5 GeV."""
    return (sample["r9_1"] > 0.85) & (sample["r9_2"] > 0.85) & (sample["iso_1"] < 1.5) & (sample["iso_2"] < 1.5)


def event_features(sample: dict) -> np.ndarray:
    """Per-event rows (both photons' shower shapes and kinematics) for the event-level reweighting."""
    return np.stack([sample[b] for b in BRANCHES if b != "mass"], axis=1)


def main(quick: bool = False, out: str | None = None) -> dict:
    torch.manual_seed(0)
    out_dir = Path(out) if out is not None else (FIGURES if not quick else Path("tutorial_out"))
    n_events, steps, batch, clf_steps = (3000, 300, 256, 400) if quick else (20_000, 1500, 1024, 3000)
    work = tempfile.TemporaryDirectory()
    root = Path(work.name)

    # 1. ROOT files: trees "mc" and "data" in each; one file to train on, one held out ------------------------------
    train_file = write_root(root / "hgg_train.root", n_events, n_events, seed=0)
    test_file = write_root(root / "hgg_test.root", n_events, n_events, seed=1)
    read = {(f, t): read_tree(f, t, BRANCHES, library="np")[0] for f in (train_file, test_file) for t in ("mc", "data")}
    mc, data = read[train_file, "mc"], read[train_file, "data"]
    mc_test, data_test = read[test_file, "mc"], read[test_file, "data"]
    # one row per photon: (r9, sieie, iso) and its context (pt, eta); both photons share the correction
    xm, cm = photon_table(mc, VARS), photon_table(mc, CTX)
    xd, cd = photon_table(data, VARS), photon_table(data, CTX)
    xmt, cmt = photon_table(mc_test, VARS), photon_table(mc_test, CTX)
    xdt, cdt = photon_table(data_test, VARS), photon_table(data_test, CTX)
    print(f"{len(xm)} MC and {len(xd)} data photons to train on, {len(xmt)} / {len(xdt)} held out")

    # 2. MDMM morphing: min transport cost  s.t.  MMD²((x', c), data) / ε ≤ 1 -------------------------------------
    model = MorphingFlow(VARS, CTX, KINDS, CTX_KINDS, transformer="affine", n_layers=4, seed=0)
    result = fit_morphing(model, xm, xd, cm, cd, steps=steps, batch_size=batch, lr=2e-3, seed=0, n_eval_batches=20)
    print(f"\nε (data-vs-data MMD² noise floor at batch {batch}) = {result.objective.epsilon:.3g}")
    print(" step  transport  MMD²/ε      λ")
    for r in result.history[:: max(steps // 10, 1)] + [result.history[-1]]:
        print(f"{r['step']:5d}  {r['loss/transport']:9.4f}  {r['mmd/value']:6.2f}  {r['mmd/lambda']:6.3f}")
    print(
        f"final: MMD²/ε = {result.final['ratio']:.2f} over {20} fresh batch pairs, constraint met: {result.satisfied}"
    )
    plot_metrics(
        result.history,
        out_dir / "hep_mdmm_history.png",
        log_scale=True,
        keys=["mmd/value", "mmd/lambda", "loss/transport"],
    )

    # 3. apply to the held-out MC; write <branch>_corr next to the originals in a new file, read it back ------------
    morphed = model.morph(xmt, cmt, seed=0)
    corrected_file = write_corrected(
        test_file, root / "hgg_test_corrected.root", "mc", from_photon_table(morphed, VARS)
    )
    names_corr = [f"{v}_{i}_corr" for i in (1, 2) for v in VARS]
    back, _ = read_tree(corrected_file, "mc", names_corr + ["r9_1"], library="np")
    back_table = photon_table({k[: -len("_corr")]: v for k, v in back.items() if k.endswith("_corr")}, VARS)
    roundtrip = float(np.abs(back_table - morphed).max())
    assert np.array_equal(back["r9_1"], mc_test["r9_1"]), "the original branches must be copied untouched"
    print(f"\nwrote {', '.join(names_corr)} to {corrected_file.name}; max |read back - in memory| = {roundtrip:.1e}")

    # 4. baseline: per-variable quantile mapping (fixes each marginal, ignores correlations and kinematics) ---------
    quantile = QuantileMapper(seed=0).fit(xm, xd, names=VARS).transform(xmt)

    # 5. reweighting instead of morphing: w(event) = p_data / p_MC from a class-balanced classifier -----------------
    torch.manual_seed(0)
    clf = ClassifierReweighter(len(BRANCHES) - 1).fit(
        event_features(mc), event_features(data), steps=clf_steps, batch_size=512, seed=0
    )
    weights = clip_weights(clf.log_weights(event_features(mc_test)).exp(), max_quantile=0.999)
    ess = kish_ess(torch.log(torch.as_tensor(weights)))  # Kish fraction of the clipped (non-negative) weights
    w_photon = np.repeat(weights, 2)  # photon rows are ordered event by event
    chi2 = {
        label: {v: histogram_chi2(xmt[:, j], xdt[:, j], w, bins=30)["chi2_ndf"] for j, v in enumerate(VARS)}
        for label, w in (("MC", None), ("reweighted MC", w_photon))
    }
    print(f"\nclassifier weights: ESS = {ess:.3f} (fraction of events), max weight {weights.max():.2f}")
    for label, c in chi2.items():
        print(f"  χ²/ndf vs data, {label:14s}: " + ", ".join(f"{v} {x:.2f}" for v, x in c.items()))

    # 6. metrics on held-out photons, features (r9, sieie, iso, pt, eta): the classifier sees the kinematics too -----
    data_full = np.concatenate([xdt, cdt], 1)
    candidates = {
        "MC": np.concatenate([xmt, cmt], 1),
        "quantile (per variable)": np.concatenate([quantile, cmt], 1),
        "MDMM morphing": np.concatenate([morphed, cmt], 1),
        "reweighted MC": (np.concatenate([xmt, cmt], 1), w_photon),
    }
    metrics = hm.compare(
        data_full,
        candidates,
        names=VARS + CTX,
        mmd_max_events=800 if quick else 2000,  # the permutation test holds a (2 n)² kernel matrix
        n_permutations=50 if quick else 200,
        seed=0,
    )
    print("\nheld-out data vs candidates:\n" + hm.format_table(metrics))

    # photon-ID efficiency and the m_γγ spectrum of selected events
    corr_sample = {**mc_test, **from_photon_table(morphed, VARS)}
    sel = {"data": photon_id(data_test), "MC": photon_id(mc_test), "MDMM morphing": photon_id(corr_sample)}
    efficiency = {k: float(s.mean()) for k, s in sel.items()}
    efficiency["reweighted MC"] = float((weights * sel["MC"]).sum() / weights.sum())
    print("photon-ID efficiency: " + ", ".join(f"{k} {v:.3f}" for k, v in efficiency.items()))

    plot_variables(
        {"data": xdt, "MC": xmt, "quantile": quantile, "MDMM": morphed, "MC × weights": (xmt, w_photon)},
        out_dir / "hep_variables.png",
        names=VARS,
        log_y=("iso",),
    )
    plot_correlations(
        {"data": data_full, "MC": candidates["MC"], "quantile": candidates["quantile (per variable)"],
         "MDMM": candidates["MDMM morphing"]},
        out_dir / "hep_correlations.png",
        names=VARS + CTX,
    )  # fmt: skip
    plot_mass(
        {
            "data (photon ID)": data_test["mass"][sel["data"]],
            "MC (photon ID)": mc_test["mass"][sel["MC"]],
            "MDMM (photon ID)": mc_test["mass"][sel["MDMM morphing"]],
            "MC × weights (photon ID)": (mc_test["mass"][sel["MC"]], weights[sel["MC"]]),
        },
        out_dir / "hep_mass.png",
    )
    work.cleanup()
    print(f"figures in {out_dir}/hep_*.png")
    return {
        "metrics": metrics,
        "auc": {k: m["auc"] for k, m in metrics.items()},
        "corr_diff": {k: m["corr_diff"] for k, m in metrics.items()},
        "w1": {k: m["w1"] for k, m in metrics.items()},
        "ess": ess,
        "chi2_ndf": chi2,
        "efficiency": efficiency,
        "final_lambda": float(result.multipliers[-1]),
        "mmd_ratio": result.final["ratio"],
        "constraint_met": bool(result.satisfied),
        "roundtrip_max_abs_diff": roundtrip,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps and events (used by the test suite)")
    parser.add_argument(
        "--out", default=None, help="folder for the plots (default: tutorials/figures; quick: tutorial_out)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    main(args.quick, args.out)
