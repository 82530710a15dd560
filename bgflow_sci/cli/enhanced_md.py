"""``bgflow-sci enhanced-md``: OpenMM MD with flow proposals (:func:`bgflow_sci.workflows.enhanced_md.enhanced_md`)."""

from __future__ import annotations

import argparse

from ._common import print_json, set_threads


def run(args: argparse.Namespace) -> int:
    from ..workflows.enhanced_md import enhanced_md

    set_threads(args.threads)
    report = enhanced_md(
        args.checkpoint,
        args.out,
        args.cycles,
        md_steps=args.md_steps,
        proposals_per_cycle=args.proposals,
        seed=args.seed,
        progress=not args.no_progress,
    )
    print_json(report)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "enhanced-md",
        help="flow-enhanced MD: OpenMM Langevin segments + Metropolis moves proposed by a trained model",
        description=(
            "Alternate --md-steps OpenMM Langevin steps with --proposals independent Metropolis moves drawn from "
            "the trained Boltzmann generator and accepted with the exact OpenMM energy (unbiased). Writes the "
            "trajectory, cvs.npz (per frame: the system's collective variables and region labels) and "
            "enhanced_md.json (acceptance, evaluations, transitions between the system's free-energy regions: for "
            "a config system those of its collective_variables and free_energy_regions)."
        ),
    )
    p.add_argument("checkpoint", help="model.pt written by `bgflow-sci train`")
    p.add_argument("--cycles", type=int, required=True, help="number of MD segment + proposal cycles")
    p.add_argument("--md-steps", type=int, default=100, help="Langevin steps per cycle (default 100)")
    p.add_argument("--proposals", type=int, default=10, help="flow proposals per cycle (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="enhanced_md_out", help="output folder")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.set_defaults(func=run)
