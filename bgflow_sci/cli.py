"""``bgflow-sci`` command line.

``bgflow-sci demo --out DIR`` runs the embedded default job; ``train`` / ``sample`` / ``reweight`` run a Boltzmann
generator for any system folder (:mod:`bgflow_sci.pipeline`); ``morph`` is the HEP sim-to-data tool.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _device(name: str) -> torch.device:
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {name} asked for, but CUDA is not available on this machine")
    return dev


def _demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, format_results, run_demo

    torch.set_num_threads(args.threads)
    config = DemoConfig(seed=args.seed)
    if args.quick:
        config = config.quick()
    results = run_demo(args.out, config, _device(args.device), DTYPES[args.dtype], progress=not args.no_progress)
    print(format_results(results))
    return 0


def _train(args: argparse.Namespace) -> int:
    import json

    from .pipeline import parse_overrides, train

    torch.set_num_threads(args.threads)
    results = train(
        args.system,
        args.out,
        config_path=args.config,
        overrides=parse_overrides(args.set),
        device=_device(args.device),
        dtype=DTYPES[args.dtype],
        progress=not args.no_progress,
        evaluate=not args.no_evaluate,
    )
    summary = {k: v for k, v in results.items() if k != "config"}
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _sample(args: argparse.Namespace) -> int:
    from .pipeline import sample

    torch.set_num_threads(args.threads)
    path = sample(args.checkpoint, args.n, args.out, device=_device(args.device), batch_size=args.batch_size)
    print(f"wrote {path}")
    return 0


def _reweight(args: argparse.Namespace) -> int:
    import json

    from .pipeline import reweight

    results = reweight(args.samples, args.out, n_bootstrap=args.n_bootstrap)
    print(json.dumps(results, indent=2, default=str))
    return 0


def _enhanced_md(args: argparse.Namespace) -> int:
    import json

    from .pipeline import enhanced_md

    torch.set_num_threads(args.threads)
    report = enhanced_md(
        args.checkpoint,
        args.out,
        args.cycles,
        md_steps=args.md_steps,
        proposals_per_cycle=args.proposals,
        seed=args.seed,
        progress=not args.no_progress,
    )
    print(json.dumps(report, indent=2, default=str))
    return 0


def _add_runtime_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 ... (default: cpu)")
    p.add_argument("--threads", type=int, default=max(1, torch.get_num_threads()), help="torch CPU threads")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bgflow-sci",
        description="Boltzmann generators and scientific sampling in PyTorch.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="train and reweight a Boltzmann generator on the 2D double well (embedded default, ~1 min on CPU)",
        description=(
            "Train a RealNVP Boltzmann generator on the 2D double well u = x1^4 - 6 x1^2 - 0.5 x1 + 0.5 x2^2 "
            "(maximum likelihood on exact samples, then reverse KL), reweight its samples, print the ESS and "
            "the free-energy difference between the wells with a bootstrap error next to the exact value, "
            "and write densities.png, free_energy_x1.png, training.png, metrics.jsonl and results.json to --out."
        ),
    )
    demo.add_argument("--out", default="demo_out", help="output folder for plots and logs (default: demo_out)")
    demo.add_argument("--quick", action="store_true", help="a few hundred steps and fewer samples (smoke test)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 ... (default: cpu)")
    demo.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="floating-point precision")
    demo.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: fastest for the demo's small networks)"
    )
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    demo.set_defaults(func=_demo)

    tr = sub.add_parser(
        "train",
        help="train a Boltzmann generator for a system folder, then sample and reweight it",
        description=(
            "Train the Boltzmann generator of SYSTEM (a name under systems/, a system folder or a config file "
            "beside its system.py): maximum likelihood on its reference data, then reverse KL against its energy, "
            "then sample and reweight (unless --no-evaluate). Writes model.pt, metrics.jsonl, training.png, "
            "samples.npz (+ trajectory), results.json and free-energy plots to --out."
        ),
    )
    tr.add_argument("system", help="system name (e.g. alanine_dipeptide), folder, or config path")
    tr.add_argument("--config", default=None, help="JSON file whose sections override the system's config.json")
    tr.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="override one setting, e.g. --set train.ml_steps=500 --set model.hidden=[64,64] (repeatable)",
    )
    tr.add_argument("--out", default="train_out", help="output folder (default: train_out)")
    tr.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    tr.add_argument("--no-evaluate", action="store_true", help="only train (no sampling and reweighting)")
    tr.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_runtime_options(tr)
    tr.set_defaults(func=_train)

    sa = sub.add_parser("sample", help="draw samples with log importance weights from a trained model.pt")
    sa.add_argument("checkpoint", help="model.pt written by `bgflow-sci train`")
    sa.add_argument("-n", type=int, required=True, help="number of samples")
    sa.add_argument("--out", required=True, help="output .npz (x, log_w); systems may also write a trajectory")
    sa.add_argument("--batch-size", type=int, default=None, help="samples per batch (default from the config)")
    _add_runtime_options(sa)
    sa.set_defaults(func=_sample)

    re = sub.add_parser(
        "reweight",
        help="importance-reweight samples: ESS, log Z, free-energy differences and profiles with errors, plots",
    )
    re.add_argument("samples", help=".npz written by `bgflow-sci sample`")
    re.add_argument("--out", default="reweight_out", help="output folder for results.json and plots")
    re.add_argument("--n-bootstrap", type=int, default=None, help="bootstrap replicates (default from the config)")
    re.set_defaults(func=_reweight)

    md = sub.add_parser(
        "enhanced-md",
        help="flow-enhanced MD: OpenMM Langevin segments + Metropolis moves proposed by a trained model",
        description=(
            "Alternate --md-steps OpenMM Langevin steps with --proposals independent Metropolis moves drawn from "
            "the trained Boltzmann generator and accepted with the exact OpenMM energy (unbiased). Writes the "
            "trajectory and enhanced_md.json (acceptance, evaluations, transitions between the system's regions)."
        ),
    )
    md.add_argument("checkpoint", help="model.pt written by `bgflow-sci train`")
    md.add_argument("--cycles", type=int, required=True, help="number of MD segment + proposal cycles")
    md.add_argument("--md-steps", type=int, default=100, help="Langevin steps per cycle (default 100)")
    md.add_argument("--proposals", type=int, default=10, help="flow proposals per cycle (default 10)")
    md.add_argument("--seed", type=int, default=0)
    md.add_argument("--out", default="enhanced_md_out", help="output folder")
    md.add_argument("--no-progress", action="store_true")
    md.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    md.set_defaults(func=_enhanced_md)

    from .hep.cli import add_morph_parser

    add_morph_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
