"""``bgflow-sci sample``: importance-weighted samples from a ``model.pt``
(:func:`bgflow_sci.workflows.sample.sample`)."""

from __future__ import annotations

import argparse

from ._common import add_runtime_options, device, set_threads


def run(args: argparse.Namespace) -> int:
    from ..workflows.sample import sample

    set_threads(args.threads)
    path = sample(args.checkpoint, args.n, args.out, device=device(args.device), batch_size=args.batch_size)
    print(f"wrote {path}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="draw samples with log importance weights from a trained model.pt")
    p.add_argument("checkpoint", help="model.pt written by `bgflow-sci train`")
    p.add_argument("-n", type=int, required=True, help="number of samples")
    p.add_argument("--out", required=True, help="output .npz (x, log_w); systems may also write a trajectory")
    p.add_argument("--batch-size", type=int, default=None, help="samples per batch (default from the config)")
    add_runtime_options(p)
    p.set_defaults(func=run)
