"""``bgflow-sci sample``: importance-weighted samples from a ``model.pt`` (:func:`bgflow_sci.workflows.sample.sample`),
or in chunks on Dask workers (:func:`bgflow_sci.workflows.sample_sets.sample_chunks`)."""

from __future__ import annotations

import argparse

from ._common import add_runtime_options, device, set_threads


def run(args: argparse.Namespace) -> int:
    chunked = args.chunk_size is not None or args.workers is not None or args.scheduler is not None
    if not chunked:
        from ..workflows.sample import sample

        set_threads(args.threads)
        path = sample(args.checkpoint, args.n, args.out, device=device(args.device), batch_size=args.batch_size)
        print(f"wrote {path}")
        return 0
    from ..workflows.sample_sets import sample_chunks

    summary = sample_chunks(
        args.checkpoint,
        args.n,
        args.out,
        chunk_size=args.chunk_size or 100_000,
        seed=args.seed,
        workers=2 if args.workers is None else args.workers,
        scheduler=args.scheduler,
        device=str(device(args.device)),
        batch_size=args.batch_size,
        threads=1 if args.workers != 0 else args.threads,
        overwrite=args.overwrite,
    )
    print(f"wrote {len(summary['files'])} samples files ({summary['samples']} samples) to {args.out} "
          f"({summary['workers']} workers, {summary['scheduler']})")  # fmt: skip
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="draw samples with log importance weights from a trained model.pt")
    p.add_argument("checkpoint", help="model.pt written by `bgflow-sci train`")
    p.add_argument("-n", type=int, required=True, help="number of samples")
    p.add_argument(
        "--out",
        required=True,
        help="output .npz (x, log_w; systems may also write a trajectory); with --chunk-size/--workers/--scheduler "
        "a folder of samples_<k>.npz",
    )
    p.add_argument("--batch-size", type=int, default=None, help="samples per batch (default from the config)")
    p.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="samples per file; the chunks are drawn in parallel on Dask workers (default 100000 with --workers)",
    )
    p.add_argument("--workers", type=int, default=None, help="local Dask worker processes (0: in this process)")
    p.add_argument("--scheduler", default=None, help="address of a running Dask scheduler (tcp://host:8786)")
    p.add_argument("--seed", type=int, default=0, help="chunk k is drawn with seed + k (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace existing samples_*.npz in the --out folder")
    add_runtime_options(p)
    p.set_defaults(func=run)
