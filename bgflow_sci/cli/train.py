"""``bgflow-sci train``: train, sample and reweight a system's Boltzmann generator
(:func:`bgflow_sci.workflows.train.train`), resumable with ``--resume``."""

from __future__ import annotations

import argparse

from ._common import DTYPES, add_runtime_options, device, print_json, set_threads


def run(args: argparse.Namespace) -> int:
    from ..workflows.config import parse_overrides
    from ..workflows.train import train

    if args.system is None and not args.resume:
        raise SystemExit("error: give a SYSTEM (or --resume with the --out folder of an interrupted run)")
    set_threads(args.threads)
    results = train(
        args.system,
        args.out,
        config_path=args.config,
        overrides=parse_overrides(args.set),
        device=device(args.device),
        dtype=DTYPES[args.dtype],
        progress=not args.no_progress,
        evaluate=not args.no_evaluate,
        resume=args.resume,
    )
    if "rank" not in results:  # under torchrun only rank 0 reports
        print_json({k: v for k, v in results.items() if k != "config"})
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a Boltzmann generator for a system folder, then sample and reweight it",
        description=(
            "Train the Boltzmann generator of SYSTEM (a name under systems/, a system folder, a config file "
            "beside its system.py, or a molecule config file with a 'topology' key: a PDB plus force-field names, "
            "Amber, GROMACS or OpenMM XML inputs; without 'trajectories' its reference MD is generated first from "
            "its 'md' section and reused next time): maximum likelihood on its reference data, then reverse KL "
            "against its energy, "
            "then sample and reweight (unless --no-evaluate). Writes run.json, checkpoint.pt (every "
            "train.checkpoint_every steps), model.pt, metrics.jsonl, training.png, samples.npz (+ trajectory), "
            "results.json and free-energy plots to --out. --resume continues an interrupted run in --out."
        ),
    )
    p.add_argument(
        "system",
        nargs="?",
        default=None,
        help="system name (e.g. alanine_dipeptide), folder, or molecule config file (JSON/YAML/TOML)",
    )
    p.add_argument("--config", default=None, help="JSON file whose sections override the system's config.json")
    p.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="override one setting, e.g. --set train.ml_steps=500 --set model.hidden=[64,64] (repeatable)",
    )
    p.add_argument("--out", default="train_out", help="output folder (default: train_out)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out from its checkpoint")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--no-evaluate", action="store_true", help="only train (no sampling and reweighting)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_runtime_options(p)
    p.set_defaults(func=run)
