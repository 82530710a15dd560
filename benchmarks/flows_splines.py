"""Spline coupling flow vs zuko's NSF: held-out NLL and milliseconds per training step, same budget.

Data: exact samples of the 2D double well (``DoubleWell2D().sample_exact``), 20k for training, 20k held out.
Both models: 8-bin rational-quadratic splines on ``[-5, 5]`` with identity tails, hidden layers (64, 64), ReLU,
standard normal base, Adam (same lr), the same batches, the same number of steps.

* ours: ``neural_spline_flow(2, n_layers=4)`` -- four couplings (each transforms one coordinate);
* zuko: ``zuko.flows.NSF(2, transforms=3)`` -- three masked autoregressive transforms (each transforms both);

which gives similar parameter counts (about 23k vs 22k).  The two models train in the same process with
``torch.set_num_threads(1)``, alternating step by step, so that machine load affects both equally; the step
time is the median over the steps after a warm-up (forward, backward and optimiser step).  The reference
NLL is the exact cross-entropy ``E[u(x)] + log Z`` of the held-out set, the lower bound for any model.

    python benchmarks/flows_splines.py [--steps 1000] [--batch 512] [--out benchmarks/results/flows_splines.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from bgflow_sci.distributions import Normal
from bgflow_sci.energies import DoubleWell2D
from bgflow_sci.flows import neural_spline_flow


def ours(seed: int) -> tuple[nn.Module, Callable[[Tensor], Tensor]]:
    torch.manual_seed(seed)
    flow, prior = neural_spline_flow(2, n_layers=4, n_bins=8, bound=5.0, hidden=(64, 64), activation=nn.ReLU), Normal(2)

    def log_prob(y: Tensor) -> Tensor:
        x, logdet = flow.inverse(y)
        return prior.log_prob(x) + logdet

    return flow, log_prob


def theirs(seed: int) -> tuple[nn.Module, Callable[[Tensor], Tensor]]:
    import zuko

    torch.manual_seed(seed)
    flow = zuko.flows.NSF(2, transforms=3, bins=8, hidden_features=(64, 64))
    return flow, lambda y: flow().log_prob(y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "flows_splines.json")
    args = parser.parse_args()
    torch.set_num_threads(1)

    target = DoubleWell2D()
    gen = torch.Generator().manual_seed(args.seed)
    train = target.sample_exact(20_000, generator=gen)
    test = target.sample_exact(20_000, generator=gen)
    reference = float((target.energy(test.double()) + target.log_z()).mean())

    models = {"bgflow_sci": ours(args.seed), "zuko": theirs(args.seed)}
    optims = {k: torch.optim.Adam(m.parameters(), lr=args.lr) for k, (m, _) in models.items()}
    times: dict[str, list[float]] = {k: [] for k in models}
    batches = torch.Generator().manual_seed(args.seed + 1)
    for _ in range(args.steps):
        y = train[torch.randint(0, len(train), (args.batch,), generator=batches)]
        for name, (_, log_prob) in models.items():
            start = time.perf_counter()
            loss = -log_prob(y).mean()
            optims[name].zero_grad()
            loss.backward()
            optims[name].step()
            times[name].append(time.perf_counter() - start)

    results, nlls = {}, {}
    for name, (model, log_prob) in models.items():
        with torch.no_grad():
            nll = nlls[name] = -log_prob(test)
        results[name] = {
            "heldout_nll": float(nll.mean()),
            "heldout_nll_sem": float(nll.std() / len(nll) ** 0.5),
            "ms_per_step": 1e3 * statistics.median(times[name][args.warmup :]),
            "parameters": sum(p.numel() for p in model.parameters()),
        }
    ratio = [a / b for a, b in zip(times["bgflow_sci"][args.warmup :], times["zuko"][args.warmup :])]
    summary = {
        "nll_difference": results["bgflow_sci"]["heldout_nll"] - results["zuko"]["heldout_nll"],
        "nll_difference_sem": float((nlls["bgflow_sci"] - nlls["zuko"]).std() / len(test) ** 0.5),
        "step_time_ratio": results["bgflow_sci"]["ms_per_step"] / results["zuko"]["ms_per_step"],
        "median_paired_step_time_ratio": statistics.median(ratio),
    }
    record = {
        "benchmark": "flows_splines",
        "data": "DoubleWell2D exact samples, 20k train / 20k held out",
        "reference_nll": reference,
        "config": {k: v for k, v in vars(args).items() if k != "out"} | {"threads": 1},
        "results": results,
        "summary": summary,
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "nproc": os.cpu_count(),
            "load_average_1min_at_end": os.getloadavg()[0],  # shared machine: timings are paired step by step
        },
        "torch": torch.__version__,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")

    print("| model | held-out NLL (nats) | ms / step | parameters |\n|---|---|---|---|")
    for name, r in results.items():
        nll = f"{r['heldout_nll']:.4f} ± {r['heldout_nll_sem']:.4f}"
        print(f"| {name} | {nll} | {r['ms_per_step']:.2f} | {r['parameters']} |")
    print(f"| exact (lower bound) | {reference:.4f} | | |")
    print(
        f"\nNLL difference (ours - zuko): {summary['nll_difference']:+.4f} ± {summary['nll_difference_sem']:.4f} nats; "
        f"step-time ratio (ours / zuko): "
        f"{summary['step_time_ratio']:.3f} (median of paired ratios {summary['median_paired_step_time_ratio']:.3f})"
    )


if __name__ == "__main__":
    main()
