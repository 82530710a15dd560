"""Tutorial 8 — correct simulated muons on real CMS events from the command line: held-out report, derived mass,
ensemble uncertainties, many files.

Run:  python tutorials/08_hep_real_events_cli.py [--quick] [--out DIR]

Everything below is what an analyst types in a shell; the script runs the same commands in subprocesses and
reads the JSON they print and write.  The example is a **closure test on real data**: the CMS 2010 Z→μμ events
shipped with ``scikit-hep-testdata`` are split by physical event into two halves, and one half ("MC") gets its
muon momenta distorted by a known correlated map (an η-dependent scale and a cross-talk between the two muons,
:func:`bgflow_sci.hep.examples.closure_distortion`).  Because the truth is kept (``pt1_true``, ...), we can check
not only that the corrected MC looks like data but also whether the ensemble's per-event uncertainty covers the
truth.

::

    bgflow-sci morph example zmumu-closure --out zmumu/            # mc.root, data.root (tree "events")
    # train on half of each file (split by event number, so no event is on both sides), the dimuon mass in the
    # constraint, 5 models on bootstrap resamples for an uncertainty
    bgflow-sci morph train --mc zmumu/mc.root:events --data zmumu/data.root:events --vars pt1 pt2 \\
        --context eta1 eta2 phi1 phi2 --kinds pt1=log pt2=log \\
        --derive 'mass=sqrt(2*pt1*pt2*(cosh(eta1-eta2)-cos(phi1-phi2)))' --feature-weight 3 \\
        --holdout 0.5 --holdout-key event_id --ensemble 5 --batch-size 512 --steps 3000 --out zmumu/model.pt
    # pt1_corr, pt2_corr (ensemble mean), *_corr_unc (spread), mass_corr (recomputed from the corrected muons)
    bgflow-sci morph apply zmumu/model.pt --in zmumu/mc.root:events --out zmumu/corrected.root
    # held-out events only (the split is stored in the model), with the data-vs-data floor of every metric
    bgflow-sci morph report --data zmumu/data.root:events --corrected zmumu/corrected.root:events \\
        --model zmumu/model.pt --mass mass --mass-range 70 110 --out zmumu/report
    # many files: one output per input, 2 local Dask workers (or --scheduler tcp://...)
    bgflow-sci morph apply zmumu/model.pt --in 'zmumu/[dm]*.root:events' --out zmumu/corrected/ --workers 2

What to look at: the report table (``MC``, ``corrected MC`` and the ``data vs data (floor)`` row: a metric of
corrected MC at the floor is as good as these sample sizes can tell), the mass line (W1 to data and the peak
width), the mass plot ``hep_cli_mass.png`` (CMS-like style, data/MC ratio panel, the ensemble envelope) and the
coverage printed at the end.  With only ~250 physical events per half the floors are large; read every number
against its floor.
Figures: ``tutorials/figures/hep_cli_*.png`` in full mode (≈ 15 min on one CPU thread), ``--out`` otherwise.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

FIGURES = Path(__file__).resolve().parent / "figures"
MASS = "mass=sqrt(2*pt1*pt2*(cosh(eta1-eta2)-cos(phi1-phi2)))"


def bgflow_sci(*args: str) -> dict:
    """``bgflow-sci ARGS`` in a subprocess; returns the JSON it prints (``{}`` if it prints a table)."""
    proc = subprocess.run([sys.executable, "-m", "bgflow_sci.cli", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bgflow-sci {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    print(proc.stdout if not proc.stdout.lstrip().startswith("{") else "", end="")
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {}


def main(quick: bool = False, out: str | None = None) -> dict:
    from bgflow_sci.hep.io import read_tree
    from bgflow_sci.hep.splits import held_out

    out_dir = Path(out) if out is not None else (FIGURES if not quick else Path("tutorial_out"))
    out_dir.mkdir(parents=True, exist_ok=True)
    steps, members = ("30", "2") if quick else ("3000", "5")
    work = Path(tempfile.mkdtemp(prefix="zmumu_"))
    ex = bgflow_sci("morph", "example", "zmumu-closure", "--out", str(work))
    print(f"MC: {ex['events_mc']} rows (distorted half), data: {ex['events_data']} rows")

    mc, data = f"{work}/mc.root:events", f"{work}/data.root:events"
    train = bgflow_sci(
        "morph", "train", "--mc", mc, "--data", data, "--vars", "pt1", "pt2",
        "--context", "eta1", "eta2", "phi1", "phi2", "--kinds", "pt1=log", "pt2=log",
        "--derive", MASS, "--feature-weight", "3", "--holdout", "0.5", "--holdout-key", "event_id",
        "--ensemble", members, "--batch-size", "512", "--steps", steps, "--out", f"{work}/model.pt",
        "--threads", "1", "--no-progress",
    )  # fmt: skip
    print(f"trained {train['ensemble']} members on {train['events_mc']} MC / {train['events_data']} data events")
    bgflow_sci("morph", "apply", f"{work}/model.pt", "--in", mc, "--out", f"{work}/corrected.root", "--no-progress")
    bgflow_sci(
        "morph", "report", "--data", data, "--corrected", f"{work}/corrected.root:events", "--model",
        f"{work}/model.pt", "--mass", "mass", "--mass-range", "70", "110", "--out", f"{work}/report",
        "--no-progress", "--threads", "1", *(["--no-auc", "--permutations", "20"] if quick else []),
    )  # fmt: skip
    report = json.loads((work / "report" / "report.json").read_text())

    # the truth is known in a closure test: does <var>_corr ± <var>_corr_unc cover it on held-out events?
    names = ["pt1", "pt2", "pt1_corr", "pt2_corr", "pt1_corr_unc", "pt2_corr_unc", "pt1_true", "pt2_true"]
    got, _ = read_tree(work / "corrected.root", "events", [*names, "event_id"], library="np")
    held = held_out(got["event_id"], 0.5, 0)
    coverage = {
        v: float(np.mean(np.abs(got[f"{v}_corr"] - got[f"{v}_true"])[held] <= got[f"{v}_corr_unc"][held]))
        for v in ("pt1", "pt2")
    }
    print("fraction of held-out events with |corrected - true| <= spread (nominal 0.68): " + str(coverage))

    # many files at once: one output per input (here without Dask, workers=0, to keep the tutorial light)
    many = {}
    if not quick:  # (the test suite checks this path on its own)
        many = bgflow_sci(
            "morph", "apply", f"{work}/model.pt", "--in", f"{work}/[dm]*.root:events", "--out", f"{work}/many/",
            "--workers", "0", "--no-progress",
        )  # fmt: skip
    for plot, name in (("mass", "hep_cli_mass.png"), ("variables", "hep_cli_variables.png")):
        shutil.copy(work / "report" / (plot + ".png"), out_dir / name)
    shutil.rmtree(work)
    print(f"figures in {out_dir}/hep_cli_*.png")
    return {"report": report, "coverage": coverage, "train": train, "many": many}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="30 steps, 2 members (used by the test suite)")
    parser.add_argument(
        "--out", default=None, help="folder for the plots (default: tutorials/figures; quick: tutorial_out)"
    )
    args = parser.parse_args()
    main(args.quick, args.out)
