"""``bgflow-sci morph {train,apply,report}``: MDMM morphing of MC to data on ROOT files, from the command line.

::

    # 1. train a MorphingFlow (weights + variable/context names + fitted preprocessing in one torch file)
    bgflow-sci morph train --mc mc.root:events --data data.root:events --vars r9_1 sieie_1 iso_1 \\
        --context pt_1 eta_1 --kinds r9_1=logit sieie_1=log iso_1=spike pt_1=log --out model.pt
    # 2. write a NEW file with the MC tree, all its branches and <var>_corr for every model variable
    bgflow-sci morph apply model.pt --in mc.root:events --out mc_corrected.root
    # 3. data vs MC vs corrected MC: W1 per variable, correlation error, classifier AUC, MMD (+ p-value), PNG plots
    bgflow-sci morph report --data data.root:events --corrected mc_corrected.root:events --model model.pt --out report/

Files are given as ``FILE:TREE`` (or ``FILE`` with ``--tree``).  The model file stores the variable and context
names, so ``apply`` refuses an input tree that lacks a branch or a ``--vars``/``--context`` list that differs from
the model's, naming the branches.  No output ever overwrites an input: ``apply`` refuses ``--out`` equal to ``--in``
and an existing ``--out`` unless ``--overwrite``; ``train`` refuses a model path equal to an input file.  Reading
and writing go through :mod:`bgflow_sci.hep.io` (its errors name file, tree and branch), training through
:func:`~bgflow_sci.hep.morphing.fit_morphing`, the metrics through :func:`bgflow_sci.hep.metrics.compare` and the
plots through :mod:`bgflow_sci.hep.plots`.  Wire the command in with ``add_morph_parser(subparsers)``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_morph_parser", "parse_kinds", "run_apply", "run_report", "run_train"]

_USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError)


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
        try:
            out[name] = parts[0] if len(parts) == 1 else (parts[0], *(float(p) for p in parts[1:]))
        except ValueError:
            raise SystemExit(f"error: --kinds entry {spec!r}: bounds must be numbers, e.g. {name}=logit:0:1") from None
    return out


def _user_errors(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the library's input errors (which name file, tree and branch) into ``error: ...`` exits, no traceback."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except _USER_ERRORS as err:
            raise SystemExit(f"error: {err}") from err

    wrapped.__name__, wrapped.__doc__ = handler.__name__, handler.__doc__
    return wrapped


def _set_threads(n: int) -> None:
    import torch

    if n > 0:
        torch.set_num_threads(n)


def _load_model(path: str):
    from .morphing import MorphingFlow

    if not Path(path).is_file():
        raise FileNotFoundError(f"model file {path!r} does not exist (write one with `bgflow-sci morph train`)")
    try:
        model = MorphingFlow.load(path)
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001 - torch's unpickling message does not say what was expected
        raise ValueError(f"cannot read {path!r} as a MorphingFlow model written by `morph train`: {err}") from err
    return model.eval()


def _check_names(model: Any, vars_: Sequence[str] | None, context: Sequence[str] | None, source: str) -> None:
    """Refuse ``--vars``/``--context`` lists that differ from the model's, naming the differing branches."""
    for given, expected, what in ((vars_, model.names, "--vars"), (context, model.context_names, "--context")):
        if given is None or list(given) == list(expected):
            continue
        missing = [n for n in expected if n not in given]
        extra = [n for n in given if n not in expected]
        detail = f"missing {missing}" if missing else ""
        detail += ("; " if detail and extra else "") + (f"not in the model {extra}" if extra else "")
        raise ValueError(
            f"mismatched variables: {what} {list(given)} differ from the model {source}, which was trained on "
            f"{what} {list(expected)} ({detail or 'different order'})"
        )


