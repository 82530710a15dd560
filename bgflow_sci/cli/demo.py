"""``bgflow-sci demo``: the embedded default job (:func:`bgflow_sci.workflows.demo.run_demo`)."""

from __future__ import annotations

import argparse

from ._common import DTYPES, add_runtime_options, device, set_threads


def run(args: argparse.Namespace) -> int:
    from ..workflows.demo import DemoConfig, format_results, run_demo

    set_threads(args.threads)
    config = DemoConfig(seed=args.seed)
    if args.quick:
        config = config.quick()
    results = run_demo(args.out, config, device(args.device), DTYPES[args.dtype], progress=not args.no_progress)
    print(format_results(results))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="train and reweight a Boltzmann generator on the 2D double well (embedded default, ~1 min on CPU)",
        description=(
            "Train a RealNVP Boltzmann generator on the 2D double well u = x1^4 - 6 x1^2 - 0.5 x1 + 0.5 x2^2 "
            "(maximum likelihood on exact samples, then reverse KL), reweight its samples, print the ESS and "
            "the free-energy difference between the wells with a bootstrap error next to the exact value, "
            "and write densities.png, free_energy_x1.png, training.png, metrics.jsonl and results.json to --out."
        ),
    )
    p.add_argument("--out", default="demo_out", help="output folder for plots and logs (default: demo_out)")
    p.add_argument("--quick", action="store_true", help="a few hundred steps and fewer samples (smoke test)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="floating-point precision")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_runtime_options(p, threads=1)  # 1 thread: fastest for the demo's small networks
    p.set_defaults(func=run)
