"""Alanine tetrapeptide ACE-(ALA)3-NME (amber14-all + implicit/obc2, 300 K) through the generic config path only:
``bgflow-sci train alanine_tetrapeptide --set train.seed=K`` for several seeds, then ESS, ΔF(β vs α_R per residue)
and the F(φ_i), F(ψ_i) profiles of the reweighted flow against the shipped reference MD (``bgflow-sci md``).

    OMP_NUM_THREADS=1 python benchmarks/alanine_tetrapeptide.py --seeds 0 1 2 [--workers 2] [--set KEY=VALUE ...]

Writes ``OUT/seed<K>/`` (the train output folders; OUT default ``benchmarks/results/alanine_tetrapeptide``),
``OUT.json`` (per seed and worst seed) and ``OUT_phi.png`` (F(φ_i) of every seed against the MD).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TORSIONS = ("phi_2", "phi_3", "phi_4", "psi_2", "psi_3", "psi_4")


def collect(seed: int, out: Path, wall: float | None = None) -> dict:
    """The results of a finished ``bgflow-sci train`` run in ``out`` (wall time: the given one, else train.json's)."""
    results = json.loads((out / "results.json").read_text())
    train = json.loads((out / "train.json").read_text())
    return {
        "seed": seed,
        "wall_s": wall if wall is not None else train["train_wall_s"],
        "train_cpu_s": train.get("train_cpu_s"),
        "ess": results["ess"],
        "samples": results["samples"],
        "heldout_nll": train.get("heldout_nll"),
        "delta_f": results.get("delta_f", {}),
        "profiles_vs_md": {k: results["profiles"][k].get("vs_reference") for k in TORSIONS if k in results["profiles"]},
        "flow_only_vs_md": {
            k: _flow_only_distance(results["profiles"][k]) for k in TORSIONS if k in results["profiles"]
        },
        "profiles": {k: results["profiles"][k] for k in TORSIONS if k in results["profiles"]},
    }


def _flow_only_distance(profile: dict) -> float:
    """rms distance (kT) of the unweighted flow's profile to the MD's (``reweighting.profile_difference``)."""
    import torch

    from bgflow_sci.reweighting import profile_difference

    def arr(key):
        return torch.tensor([np.inf if v is None else v for v in profile[key]], dtype=torch.float64)

    return profile_difference(arr("flow_only"), arr("reference")).rms


def train_seed(seed: int, out: Path, overrides: list[str]) -> dict:
    """One ``bgflow-sci train`` run (one thread) into ``out``; returns its results with the wall time (s)."""
    cmd = [sys.executable, "-m", "bgflow_sci.cli", "train", "alanine_tetrapeptide", "--out", str(out)]
    cmd += ["--threads", "1", "--no-progress", "--set", f"train.seed={seed}"]
    for item in overrides:
        cmd += ["--set", item]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"seed {seed} failed:\n{proc.stderr[-3000:]}")
    return collect(seed, out, wall)


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=True)
    for ax, name in zip(axes, ("phi_2", "phi_3", "phi_4")):
        ref = runs[0]["profiles"][name]
        c = np.asarray(ref["centers"], dtype=float)
        r = np.asarray([np.nan if v is None else v for v in ref["reference"]], dtype=float)
        ax.plot(c, r - np.nanmin(r), "k-", lw=2, label="MD (bgflow-sci md)")
        for run in runs:
            p = run["profiles"][name]
            f = np.asarray([np.nan if v is None else v for v in p["reweighted"]], dtype=float)
            e = np.asarray([np.nan if v is None else v for v in p["error"]], dtype=float)
            line = ax.errorbar(
                c, f - np.nanmin(f), e, fmt=".-", ms=3, capsize=2, label=f"reweighted, seed {run['seed']}"
            )
            q = np.asarray([np.nan if v is None else v for v in p["flow_only"]], dtype=float)
            ax.plot(c, q - np.nanmin(q), "--", color=line[0].get_color(), lw=1, label=f"flow alone, seed {run['seed']}")
        ax.set_xlabel(name.replace("_", " ") + " (rad)")
        ax.set_xlim(-np.pi, 0.5)
        ax.set_ylim(-0.5, 8)
    axes[0].set_ylabel("F (kT)")
    axes[0].legend(fontsize=7)
    fig.suptitle("ACE-(ALA)3-NME, amber14-all + OBC2, 300 K")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=1, help="seeds trained at once (one thread each)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="SECTION.KEY=VALUE for train")
    parser.add_argument("--out", type=Path, default=RESULTS / "alanine_tetrapeptide")
    parser.add_argument("--collect", action="store_true", help="summarise finished runs in OUT/seed<K> (no training)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.collect:
        runs = [collect(s, args.out / f"seed{s}") for s in args.seeds]
    else:
        with ThreadPoolExecutor(args.workers) as pool:
            runs = list(pool.map(lambda s: train_seed(s, args.out / f"seed{s}", args.overrides), args.seeds))
    worst = min(runs, key=lambda r: r["ess"])
    summary = {
        "date": datetime.now(timezone.utc).isoformat(timespec="minutes"),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "overrides": args.overrides,
        "worst_seed": worst["seed"],
        "runs": [{k: v for k, v in r.items() if k != "profiles"} for r in runs],
    }
    (args.out.parent / f"{args.out.name}.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    plot(runs, args.out.parent / f"{args.out.name}_phi.png")
    print(
        "| seed | ESS | wall (min) | "
        + " | ".join(f"F({n}) vs MD: reweighted / flow (kT rms)" for n in TORSIONS)
        + " |"
    )
    for r in runs:
        rms = " | ".join(
            f"{(r['profiles_vs_md'].get(n) or {}).get('rms', float('nan')):.2f} / {r['flow_only_vs_md'][n]:.2f}"
            for n in TORSIONS
        )
        print(f"| {r['seed']} | {100 * r['ess']:.3g} % | {r['wall_s'] / 60:.1f} | {rms} |")
    for name in runs[0]["delta_f"]:
        vals = ", ".join(
            f"{r['delta_f'][name]['reweighted']:.2f} ± {r['delta_f'][name]['error']:.2f} "
            f"(flow {r['delta_f'][name]['flow_only']:.2f})"
            for r in runs
        )
        ref = runs[0]["delta_f"][name]
        print(
            f"ΔF {name}: reweighted {vals}; MD {ref.get('reference', float('nan')):.2f} ± "
            f"{ref.get('reference_error', float('nan')):.2f} kT"
        )


if __name__ == "__main__":
    main()
