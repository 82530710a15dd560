"""``bgflow-sci morph``: train an MDMM morphing flow on ROOT files and write ``<branch>_corr`` branches.

::

    bgflow-sci morph --mc mc.root --data data.root --tree events --vars r9_1 sieie_1 iso_1 \\
        --context pt_1 eta_1 --kinds r9_1=logit sieie_1=log iso_1=spike pt_1=log --out corrected.root

``--mc`` / ``--data`` also accept ``FILE:TREE``.  The output is a new file holding the MC tree with all its branches
plus ``<var>_corr`` for every ``--vars`` entry (:func:`bgflow_sci.hep.io.write_corrected`; the input is never
modified).  ``--save-model`` stores the trained :class:`~bgflow_sci.hep.morphing.MorphingFlow` (weights, variable
names, preprocessing).  Wire it in with ``add_morph_parser(subparsers)``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

__all__ = ["add_morph_parser", "parse_kinds", "run_morph"]


def _file_tree(spec: str, default_tree: str | None, what: str) -> tuple[str, str]:
    path, sep, tree = spec.rpartition(":")
    if sep and path and "/" not in tree and tree:
        return path, tree
    if default_tree is None:
        raise SystemExit(f"error: {what} {spec!r} names no tree; use FILE:TREE or --tree")
    return spec, default_tree


def parse_kinds(specs: list[str] | None, names: list[str]) -> dict[str, Any]:
    """``["r9=logit", "x=logit:0:2", "iso=spike", "pt=log"]`` -> ``{name: kind}`` (unknown names refused)."""
    out: dict[str, Any] = {}
    for spec in specs or []:
        name, sep, kind = spec.partition("=")
        if not sep or not kind:
            raise SystemExit(f"error: --kinds entry {spec!r} must be NAME=KIND (identity, log, logit[:lo:hi], spike)")
        if name not in names:
            raise SystemExit(f"error: --kinds names {name!r}, which is not among --vars/--context {names}")
        parts = kind.split(":")
        out[name] = parts[0] if len(parts) == 1 else (parts[0], *(float(p) for p in parts[1:]))
    return out


def run_morph(args: argparse.Namespace) -> int:
    """Handler of ``bgflow-sci morph``."""
    import torch

    from .io import read_tree, write_corrected
    from .morphing import MorphingFlow, fit_morphing

    mc_path, mc_tree = _file_tree(args.mc, args.tree, "--mc")
    data_path, data_tree = _file_tree(args.data, args.tree, "--data")
    names, context = list(args.vars), list(args.context or [])
    kinds = parse_kinds(args.kinds, names + context)
    torch.manual_seed(args.seed)
    mc, w_mc = read_tree(mc_path, mc_tree, names + context, weight_branch=args.mc_weight, library="np")
    data, w_data = read_tree(data_path, data_tree, names + context, weight_branch=args.data_weight, library="np")
    model = MorphingFlow(
        names,
        context,
        kinds=[kinds.get(n, "identity") for n in names],
        context_kinds=[kinds.get(n, "identity") for n in context],
        transformer=args.transformer,
        n_layers=args.layers,
        seed=args.seed,
    )
    n_min = min(len(w_mc), len(w_data))
    batch = min(args.batch_size, max(n_min // 2, 2))
    result = fit_morphing(
        model,
        mc,
        data,
        mc_weights=w_mc if args.mc_weight else None,
        data_weights=w_data if args.data_weight else None,
        steps=args.steps,
        batch_size=batch,
        lr=args.lr,
        log_path=args.log,
        progress=not args.no_progress,
        seed=args.seed,
        n_eval_batches=args.eval_batches,
    )
    corrected = model.morph(mc, seed=args.seed)
    out = write_corrected(mc_path, args.out, mc_tree, corrected, overwrite=args.overwrite)
    if args.save_model:
        model.save(args.save_model)
    summary = {
        "out": str(out),
        "variables": names,
        "context": context,
        "events_mc": int(len(w_mc)),
        "events_data": int(len(w_data)),
        "batch_size": batch,
        "final_lambda": float(result.multipliers[-1]),
        **{k: float(v) for k, v in result.final.items()},
        "constraint_satisfied": bool(result.satisfied) if result.final else None,
        "mean_shift": {n: float(np.mean(corrected[n] - mc[n])) for n in names},
    }
    print(json.dumps(summary, indent=2))
    return 0


def add_morph_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``morph`` subcommand to an ``argparse`` subparsers object; returns its parser."""
    p = subparsers.add_parser(
        "morph",
        help="morph MC to data with an MDMM-trained conditional flow and write <branch>_corr to a new ROOT file",
        description=(
            "Train a conditional masked-autoregressive flow mapping MC events to data-like events without pairs "
            "(transport cost subject to MMD^2 <= data-vs-data noise floor, MDMM), then write the MC tree with "
            "<var>_corr branches to a new ROOT file."
        ),
    )
    p.add_argument("--mc", required=True, help="MC ROOT file (FILE or FILE:TREE)")
    p.add_argument("--data", required=True, help="data ROOT file (FILE or FILE:TREE)")
    p.add_argument("--tree", default=None, help="tree name for files given without :TREE")
    p.add_argument("--vars", nargs="+", required=True, help="flat branches to correct")
    p.add_argument("--context", nargs="*", default=[], help="flat kinematic branches to condition on")
    p.add_argument(
        "--kinds", nargs="*", default=[], help="preprocessing NAME=KIND: identity, log, logit[:lo:hi], spike"
    )
    p.add_argument("--out", required=True, help="new ROOT file (never the input)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--mc-weight", default=None, help="MC event-weight branch")
    p.add_argument("--data-weight", default=None, help="data event-weight branch")
    p.add_argument("--transformer", default="affine", choices=["affine", "spline"], help="flow transformer")
    p.add_argument("--layers", type=int, default=4, help="autoregressive layers (default 4)")
    p.add_argument("--steps", type=int, default=2000, help="training steps (default 2000)")
    p.add_argument("--batch-size", type=int, default=1024, help="MC and data events per step (default 1024)")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    p.add_argument("--eval-batches", type=int, default=50, help="minibatch pairs for the final constraint check")
    p.add_argument("--log", default=None, help="JSON-lines metrics log (loss, MMD^2/eps, lambda per step)")
    p.add_argument("--save-model", default=None, help="write the trained model here (torch file)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run_morph)
    return p
