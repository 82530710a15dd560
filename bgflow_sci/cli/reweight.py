"""``bgflow-sci reweight``: ESS, log Z, ΔF and profiles of a samples file
(:func:`bgflow_sci.workflows.reweight.reweight`) or of many, file by file on Dask workers
(:func:`bgflow_sci.workflows.sample_sets.reweight_files`)."""

from __future__ import annotations

import argparse
import os

from ._common import print_json


def run(args: argparse.Namespace) -> int:
    one = len(args.samples) == 1 and os.path.isfile(args.samples[0])
    if one and args.workers == 0 and args.scheduler is None:
        from ..workflows.reweight import reweight

        print_json(reweight(args.samples[0], args.out, n_bootstrap=args.n_bootstrap))
        return 0
    from ..workflows.sample_sets import reweight_files

    results = reweight_files(
        args.samples, args.out, n_bootstrap=args.n_bootstrap, workers=args.workers, scheduler=args.scheduler
    )
    print_json({k: v for k, v in results.items() if k != "files"})
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "reweight",
        help="importance-reweight samples: ESS, log Z, free-energy differences and profiles with errors, plots",
        description=(
            "Reweight one samples file in memory, or many (files, folders, globs: a sample set larger than "
            "memory) file by file: each file is reduced to weighted sums on a worker (--workers N local Dask "
            "processes, or --scheduler ADDR), the sums are added; the same estimates, Poisson-bootstrap errors."
        ),
    )
    p.add_argument("samples", nargs="+", help=".npz written by `bgflow-sci sample`, folders of them, or globs")
    p.add_argument("--out", default="reweight_out", help="output folder for results.json and plots")
    p.add_argument("--n-bootstrap", type=int, default=None, help="bootstrap replicates (default from the config)")
    p.add_argument("--workers", type=int, default=0, help="local Dask worker processes (default 0: in this process)")
    p.add_argument("--scheduler", default=None, help="address of a running Dask scheduler (tcp://host:8786)")
    p.set_defaults(func=run)