# ------------------------------------------------------------------------------------------------------ train
def run_train(args: argparse.Namespace) -> int:
    """Handler of ``bgflow-sci morph train``: read MC and data, fit a MorphingFlow by MDMM, save it."""
    import torch

    from .io import _same_file, read_tree
    from .morphing import MorphingFlow, fit_morphing

    _set_threads(args.threads)
    mc_path, mc_tree = _file_tree(args.mc, args.tree, "--mc")
    data_path, data_tree = _file_tree(args.data, args.tree, "--data")
    names, context = list(args.vars), list(args.context or [])
    kinds = parse_kinds(args.kinds, names + context)
    out = Path(args.out)
    for path in {mc_path, data_path}:
        if _same_file(Path(path), out):
            raise SystemExit(f"error: refusing to write the model to {args.out!r}: it is the input file {path!r}")
    if out.suffix == ".root":
        raise SystemExit(
            f"error: --out {args.out!r} is the model file (torch); write corrected ROOT files with `morph apply`"
        )
    if out.exists() and not args.overwrite:
        raise SystemExit(f"error: model file {args.out!r} exists; pass --overwrite to replace it")

    torch.manual_seed(args.seed)
    mc, w_mc = read_tree(mc_path, mc_tree, names + context, cut=args.cut, weight_branch=args.mc_weight, library="np")
    data, w_data = read_tree(
        data_path, data_tree, names + context, cut=args.cut, weight_branch=args.data_weight, library="np"
    )
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
    model.save(out)
    summary = {
        "model": str(out),
        "mc": f"{mc_path}:{mc_tree}",
        "data": f"{data_path}:{data_tree}",
        "variables": names,
        "context": context,
        "kinds": {n: kinds.get(n, "identity") for n in names + context},
        "events_mc": int(len(w_mc)),
        "events_data": int(len(w_data)),
        "batch_size": batch,
        "steps": args.steps,
        "final_lambda": float(result.multipliers[-1]),
        **{k: float(v) for k, v in result.final.items()},
        "constraint_satisfied": bool(result.satisfied) if result.final else None,
        "log": args.log,
    }
    print(json.dumps(summary, indent=2))
    return 0


# ------------------------------------------------------------------------------------------------------ apply
def run_apply(args: argparse.Namespace) -> int:
    """Handler of ``bgflow-sci morph apply``: morph every event of the input tree, write ``<var>_corr`` (new file)."""
    from .io import _same_file, iterate_tree, write_corrected

    _set_threads(args.threads)
    model = _load_model(args.model)
    in_path, tree = _file_tree(args.input, args.tree, "--in")
    _check_names(model, args.vars, args.context, repr(args.model))
    out = Path(args.out)
    if _same_file(Path(in_path), out):  # checked before the (long) morphing; write_corrected checks again
        raise SystemExit(f"error: refusing to write {args.out!r}: it is the input file {in_path!r}")
    if out.exists() and not args.overwrite:
        raise SystemExit(f"error: output file {args.out!r} exists; pass --overwrite to replace it")

    needed = model.names + model.context_names
    chunks: list[dict[str, np.ndarray]] = []
    # chunk i is morphed with seed + i (spike dequantisation); one chunk = model.morph(all events, seed=seed)
    for i, (arrays, _) in enumerate(
        iterate_tree(in_path, tree, needed, step_size=args.step_size, library="np", progress=not args.no_progress)
    ):
        chunks.append(model.morph(arrays, batch_size=args.batch_size, seed=args.seed + i))
    corrected = {n: np.concatenate([c[n] for c in chunks]) for n in model.names}
    write_corrected(in_path, out, tree, corrected, overwrite=args.overwrite, progress=not args.no_progress)
    summary = {
        "out": str(out),
        "tree": tree,
        "events": int(len(corrected[model.names[0]])),
        "branches": [n + "_corr" for n in model.names],
    }
    print(json.dumps(summary, indent=2))
    return 0


