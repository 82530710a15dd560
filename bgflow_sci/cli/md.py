"""``bgflow-sci md CONFIG``: reference Langevin MD of a molecule config with OpenMM
(:func:`bgflow_sci.workflows.md.run_molecule_md`); resumes, extends or reuses what is in the output folder."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from ..workflows.md import run_molecule_md

    out = run_molecule_md(
        args.config,
        out=args.out,
        ns=args.ns,
        replicas=args.replicas,
        platform=args.platform,
        seed=args.seed,
        progress=not args.no_progress,
        threads=args.threads,
        equilibration_ps=args.equilibration_ps,
    )
    print(out)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "md",
        help="reference MD of a molecule config: OpenMM Langevin, positions + forces + energies, resumable",
        description=(
            "OpenMM LangevinMiddleIntegrator MD of the molecule in CONFIG (its 'md' section gives the defaults). "
            "Writes per replica positions.dcd, forces.npy (float32 kJ/mol/nm), energies.csv and an OpenMM "
            "checkpoint; a killed run resumes where its last checkpoint was, a complete one is reused, a larger "
            "--ns extends it. Without --platform the fastest OpenMM platform is chosen by a short timing."
        ),
    )
    p.add_argument("config", help="molecule config file (JSON/YAML/TOML with 'topology')")
    p.add_argument("--ns", type=float, default=None, help="simulated time per replica in ns (default: config md.ns)")
    p.add_argument("--replicas", type=int, default=None, help="independent replicas (default: config md.replicas)")
    p.add_argument("--out", default=None, help="output folder (default: config md.out, beside the config)")
    p.add_argument("--platform", default=None, help="OpenMM platform: CUDA, OpenCL, CPU, Reference (default: timed)")
    p.add_argument("--seed", type=int, default=None, help="random seed; replica k uses seed + k (default: config)")
    p.add_argument("--threads", type=int, default=None, help="CPU-platform threads in all (default: all cores)")
    p.add_argument("--equilibration-ps", type=float, default=None, help="equilibration per replica (default 10 ps)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)
