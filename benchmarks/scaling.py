"""Scaling out on CPUs: ``bgflow-sci train`` under torchrun against one process, and sample sets with Dask.

In one run (all through the CLI, as a user would):

* ``train``: the alanine dipeptide Boltzmann generator (one generator, no state mixture), ``--ml-steps`` maximum
  likelihood and ``--kl-steps`` reverse-KL steps, global batch ``--batch``; one process with ``--ranks`` threads
  against ``torchrun --nproc_per_node=RANKS`` with one thread each: wall time, steps per second and the largest
  parameter difference of the two ``model.pt`` (float64, so the difference is round-off only).
* ``samples``: ``bgflow-sci sample --chunk-size`` of ``--samples`` samples in ``--chunks`` files, in this process
  (``--workers 0``) and on a local Dask cluster of ``--ranks`` workers; then ``bgflow-sci reweight`` of the folder
  both ways: wall times, samples per second, and the largest difference of the estimates.

    python benchmarks/scaling.py --out benchmarks/results/scaling.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def run(cmd: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def max_diff(a: Path, b: Path) -> float:
    from bgflow_sci.io import load_checkpoint

    sa = load_checkpoint(a, "boltzmann_generator")["state_dict"]
    sb = load_checkpoint(b, "boltzmann_generator")["state_dict"]
    return max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa if sa[k].is_floating_point())


def loss_agreement(a: Path, b: Path) -> dict:
    """How long the logged losses of the two runs agree: the largest relative difference over the first 50 steps
    and the first logged step where it exceeds 1e-6 (round-off, amplified by the optimisation, grows over a run)."""
    from bgflow_sci.training import read_metrics

    ra, rb = read_metrics(a), read_metrics(b)
    first, early = None, 0.0
    for x, y in zip(ra, rb):
        keys = [k for k in x if k.startswith("loss/") and x[k] is not None]
        rel = max(abs(x[k] - y[k]) / max(abs(x[k]), 1e-300) for k in keys)
        if x["step"] < 50:
            early = max(early, rel)
        if first is None and rel > 1e-6:
            first = x["step"]
    return {"max_rel_loss_difference_first_50_steps": early, "first_step_rel_loss_difference_above_1e-6": first}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--ml-steps", type=int, default=200)
    p.add_argument("--kl-steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--samples", type=int, default=200_000)
    p.add_argument("--chunks", type=int, default=8)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bgflow_scaling_"))
    py, r = sys.executable, args.ranks
    settings = ["--no-progress", "--no-evaluate", "--dtype", "float64", "--set", f"train.ml_steps={args.ml_steps}",
                "--set", f"train.kl_steps={args.kl_steps}", "--set", f"train.batch_size={args.batch}",
                "--set", f"train.kl_batch_size={args.batch}", "--set", "model.states=null"]  # fmt: skip
    one = run([py, "-m", "bgflow_sci.cli", "train", "alanine_dipeptide", "--out", str(work / "one"),
               "--threads", str(r), *settings], r)  # fmt: skip
    ddp = run([py, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={r}", "-m", "bgflow_sci.cli",
               "train", "alanine_dipeptide", "--out", str(work / "ddp"), "--threads", "1", *settings], 1)  # fmt: skip
    steps = args.ml_steps + args.kl_steps
    train = {
        "steps": steps,
        "global_batch": args.batch,
        "one_process_wall_s": round(one, 1),
        "torchrun_wall_s": round(ddp, 1),
        "one_process_steps_per_s": round(steps / one, 2),
        "torchrun_steps_per_s": round(steps / ddp, 2),
        "max_abs_parameter_difference": max_diff(work / "one" / "model.pt", work / "ddp" / "model.pt"),
        **loss_agreement(work / "one" / "metrics.jsonl", work / "ddp" / "metrics.jsonl"),
        "note": "wall times include start-up (imports, data, building the model) of every process",
    }
    print(json.dumps(train, indent=2), file=sys.stderr)

    model, chunk = str(work / "one" / "model.pt"), str(-(-args.samples // args.chunks))
    samples = {}
    for label, workers in (("in_process", "0"), (f"dask_{r}_workers", str(r))):
        folder = work / f"samples_{label}"
        t_draw = run([py, "-m", "bgflow_sci.cli", "sample", model, "-n", str(args.samples), "--chunk-size", chunk,
                      "--workers", workers, "--out", str(folder), "--threads", str(r if workers == "0" else 1)],
                     r if workers == "0" else 1)  # fmt: skip
        t_rw = run([py, "-m", "bgflow_sci.cli", "reweight", str(folder), "--workers", workers, "--out",
                    str(work / f"rw_{label}")], r if workers == "0" else 1)  # fmt: skip
        res = json.loads((work / f"rw_{label}" / "results.json").read_text())
        samples[label] = {"draw_wall_s": round(t_draw, 1), "draw_samples_per_s": round(args.samples / t_draw),
                          "reweight_wall_s": round(t_rw, 1), "ess": res["ess"],
                          "delta_f": {k: v["reweighted"] for k, v in res.get("delta_f", {}).items()}}  # fmt: skip
    a, b = samples["in_process"], samples[f"dask_{r}_workers"]
    samples["max_abs_estimate_difference"] = max(
        [abs(a["ess"] - b["ess"])] + [abs(a["delta_f"][k] - b["delta_f"][k]) for k in a["delta_f"]]
    )
    summary = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "ranks": r,
        "train": train,
        "samples": {"n": args.samples, "chunks": args.chunks, **samples},
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