# ----------------------------------------------------------------------------------------------------- report
def _table(arrays: dict[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    return np.stack([np.asarray(arrays[n], dtype=np.float64) for n in names], axis=1)


def run_report(args: argparse.Namespace) -> int:
    """Handler of ``bgflow-sci morph report``: metrics and plots of data vs MC vs corrected MC into a folder."""
    from tqdm.auto import tqdm

    from .io import read_tree
    from .metrics import compare, format_table
    from .plots import plot_correlations, plot_mass, plot_variables

    _set_threads(args.threads)
    data_path, data_tree = _file_tree(args.data, args.tree, "--data")
    corr_path, corr_tree = _file_tree(args.corrected, args.tree, "--corrected")
    names, context = args.vars, args.context
    if args.model:
        model = _load_model(args.model)
        _check_names(model, names, context, repr(args.model))
        names, context = model.names, model.context_names
    if not names:
        raise SystemExit("error: give the corrected variables with --vars or --model")
    names, context = list(names), list(context or [])
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SystemExit(f"error: --out {args.out!r} is a file; give a folder for the report")

    features = names + context
    extra = [args.mass] if args.mass and args.mass not in features else []
    data, w_data = read_tree(
        data_path, data_tree, features + extra, cut=args.cut, weight_branch=args.data_weight, library="np"
    )
    corr_names = [n + "_corr" for n in names]
    try:
        mc, w_mc = read_tree(
            corr_path,
            corr_tree,
            features + corr_names + extra,
            cut=args.cut,
            weight_branch=args.mc_weight,
            library="np",
        )
    except ValueError as err:
        if any(f"branch {c!r} not found" in str(err) for c in corr_names):
            raise ValueError(f"{err} (is --corrected an output of `bgflow-sci morph apply`?)") from err
        raise
    x_data = _table(data, features)
    x_mc = _table(mc, features)
    x_corr = _table({**mc, **{n: mc[n + "_corr"] for n in names}}, features)
    wd = w_data if args.data_weight else None
    wm = w_mc if args.mc_weight else None
    candidates = {"MC": (x_mc, wm), "corrected MC": (x_corr, wm)}

    metrics: dict[str, Any] = {}
    steps = tqdm(list(candidates.items()), desc="metrics", disable=args.no_progress)
    for label, cand in steps:
        steps.set_postfix_str(label)
        metrics.update(
            compare(
                x_data,
                {label: cand},
                data_weights=wd,
                names=features,
                auc=not args.no_auc,
                seed=args.seed,
                mmd_max_events=args.mmd_events,
                n_permutations=args.permutations,
                max_events=args.auc_events,
            )
        )
    plots = [
        plot_variables(
            {
                "data": (_table(data, names), wd),
                "MC": (x_mc[:, : len(names)], wm),
                "corrected MC": (x_corr[:, : len(names)], wm),
            },
            out / "variables.png",
            names=names,
            log_y=args.log_y,
        ),
        plot_correlations(
            {"data": (x_data, wd), "MC": (x_mc, wm), "corrected MC": (x_corr, wm)},
            out / "correlations.png",
            names=features,
        ),
    ]
    if args.mass:
        m_corr = mc[args.mass + "_corr"] if args.mass in names else mc[args.mass]
        lo, hi = args.mass_range if args.mass_range else np.nanquantile(data[args.mass], [0.001, 0.999])
        plots.append(
            plot_mass(
                {"data": (data[args.mass], wd), "MC": (mc[args.mass], wm), "corrected MC": (m_corr, wm)},
                out / "mass.png",
                range_=(float(lo), float(hi)),
                xlabel=args.mass,
            )
        )
    improvement = {
        "w1_ratio": {
            n: metrics["corrected MC"]["w1"][n] / metrics["MC"]["w1"][n] for n in names if metrics["MC"]["w1"][n] > 0
        },
        "corr_diff_ratio": metrics["corrected MC"]["corr_diff"] / metrics["MC"]["corr_diff"]
        if metrics["MC"]["corr_diff"] > 0
        else None,
    }
    summary = {
        "data": f"{data_path}:{data_tree}",
        "corrected": f"{corr_path}:{corr_tree}",
        "cut": args.cut,
        "variables": names,
        "context": context,
        "features": features,
        "events_data": int(len(x_data)),
        "events_mc": int(len(x_mc)),
        "metrics": metrics,
        "corrected_over_uncorrected": improvement,
        "plots": [str(p) for p in plots],
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(summary, indent=2))
    print(format_table(metrics))
    print(f"report: {out / 'report.json'}, plots: {', '.join(p.name for p in plots)}")
    return 0


# ----------------------------------------------------------------------------------------------------- parser
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tree", default=None, help="tree name for files given without :TREE")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: torch's default)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def add_morph_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``morph train|apply|report`` to an ``argparse`` subparsers object; returns the ``morph`` parser."""
    morph = subparsers.add_parser(
        "morph",
        help="morph MC to data with an MDMM-trained conditional flow: train, apply (<branch>_corr), report",
        description=(
            "Sim-to-data morphing without pairs (Gendreau-Distler et al., arXiv:2504.12343): a conditional masked-"
            "autoregressive flow maps MC events to data-like events, trained with a transport cost subject to "
            "MMD^2 <= data-vs-data noise floor (MDMM).  train -> model file; apply -> new ROOT file with "
            "<var>_corr branches; report -> metrics JSON and PNG plots."
        ),
    )
    sub = morph.add_subparsers(dest="morph_command", required=True, metavar="{train,apply,report}")

    p = sub.add_parser("train", help="fit a morphing flow MC -> data and save it (names and preprocessing included)")
    p.add_argument("--mc", required=True, help="MC ROOT file (FILE:TREE or FILE with --tree)")
    p.add_argument("--data", required=True, help="data ROOT file (FILE:TREE or FILE with --tree)")
    p.add_argument("--vars", nargs="+", required=True, help="flat branches to correct")
    p.add_argument("--context", nargs="*", default=[], help="flat kinematic branches to condition on")
    p.add_argument(
        "--kinds", nargs="*", default=[], help="preprocessing NAME=KIND: identity, log, logit[:lo:hi], spike"
    )
    p.add_argument("--out", default="morph_model.pt", help="model file to write (default morph_model.pt)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--cut", default=None, help="selection applied to MC and data, e.g. '(pt_1 > 30)'")
    p.add_argument("--mc-weight", default=None, help="MC event-weight branch (negative weights allowed)")
    p.add_argument("--data-weight", default=None, help="data event-weight branch")
    p.add_argument("--transformer", default="affine", choices=["affine", "spline"], help="flow transformer")
    p.add_argument("--layers", type=int, default=4, help="autoregressive layers (default 4)")
    p.add_argument("--steps", type=int, default=2000, help="training steps (default 2000)")
    p.add_argument("--batch-size", type=int, default=1024, help="MC and data events per step (default 1024)")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    p.add_argument("--eval-batches", type=int, default=50, help="minibatch pairs for the final constraint check")
    p.add_argument("--log", default=None, help="JSON-lines metrics log (loss, MMD^2/eps, lambda per step)")
    _common(p)
    p.set_defaults(func=_user_errors(run_train))

    p = sub.add_parser("apply", help="write a new ROOT file: the input tree plus <var>_corr for every model variable")
    p.add_argument("model", help="model file written by `morph train`")
    p.add_argument("--in", dest="input", required=True, help="ROOT file to correct (FILE:TREE or FILE with --tree)")
    p.add_argument("--out", required=True, help="new ROOT file (never the input)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (never the input)")
    p.add_argument("--vars", nargs="+", default=None, help="optional check: must equal the model's variables")
    p.add_argument("--context", nargs="*", default=None, help="optional check: must equal the model's context")
    p.add_argument("--step-size", type=int, default=200_000, help="entries read per chunk (default 200000)")
    p.add_argument("--batch-size", type=int, default=65_536, help="events per flow evaluation (default 65536)")
    _common(p)
    p.set_defaults(func=_user_errors(run_apply))

    p = sub.add_parser("report", help="metrics (W1, correlations, AUC, MMD) and plots: data vs MC vs corrected MC")
    p.add_argument("--data", required=True, help="data ROOT file (FILE:TREE or FILE with --tree)")
    p.add_argument("--corrected", required=True, help="output of `morph apply` (FILE:TREE or FILE with --tree)")
    p.add_argument("--model", default=None, help="model file: takes --vars/--context from it")
    p.add_argument("--vars", nargs="+", default=None, help="corrected variables (read <var> and <var>_corr)")
    p.add_argument("--context", nargs="*", default=None, help="kinematic variables included in the metrics")
    p.add_argument("--out", default="morph_report", help="folder for report.json and the PNG plots")
    p.add_argument("--cut", default=None, help="selection applied to both samples")
    p.add_argument("--mc-weight", default=None, help="MC event-weight branch")
    p.add_argument("--data-weight", default=None, help="data event-weight branch")
    p.add_argument("--mass", default=None, help="also plot this branch (e.g. the diphoton mass) for the 3 samples")
    p.add_argument("--mass-range", type=float, nargs=2, default=None, metavar=("LO", "HI"), help="mass plot range")
    p.add_argument("--log-y", nargs="*", default=[], help="variables plotted with a log y axis")
    p.add_argument("--no-auc", action="store_true", help="skip the classifier two-sample test")
    p.add_argument("--auc-events", type=int, default=20_000, help="events per class for the classifier")
    p.add_argument("--mmd-events", type=int, default=2000, help="events per sample for the MMD test")
    p.add_argument("--permutations", type=int, default=200, help="permutations of the MMD p-value (default 200)")
    _common(p)
    p.set_defaults(func=_user_errors(run_report))
    return morph
