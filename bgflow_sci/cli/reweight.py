"""``bgflow-sci reweight``: ESS, log Z, ΔF and profiles of a samples file
(:func:`bgflow_sci.workflows.reweight.reweight`)."""

from __future__ import annotations

import argparse

from ._common import print_json


def run(args: argparse.Namespace) -> int:
    from ..workflows.reweight import reweight

    print_json(reweight(args.samples, args.out, n_bootstrap=args.n_bootstrap))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "reweight",
        help="importance-reweight samples: ESS, log Z, free-energy differences and profiles with errors, plots",
    )
    p.add_argument("samples", help=".npz written by `bgflow-sci sample`")
    p.add_argument("--out", default="reweight_out", help="output folder for results.json and plots")
    p.add_argument("--n-bootstrap", type=int, default=None, help="bootstrap replicates (default from the config)")
    p.set_defaults(func=run)
