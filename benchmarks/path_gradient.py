"""Path-gradient reverse KL against the standard estimator: cost per training step and gradient variance.

For each model, in one run: the time of a reverse-KL training step (``Trainer`` with ``ReverseKL(gradient=...)``,
median over ``--steps`` steps after a warm-up) with the standard (``"total"``) and the path gradient, their ratio,
and the summed per-parameter variance of the two gradient estimators over ``--batches`` batches at the same
parameters (paired draws), near and away from convergence:

* ``gaussian``: a RealNVP (4 couplings) on a 2D Gaussian target, after 300 path-gradient steps (near convergence);
* ``alanine``: the shipped alanine dipeptide generator (one generator, internal coordinates, spline couplings, the
  torch force field of OBC2 as target, the shipped ``train.energy_cutoff``) after ``--ml-steps`` maximum-likelihood
  steps on the MD data (away from convergence).

    python benchmarks/path_gradient.py --out benchmarks/results/path_gradient.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from bgflow_sci.training import MaximumLikelihood, ReverseKL, Trainer


def step_time(bg, gradient: str, batch: int, steps: int, cutoff: float | None) -> float:
    loss = ReverseKL(bg, batch, gradient=gradient, energy_cutoff=cutoff)
    trainer = Trainer(bg, {"kl": loss}, lr=0.0, progress=False, log_every=10**9)
    trainer.train(2)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        trainer.train(1)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gradient_variance(bg, gradient: str, batch: int, batches: int, cutoff: float | None) -> float:
    loss = ReverseKL(bg, batch, gradient=gradient, energy_cutoff=cutoff)
    params = [p for p in bg.parameters() if p.requires_grad]
    grads = []
    for b in range(batches):
        torch.manual_seed(10_000 + b)
        g = torch.autograd.grad(loss(), params, allow_unused=True)
        grads.append(torch.cat([(x if x is not None else torch.zeros_like(p)).reshape(-1) for x, p in zip(g, params)]))
    return float(torch.stack(grads).var(0).sum())


def measure(name: str, bg, batch: int, steps: int, batches: int, cutoff: float | None = None) -> dict:
    out = {"batch": batch, "energy_cutoff": cutoff}
    for gradient in ("total", "path"):
        out[f"{gradient}_step_s"] = step_time(bg, gradient, batch, steps, cutoff)
        out[f"{gradient}_gradient_variance"] = gradient_variance(bg, gradient, batch, batches, cutoff)
    out["cost_ratio"] = out["path_step_s"] / out["total_step_s"]
    out["variance_ratio"] = out["path_gradient_variance"] / out["total_gradient_variance"]
    print(name, json.dumps(out), flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batches", type=int, default=50)
    p.add_argument("--ml-steps", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from bgflow_sci import BoltzmannGenerator
    from bgflow_sci.distributions import Normal
    from bgflow_sci.energies import FunctionEnergy
    from bgflow_sci.flows import real_nvp

    results = {}
    torch.manual_seed(0)
    mean, std = torch.tensor([0.5, -1.0]), torch.tensor([0.7, 1.3])
    target = FunctionEnergy(lambda x: 0.5 * (((x - mean) / std) ** 2).sum(-1), dim=2)
    bg = BoltzmannGenerator(Normal(2), real_nvp(2, 4, hidden=(64, 64)), target)
    Trainer(bg, {"kl": ReverseKL(bg, 256, gradient="path")}, lr=5e-3, progress=False).train(300)
    results["gaussian"] = measure("gaussian", bg, 256, args.steps, args.batches)

    from bgflow_sci.workflows import load_system
    from bgflow_sci.workflows.config import system_config
    from bgflow_sci.workflows.train import build_training_split

    module = load_system("alanine_dipeptide")
    config = system_config(module, None, {"model": {"states": None}, "train": {"max_frames": 20000}})
    bg, x_train, _ = build_training_split(module, config, torch.device("cpu"), torch.float32)
    Trainer(bg, {"ml": MaximumLikelihood(bg, x_train, 256)}, lr=1e-3, progress=False, seed=0).train(args.ml_steps)
    cutoff = config["train"]["energy_cutoff"]  # the shipped training's linear-logarithmic energy cut (kT)
    results["alanine"] = measure("alanine", bg, 256, args.steps, args.batches, cutoff)
    summary = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads",
        "settings": vars(args),
        **results,
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
