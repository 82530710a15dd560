"""MDMM morphing of MC to data on ROOT files: train, apply, report (``bgflow-sci morph ...`` calls these).

::

    # 1. train a MorphingFlow (weights + variable/context names + fitted preprocessing in one checkpoint file)
    train_morphing("mc.root:events", "data.root:events", ["r9_1", "sieie_1"], context=["pt_1"], out="model.pt")
    # 2. write a NEW file with the MC tree, all its branches and <var>_corr for every model variable
    apply_morphing("model.pt", "mc.root:events", "mc_corrected.root")
    # 3. data vs MC vs corrected MC: W1 per variable, correlation error, classifier AUC, MMD (+ p-value), PNG plots
    morph_report("data.root:events", "mc_corrected.root:events", model="model.pt", out="report/")

Files are given as ``FILE:TREE`` (or ``FILE`` with ``tree=``).  The model file stores the variable and context
names, so ``apply`` refuses an input tree that lacks a branch or a ``vars``/``context`` list that differs from
the model's, naming the branches.  No output ever overwrites an input: ``apply`` refuses ``out`` equal to the input
and an existing ``out`` unless ``overwrite``; ``train`` refuses a model path equal to an input file.  Training is
resumable: with ``checkpoint_every`` the trainer state goes to ``<out>.ckpt`` and ``resume=True`` continues it to
the parameters of an uninterrupted run.  Reading and writing go through :mod:`bgflow_sci.hep.io` (its errors name
file, tree and branch), training through :func:`~bgflow_sci.hep.morphing.fit_morphing`, the metrics through
:func:`bgflow_sci.hep.metrics.compare` and the plots through :mod:`bgflow_sci.hep.plots`.  Input errors are
``ValueError`` / ``FileNotFoundError`` / ``FileExistsError`` with a message for the user.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["apply_morphing", "morph_report", "parse_file_tree", "parse_kinds", "train_morphing"]


def parse_file_tree(spec: str, default_tree: str | None, what: str) -> tuple[str, str]:
    """``"file.root:tree"`` (or ``"file.root"`` with ``default_tree``) -> ``(file, tree)``."""
    path, sep, tree = spec.rpartition(":")
    if sep and path and "/" not in tree and tree:
        return path, tree
    if default_tree is None:
        raise ValueError(f"{what} {spec!r} names no tree; use FILE:TREE or --tree")
    return spec, default_tree


def parse_kinds(specs: Sequence[str] | None, names: Sequence[str]) -> dict[str, Any]:
    """``["r9=logit", "x=logit:0:2", "iso=spike", "pt=log"]`` -> ``{name: kind}`` (unknown names refused)."""
    out: dict[str, Any] = {}
    for spec in specs or []:
        name, sep, kind = spec.partition("=")
        if not sep or not kind:
            raise ValueError(f"--kinds entry {spec!r} must be NAME=KIND (identity, log, logit[:lo:hi], spike)")
        if name not in names:
            raise ValueError(f"--kinds names {name!r}, which is not among --vars/--context {list(names)}")
        parts = kind.split(":")
        try:
            out[name] = parts[0] if len(parts) == 1 else (parts[0], *(float(p) for p in parts[1:]))
        except ValueError:
            raise ValueError(f"--kinds entry {spec!r}: bounds must be numbers, e.g. {name}=logit:0:1") from None
    return out


def _set_threads(n: int) -> None:
    import torch

    if n > 0:
        torch.set_num_threads(n)


def load_morphing_model(path: str | Path):
    """A :class:`~bgflow_sci.hep.morphing.MorphingFlow` from a file written by :func:`train_morphing` (eval mode)."""
    from ..hep.morphing import MorphingFlow
    from ..io import CheckpointError

    if not Path(path).is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist (write one with `bgflow-sci morph train`)")
    try:
        return MorphingFlow.load(path).eval()
    except CheckpointError as err:
        raise CheckpointError(f"{err} (expected a MorphingFlow model written by `bgflow-sci morph train`)") from err


def _check_names(model: Any, vars_: Sequence[str] | None, context: Sequence[str] | None, source: str) -> None:
    """Refuse ``vars``/``context`` lists that differ from the model's, naming the differing branches."""
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
def train_morphing(
    mc: str,
    data: str,
    vars: Sequence[str],
    context: Sequence[str] = (),
    kinds: Sequence[str] = (),
    out: str | Path = "morph_model.pt",
    *,
    derive: Sequence[str] = (),
    feature_weight: float = 1.0,
    tree: str | None = None,
    overwrite: bool = False,
    cut: str | None = None,
    mc_weight: str | None = None,
    data_weight: str | None = None,
    transformer: str = "affine",
    layers: int = 4,
    steps: int = 2000,
    batch_size: int = 1024,
    lr: float = 2e-3,
    eval_batches: int = 50,
    log: str | None = None,
    seed: int = 0,
    threads: int = 0,
    progress: bool = True,
    checkpoint_every: int | None = 200,
    resume: bool = False,
) -> dict[str, Any]:
    """Read MC and data, fit a MorphingFlow by MDMM, save it to ``out``; returns a summary dict.

    ``kinds``: ``NAME=KIND`` preprocessing specs (:func:`parse_kinds`).  ``derive``: ``NAME=EXPR`` derived
    observables over ``vars`` and ``context`` (:mod:`bgflow_sci.hep.expressions`), added to the MMD constraint
    (scaled by ``feature_weight``) and stored in the model.  With ``checkpoint_every`` the trainer
    state goes to ``<out>.ckpt`` every that many steps; ``resume`` continues from it (``overwrite`` is implied for
    ``out``) and gives the parameters of an uninterrupted run.
    """
    import torch

    from ..hep.io import _same_file, read_tree
    from ..hep.morphing import MorphingFlow, fit_morphing

    _set_threads(threads)
    mc_path, mc_tree = parse_file_tree(mc, tree, "--mc")
    data_path, data_tree = parse_file_tree(data, tree, "--data")
    names, context = list(vars), list(context or [])
    kinds = parse_kinds(kinds, names + context)
    out = Path(out)
    checkpoint = out.with_name(out.name + ".ckpt")
    for path in {mc_path, data_path}:
        if _same_file(Path(path), out):
            raise ValueError(f"refusing to write the model to {str(out)!r}: it is the input file {path!r}")
    if out.suffix == ".root":
        raise ValueError(f"--out {str(out)!r} is the model file (torch); write corrected ROOT files with `morph apply`")
    if resume and not checkpoint.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint {str(checkpoint)!r} of an earlier `morph train --out {out}`")
    if out.exists() and not (overwrite or resume):
        raise FileExistsError(f"model file {str(out)!r} exists; pass --overwrite to replace it")

    torch.manual_seed(seed)
    x_mc, w_mc = read_tree(mc_path, mc_tree, names + context, cut=cut, weight_branch=mc_weight, library="np")
    x_data, w_data = read_tree(data_path, data_tree, names + context, cut=cut, weight_branch=data_weight, library="np")
    model = MorphingFlow(
        names,
        context,
        kinds=[kinds.get(n, "identity") for n in names],
        context_kinds=[kinds.get(n, "identity") for n in context],
        transformer=transformer,
        n_layers=layers,
        seed=seed,
        derived=list(derive or []),
    )
    n_min = min(len(w_mc), len(w_data))
    batch = min(batch_size, max(n_min // 2, 2))
    result = fit_morphing(
        model,
        x_mc,
        x_data,
        mc_weights=w_mc if mc_weight else None,
        data_weights=w_data if data_weight else None,
        steps=steps,
        batch_size=batch,
        lr=lr,
        log_path=log,
        progress=progress,
        seed=seed,
        n_eval_batches=eval_batches,
        feature_weight=feature_weight,
        checkpoint_path=checkpoint if checkpoint_every else None,
        checkpoint_every=checkpoint_every,
        resume=resume,
    )
    model.save(out)
    return {
        "model": str(out),
        "checkpoint": str(checkpoint) if checkpoint_every else None,
        "mc": f"{mc_path}:{mc_tree}",
        "data": f"{data_path}:{data_tree}",
        "variables": names,
        "context": context,
        "kinds": {n: kinds.get(n, "identity") for n in names + context},
        "derived": {k: e.text for k, e in model.derived.items()},
        "events_mc": int(len(w_mc)),
        "events_data": int(len(w_data)),
        "batch_size": batch,
        "steps": steps,
        "resumed": resume,
        "final_lambda": float(result.multipliers[-1]),
        **{k: float(v) for k, v in result.final.items()},
        "constraint_satisfied": bool(result.satisfied) if result.final else None,
        "log": log,
    }


# ------------------------------------------------------------------------------------------------------ apply
def apply_morphing(
    model: str | Path,
    input: str,
    out: str | Path,
    *,
    tree: str | None = None,
    overwrite: bool = False,
    vars: Sequence[str] | None = None,
    context: Sequence[str] | None = None,
    step_size: int = 200_000,
    batch_size: int = 65_536,
    seed: int = 0,
    threads: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Morph every event of the input tree and write a NEW file with ``<var>_corr`` branches; returns a summary.

    Chunk ``i`` of ``step_size`` entries is morphed with seed ``seed + i`` (spike dequantisation).
    """
    from ..hep.io import _same_file, iterate_tree, write_corrected

    _set_threads(threads)
    flow = load_morphing_model(model)
    in_path, tree = parse_file_tree(input, tree, "--in")
    _check_names(flow, vars, context, repr(str(model)))
    out = Path(out)
    if _same_file(Path(in_path), out):  # checked before the (long) morphing; write_corrected checks again
        raise ValueError(f"refusing to write {str(out)!r}: it is the input file {in_path!r}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"output file {str(out)!r} exists; pass --overwrite to replace it")

    needed = flow.names + flow.context_names
    chunks: list[dict[str, np.ndarray]] = []
    derived_chunks: list[dict[str, np.ndarray]] = []
    for i, (arrays, _) in enumerate(
        iterate_tree(in_path, tree, needed, step_size=step_size, library="np", progress=progress)
    ):
        morphed = flow.morph(arrays, batch_size=batch_size, seed=seed + i)
        chunks.append(morphed)
        if flow.derived:  # derived observables recomputed from the corrected variables (context as it is)
            derived_chunks.append(flow.derive({**arrays, **morphed}))
    corrected = {n: np.concatenate([c[n] for c in chunks]) for n in flow.names}
    extra = {k + "_corr": np.concatenate([c[k] for c in derived_chunks]) for k in flow.derived}
    write_corrected(in_path, out, tree, corrected, overwrite=overwrite, progress=progress, extra=extra or None)
    return {
        "out": str(out),
        "tree": tree,
        "events": int(len(corrected[flow.names[0]])),
        "branches": [n + "_corr" for n in flow.names] + list(extra),
    }


# ----------------------------------------------------------------------------------------------------- report
def _table(arrays: dict[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    return np.stack([np.asarray(arrays[n], dtype=np.float64) for n in names], axis=1)


def morph_report(
    data: str,
    corrected: str,
    *,
    model: str | Path | None = None,
    vars: Sequence[str] | None = None,
    context: Sequence[str] | None = None,
    out: str | Path = "morph_report",
    tree: str | None = None,
    cut: str | None = None,
    mc_weight: str | None = None,
    data_weight: str | None = None,
    mass: str | None = None,
    mass_range: Sequence[float] | None = None,
    log_y: Sequence[str] = (),
    auc: bool = True,
    auc_events: int = 20_000,
    mmd_events: int = 2000,
    permutations: int = 200,
    seed: int = 0,
    threads: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Metrics and plots of data vs MC vs corrected MC into the folder ``out`` (``report.json``, PNGs).

    Returns the summary written to ``report.json``; ``summary["table"]`` is the printable metrics table.
    """
    from tqdm.auto import tqdm

    from ..hep.io import read_tree
    from ..hep.metrics import compare, format_table
    from ..hep.plots import plot_correlations, plot_mass, plot_variables

    _set_threads(threads)
    data_path, data_tree = parse_file_tree(data, tree, "--data")
    corr_path, corr_tree = parse_file_tree(corrected, tree, "--corrected")
    names, context = vars, context
    if model:
        flow = load_morphing_model(model)
        _check_names(flow, names, context, repr(str(model)))
        names, context = flow.names, flow.context_names
    if not names:
        raise ValueError("give the corrected variables with --vars or --model")
    names, context = list(names), list(context or [])
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file; give a folder for the report")

    features = names + context
    derived = flow.derived if model else {}
    extra = [mass] if mass and mass not in features and mass not in derived else []
    d, w_data = read_tree(data_path, data_tree, features + extra, cut=cut, weight_branch=data_weight, library="np")
    corr_names = [n + "_corr" for n in names]
    try:
        mc, w_mc = read_tree(
            corr_path, corr_tree, features + corr_names + extra, cut=cut, weight_branch=mc_weight, library="np"
        )
    except ValueError as err:
        if any(f"branch {c!r} not found" in str(err) for c in corr_names):
            raise ValueError(f"{err} (is --corrected an output of `bgflow-sci morph apply`?)") from err
        raise
    x_data = _table(d, features)
    x_mc = _table(mc, features)
    x_corr = _table({**mc, **{n: mc[n + "_corr"] for n in names}}, features)
    wd = w_data if data_weight else None
    wm = w_mc if mc_weight else None
    candidates = {"MC": (x_mc, wm), "corrected MC": (x_corr, wm)}

    metrics: dict[str, Any] = {}
    steps = tqdm(list(candidates.items()), desc="metrics", disable=not progress)
    for label, cand in steps:
        steps.set_postfix_str(label)
        metrics.update(
            compare(
                x_data,
                {label: cand},
                data_weights=wd,
                names=features,
                auc=auc,
                seed=seed,
                mmd_max_events=mmd_events,
                n_permutations=permutations,
                max_events=auc_events,
            )
        )
    plots = [
        plot_variables(
            {
                "data": (_table(d, names), wd),
                "MC": (x_mc[:, : len(names)], wm),
                "corrected MC": (x_corr[:, : len(names)], wm),
            },
            out / "variables.png",
            names=names,
            log_y=list(log_y),
        ),
        plot_correlations(
            {"data": (x_data, wd), "MC": (x_mc, wm), "corrected MC": (x_corr, wm)},
            out / "correlations.png",
            names=features,
        ),
    ]
    if mass:
        if mass in derived:  # a derived observable: recomputed for every sample from its own variables
            expr = derived[mass]
            d[mass] = expr(d).double().numpy()
            m_corr = expr({**mc, **{n: mc[n + "_corr"] for n in names}}).double().numpy()
            mc[mass] = expr(mc).double().numpy()
        else:
            m_corr = mc[mass + "_corr"] if mass in names else mc[mass]
        lo, hi = mass_range if mass_range else np.nanquantile(d[mass], [0.001, 0.999])
        plots.append(
            plot_mass(
                {"data": (d[mass], wd), "MC": (mc[mass], wm), "corrected MC": (m_corr, wm)},
                out / "mass.png",
                range_=(float(lo), float(hi)),
                xlabel=mass,
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
        "cut": cut,
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
    return {**summary, "table": format_table(metrics)}
