"""Benchmark: OT flow matching vs independent flow matching at equal sampling cost.

Run:  python benchmarks/flow_matching.py [--steps 1500] [--seeds 3] [--n-eval 1000] [--quick]

Both models see the same 2D data (eight Gaussians on a ring of radius 4, std 0.35; standard normal prior), the same
network, optimiser, steps, batch, learning-rate schedule and seed; only the minibatch coupling differs
(``coupling="independent"`` vs ``"ot"``, Tong et al. 2024).  Samples are drawn with fixed-step Euler and midpoint
solvers at equal numbers of function evaluations (NFE; ``ContinuousFlow.transform``, the sample-only path) and
compared with held-out exact samples by the exact 2-Wasserstein distance (optimal assignment of squared distances
between equal-size sets, scipy ``linear_sum_assignment``).  The ``data`` row is the finite-sample floor: W2 between
two independent exact sets.

Writes ``benchmarks/results/flow_matching.json`` and prints a markdown table (mean ± std over seeds).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from bgflow_sci.distributions import Normal
from bgflow_sci.energies import GaussianMixture
from bgflow_sci.flows import ContinuousFlow, VectorField
from bgflow_sci.training import FlowMatching, Trainer

RESULTS = Path(__file__).resolve().parent / "results" / "flow_matching.json"
SOLVERS = {"euler": (1, 2, 4, 8, 16), "midpoint": (2, 4, 8, 16)}  # solver -> NFE values (midpoint: 2 per step)
NFE_PER_STEP = {"euler": 1, "midpoint": 2}


def ring_of_gaussians(n_modes: int = 8, radius: float = 4.0, std: float = 0.35) -> GaussianMixture:
    angles = 2 * math.pi * torch.arange(n_modes, dtype=torch.float64) / n_modes
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)
    return GaussianMixture(means, std)


def wasserstein2(a: torch.Tensor, b: torch.Tensor) -> float:
    """Exact W2 between two equal-size empirical measures (optimal assignment, squared Euclidean cost)."""
    cost = torch.cdist(a.double(), b.double()).pow(2).numpy()
    rows, cols = linear_sum_assignment(cost)
    return float(np.sqrt(cost[rows, cols].mean()))


def train(coupling: str, data: torch.Tensor, seed: int, steps: int, batch_size: int, lr: float) -> VectorField:
    torch.manual_seed(seed)
    field = VectorField(2, hidden=(64, 64, 64))
    loss = FlowMatching(field, Normal(2), data, batch_size=batch_size, coupling=coupling)
    trainer = Trainer(field, {"fm": loss}, lr=lr, schedule="cosine", total_steps=steps, progress=False, seed=seed)
    trainer.train(steps)
    return field


def main(steps: int = 1500, seeds: int = 3, n_eval: int = 1000, batch_size: int = 256, lr: float = 2e-3) -> dict:
    torch.set_num_threads(1)  # tiny tensors: extra intra-op threads only contend
    target = ring_of_gaussians()
    data = target.sample_exact(20_000, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    floor = [
        wasserstein2(
            target.sample_exact(n_eval, generator=torch.Generator().manual_seed(100 + s)),
            target.sample_exact(n_eval, generator=torch.Generator().manual_seed(200 + s)),
        )
        for s in range(seeds)
    ]
    runs = []
    for seed in range(seeds):
        held_out = target.sample_exact(
            n_eval, generator=torch.Generator().manual_seed(1000 + seed), dtype=torch.float32
        )
        for coupling in ("independent", "ot"):
            t0 = time.perf_counter()
            field = train(coupling, data, seed, steps, batch_size, lr)
            train_s = time.perf_counter() - t0
            z = torch.randn(n_eval, 2, generator=torch.Generator().manual_seed(5000 + seed))  # same for both
            for solver, nfes in SOLVERS.items():
                for nfe in nfes:
                    flow = ContinuousFlow(field, solver=solver, n_steps=nfe // NFE_PER_STEP[solver])
                    with torch.no_grad():
                        x = flow.transform(z)  # the sample-only path: the same fixed steps, no divergence
                    assert flow.nfe == nfe
                    w2 = wasserstein2(x, held_out)
                    runs.append(dict(seed=seed, coupling=coupling, solver=solver, nfe=nfe, w2=w2, train_s=train_s))
                    print(f"seed {seed} {coupling:11s} {solver:8s} NFE {nfe:2d}  W2 {w2:.3f}", flush=True)
            flow = ContinuousFlow(field, solver="dopri5", atol=1e-5, rtol=1e-5)
            with torch.no_grad():
                x, _ = flow(z)  # the full solve: its adaptive steps (and NFE) also control the log-det's error
            w2 = wasserstein2(x, held_out)
            runs.append(dict(seed=seed, coupling=coupling, solver="dopri5", nfe=flow.nfe, w2=w2, train_s=train_s))
            print(f"seed {seed} {coupling:11s} dopri5   NFE {flow.nfe:2d}  W2 {w2:.3f}", flush=True)

    summary = {}
    for solver in (*SOLVERS, "dopri5"):
        for coupling in ("independent", "ot"):
            rows = [r for r in runs if r["solver"] == solver and r["coupling"] == coupling]
            for nfe in sorted({r["nfe"] for r in rows}) if solver != "dopri5" else [None]:
                sel = [r for r in rows if nfe is None or r["nfe"] == nfe]
                w2 = np.array([r["w2"] for r in sel])
                nfe_mean = float(np.mean([r["nfe"] for r in sel]))
                summary.setdefault(f"{solver}/{nfe if nfe is not None else 'adaptive'}", {})[coupling] = dict(
                    w2_mean=float(w2.mean()), w2_std=float(w2.std(ddof=1)) if len(w2) > 1 else 0.0, nfe=nfe_mean
                )

    result = dict(
        benchmark="flow_matching: OT-CFM vs independent CFM, W2 to held-out samples at equal NFE",
        data="8 Gaussians on a ring, radius 4, std 0.35; prior N(0, I)",
        config=dict(
            steps=steps, seeds=seeds, n_eval=n_eval, batch_size=batch_size, lr=lr, hidden=[64, 64, 64], sigma=0.0
        ),
        machine=dict(
            processor=platform.processor() or platform.machine(),
            cpu_count=os.cpu_count(),
            torch_threads=torch.get_num_threads(),
            date=datetime.datetime.now().isoformat(timespec="seconds"),
        ),
        w2_floor_data_vs_data=dict(mean=float(np.mean(floor)), std=float(np.std(floor, ddof=1)) if seeds > 1 else 0.0),
        train_seconds={
            c: float(np.mean([r["train_s"] for r in runs if r["coupling"] == c])) for c in ("independent", "ot")
        },
        summary=summary,
        runs=runs,
    )
    print(markdown_table(result))
    return result


def markdown_table(result: dict) -> str:
    lines = [
        "| solver | NFE | W2 independent | W2 OT |",
        "|---|---|---|---|",
    ]
    for key, row in result["summary"].items():
        solver = key.split("/")[0]
        ind, ot = row["independent"], row["ot"]
        nfe = f"{ind['nfe']:.0f}" if solver != "dopri5" else f"{ind['nfe']:.0f} / {ot['nfe']:.0f}"
        cells = [f"{r['w2_mean']:.3f} ± {r['w2_std']:.3f}" for r in (ind, ot)]
        lines.append(f"| {solver} | {nfe} | {cells[0]} | {cells[1]} |")
    floor = result["w2_floor_data_vs_data"]
    lines.append(f"| data vs data | – | {floor['mean']:.3f} ± {floor['std']:.3f} | |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n-eval", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="200 steps, 2 seeds, 300 points (smoke test)")
    parser.add_argument("--no-save", action="store_true", help="do not write the JSON result")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.seeds, args.n_eval = 200, 2, 300
    res = main(args.steps, args.seeds, args.n_eval, args.batch_size)
    if not args.no_save and not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {RESULTS}")
