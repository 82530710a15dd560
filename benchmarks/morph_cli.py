"""Issue 17 must-shows through the command line only: ``bgflow-sci morph example|train|apply|report`` on real events.

For each example (``hzz-zmumu``: simulated H→ZZ muon pairs → CMS Z→μμ data; ``zmumu-closure``: the CMS data split
by event in halves, one distorted by the known correlated map :func:`bgflow_sci.hep.examples.closure_distortion`)
and each seed, as a user would type it::

    bgflow-sci morph example NAME --out W --seed S
    bgflow-sci morph train --mc W/mc.root:events --data W/data.root:events --vars pt1 eta1 pt2 eta2 \\
        --context phi1 phi2 --kinds pt1=log pt2=log --derive 'mass=sqrt(2*pt1*pt2*(cosh(eta1-eta2)-cos(phi1-phi2)))' \\
        --holdout 0.5 --holdout-key event_id --seed S [--mc-weight weight] [--ensemble K] --out W/model.pt
    bgflow-sci morph apply W/model.pt --in W/mc.root:events --out W/corrected.root
    bgflow-sci morph report --data W/data.root:events --corrected W/corrected.root:events --model W/model.pt \\
        --mass mass --mass-range 70 110 --out W/report

The numbers come from ``report.json`` (held-out events only: the report picks them from the split recorded in the
model) and, for the checks the report does not make, from the written ROOT file: ``mass_corr`` against the mass
recomputed from the corrected muons, and (closure, ``--ensemble``) the coverage of the truth by ``<var>_corr ±
<var>_corr_unc`` on held-out events.

    python benchmarks/morph_cli.py [--seeds 0 1 2] [--ensemble 5] [--out benchmarks/results/morph_cli]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MASS = "mass=sqrt(2*pt1*pt2*(cosh(eta1-eta2)-cos(phi1-phi2)))"
VARS, CONTEXT = ["pt1", "eta1", "pt2", "eta2"], ["phi1", "phi2"]


def cli(*args: str) -> dict:
    """Run ``bgflow-sci`` in a subprocess (as a user would); returns its JSON output, if any."""
    cmd = [sys.executable, "-m", "bgflow_sci.cli", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {"stdout": proc.stdout}


def run(
    example: str, seed: int, work: Path, ensemble: int, steps: int, holdout: float, options: list[str], vars_: list[str]
) -> dict:
    from bgflow_sci.hep.io import read_tree
    from bgflow_sci.hep.splits import held_out

    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cli("morph", "example", example, "--out", str(work), "--seed", str(seed), "--overwrite")
    mc, data = f"{work}/mc.root:events", f"{work}/data.root:events"
    weight = ["--mc-weight", "weight"] if example == "hzz-zmumu" else []
    train = cli(
        "morph", "train", "--mc", mc, "--data", data, "--vars", *vars_,
        "--context", *[c for c in VARS + CONTEXT if c not in vars_], "--kinds", "pt1=log", "pt2=log",
        "--derive", MASS, "--holdout", str(holdout), "--holdout-key", "event_id",
        "--seed", str(seed), "--steps", str(steps), "--ensemble", str(ensemble), *weight, *options,
        "--out", f"{work}/model.pt", "--overwrite", "--threads", "1", "--no-progress",
    )  # fmt: skip
    cli("morph", "apply", f"{work}/model.pt", "--in", mc, "--out", f"{work}/corrected.root", "--overwrite",
        "--threads", "1", "--no-progress")  # fmt: skip
    cli("morph", "report", "--data", data, "--corrected", f"{work}/corrected.root:events", "--model",
        f"{work}/model.pt", *weight, "--mass", "mass", "--mass-range", "70", "110", "--out", f"{work}/report",
        "--threads", "1", "--no-progress")  # fmt: skip
    report = json.loads((work / "report" / "report.json").read_text())
    m, met = report["mass"], report["metrics"]
    out = {
        "example": example,
        "seed": seed,
        "ensemble": ensemble,
        "seconds": round(time.perf_counter() - t0, 1),
        "events_train": {"mc": train["events_mc"], "data": train["events_data"]},
        "events_report": {"mc": report["events_mc"], "data": report["events_data"]},
        "constraint_satisfied": train["constraint_satisfied"],
        "mass_w1": m["w1"],
        "mass_w1_ratio": m["w1_ratio"],
        "mass_width": m["width"],
        "width_rel_diff": abs(m["width"]["corrected MC"] / m["width"]["data"] - 1),
        "w1": {lab: {v: met[lab]["w1"][v] for v in VARS} for lab in met},
        "w1_ratio": report["corrected_over_uncorrected"]["w1_ratio"],
        "auc": {lab: met[lab].get("auc") for lab in met},
        "warnings": report["warnings"],
    }
    # NAME_corr equals the mass of the corrected muons (written branches, recomputed here with numpy)
    col = {v: v + "_corr" if v in vars_ else v for v in VARS}
    names = [*col.values(), "phi1", "phi2", "mass_corr", "event_id"]
    extra = [v + "_corr_unc" for v in ("pt1", "pt2", "mass")] if ensemble > 1 else []
    truth = ["pt1_true", "pt2_true", "mass_true"] if example == "zmumu-closure" else []
    got, _ = read_tree(f"{work}/corrected.root", "events", names + extra + truth, library="np")
    p1, e1, p2, e2 = (got[col[v]] for v in VARS)
    mass = np.sqrt(2 * p1 * p2 * (np.cosh(e1 - e2) - np.cos(got["phi1"] - got["phi2"])))
    out["mass_corr_max_rel_diff"] = float(np.max(np.abs(got["mass_corr"] / mass - 1)))
    if ensemble > 1 and truth:
        held = held_out(got["event_id"], holdout, seed)
        cov = {}
        for v in ("pt1", "pt2", "mass"):
            err = np.abs(got[v + "_corr"][held] - got[v + "_true"][held])
            unc = got[v + "_corr_unc"][held]
            cov[v] = {
                "within_1sigma": float(np.mean(err <= unc)),
                "within_2sigma": float(np.mean(err <= 2 * unc)),
                "median_unc": float(np.median(unc)),
                "median_abs_error": float(np.median(err)),
            }
        out["coverage"] = cov
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--examples", nargs="+", default=["hzz-zmumu", "zmumu-closure"])
    ap.add_argument("--ensemble", type=int, default=5, help="closure: also an ensemble of this size (0: none)")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--holdout", type=float, default=0.5)
    ap.add_argument("--validation", type=float, default=0.3, help="morph train --validation (0: none)")
    ap.add_argument("--feature-weight", type=float, default=3.0, help="morph train --feature-weight")
    ap.add_argument("--tag", default="", help="suffix of results<tag>.json")
    ap.add_argument("--vars", nargs="+", default=VARS, help="corrected variables (the other muon variables: context)")
    ap.add_argument("--batch-size", type=int, default=0, help="morph train --batch-size (0: its default)")
    ap.add_argument("--out", default="benchmarks/results/morph_cli")
    args = ap.parse_args()
    out = Path(args.out)
    results = []
    for example in args.examples:
        for seed in args.seeds:
            for k in [1] + ([args.ensemble] if args.ensemble > 1 and example == "zmumu-closure" else []):
                options = ["--validation", str(args.validation), "--feature-weight", str(args.feature_weight)]
                options += ["--batch-size", str(args.batch_size)] if args.batch_size else []
                work = out / "work" / f"{example}_s{seed}_k{k}{args.tag}"
                r = run(example, seed, work, k, args.steps, args.holdout, options, args.vars)
                results.append(r)
                print(json.dumps({x: r[x] for x in ("example", "seed", "ensemble", "mass_w1_ratio", "width_rel_diff",
                                                    "w1_ratio", "seconds")}), flush=True)  # fmt: skip
    summary = {}
    for example in args.examples:
        for k in sorted({r["ensemble"] for r in results if r["example"] == example}):
            rs = [r for r in results if r["example"] == example and r["ensemble"] == k]
            summary[f"{example}_k{k}"] = {
                "seeds": [r["seed"] for r in rs],
                "worst_mass_w1_ratio": max(r["mass_w1_ratio"] for r in rs),
                "worst_width_rel_diff": max(r["width_rel_diff"] for r in rs),
                "worst_pt_w1_ratio": max(max(r["w1_ratio"]["pt1"], r["w1_ratio"]["pt2"]) for r in rs),
                "max_mass_corr_rel_diff": max(r["mass_corr_max_rel_diff"] for r in rs),
            }
            if "coverage" in rs[0]:
                summary[f"{example}_k{k}"]["coverage_1sigma"] = {
                    v: [r["coverage"][v]["within_1sigma"] for r in rs] for v in ("pt1", "pt2", "mass")
                }
    blob = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, 1 torch thread per command",
        "args": vars(args),
        "summary": summary,
        "runs": results,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"results{args.tag}.json").write_text(json.dumps(blob, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
