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
    """The :class:`~bgflow_sci.hep.morphing.MorphingFlow` or :class:`~bgflow_sci.hep.ensemble.MorphingEnsemble` in
    a file written by :func:`train_morphing` (eval mode)."""
    from ..hep.ensemble import load_morphing
    from ..io import CheckpointError

    if not Path(path).is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist (write one with `bgflow-sci morph train`)")
    try:
        return load_morphing(path)
    except CheckpointError as err:
        raise CheckpointError(
            f"{err} (expected a MorphingFlow or MorphingEnsemble model written by `bgflow-sci morph train`)"
        ) from err


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
    holdout: float = 0.0,
    holdout_key: str | None = None,
    validation: float = 0.0,
    validate_every: int = 100,
    ensemble: int = 1,
    tree: str | None = None,
    overwrite: bool = False,
    cut: str | None = None,
    mc_weight: str | None = None,
    data_weight: str | None = None,
    transformer: str = "affine",
    layers: int = 4,
    steps: int = 2000,
    batch_size: int | None = None,
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
    (scaled by ``feature_weight``) and stored in the model.  ``holdout``: fraction of the entries of both trees
    kept out of training (:func:`read_split`, split recorded in the model, used by :func:`morph_report`);
    ``holdout_key``: an integer branch (event number) hashed instead of the entry number, so that all rows of one
    event stay together.  ``validation``: fraction of the training events (same key, another seed) used only to
    pick the training step whose map scores best on them (:class:`~bgflow_sci.hep.morphing.MorphingValidation`,
    every ``validate_every`` steps; step 0, the identity, included).  ``ensemble``: ``K > 1`` trains a
    :class:`~bgflow_sci.hep.ensemble.MorphingEnsemble` of ``K`` members (seeds ``seed + k``, bootstrap resamples
    of the training events).  With ``checkpoint_every``
    the trainer state goes to ``<out>.ckpt`` every that many steps; ``resume`` continues from it (``overwrite`` is
    implied for ``out``) and gives the parameters of an uninterrupted run; a killed ensemble resumes at the member
    it was training (finished members wait in ``<out>.member<k>.pt``).
    """
    import torch

    from ..hep.ensemble import MorphingEnsemble
    from ..hep.io import _same_file
    from ..hep.morphing import MorphingFlow, fit_morphing
    from ..hep.splits import bootstrap_indices, held_out

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
    partial = [out.with_name(f"{out.name}.member{k}{e}") for k in range(ensemble) for e in (".pt", ".ckpt")]
    if resume and not (checkpoint.is_file() if ensemble == 1 else any(p.is_file() for p in partial)):
        raise FileNotFoundError(f"--resume: no checkpoint {str(checkpoint)!r} of an earlier `morph train --out {out}`")
    if out.exists() and not (overwrite or resume):
        raise FileExistsError(f"model file {str(out)!r} exists; pass --overwrite to replace it")

    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"--holdout must be a fraction in [0, 1), got {holdout}")
    if ensemble < 1:
        raise ValueError(f"--ensemble must be >= 1, got {ensemble}")

    torch.manual_seed(seed)
    features = names + context
    split = {"fraction": holdout, "seed": seed, "key": holdout_key} if holdout > 0 else None
    x_mc, w_mc, mc_info = read_split(mc_path, mc_tree, features, cut, mc_weight, split, "train", keys=True)
    x_data, w_data, data_info = read_split(data_path, data_tree, features, cut, data_weight, split, "train", keys=True)
    record = {"fraction": holdout, "seed": seed, "key": holdout_key, "mc": mc_info, "data": data_info}  # always
    checks = None  # validation events: a second split of the training part, by the same key, another seed
    if validation > 0:
        val_mc, val_d = (
            held_out(x_mc["__key__"], validation, seed + 7919),
            held_out(x_data["__key__"], validation, seed + 7919),
        )
        for what, mask in (("MC", val_mc), ("data", val_d)):
            if mask.sum() < 2 or (~mask).sum() < 2:
                raise ValueError(f"--validation {validation}: {int(mask.sum())} of {len(mask)} {what} events")
        checks = (
            ({n: v[val_mc] for n, v in x_mc.items()}, {n: v[val_d] for n, v in x_data.items()}),
            (w_mc[val_mc], w_data[val_d]),
        )
        x_mc, w_mc = {n: v[~val_mc] for n, v in x_mc.items()}, w_mc[~val_mc]
        x_data, w_data = {n: v[~val_d] for n, v in x_data.items()}, w_data[~val_d]
        record["validation"] = {"fraction": validation, "seed": seed + 7919}
    for table in (x_mc, x_data):
        table.pop("__key__")
    if checks:
        for table in checks[0]:
            table.pop("__key__")
    n_min = min(len(w_mc), len(w_data))
    # default: 1024, at most half the smaller sample (minibatches are then true subsamples); a larger explicit
    # batch_size is honoured (minibatches drawn with replacement, the noise floor at the same size)
    batch = int(batch_size) if batch_size else min(1024, max(n_min // 2, 2))

    def member(k: int) -> tuple[MorphingFlow, Any]:
        """Train member ``k`` (seed ``seed + k``; a bootstrap resample of MC and data in an ensemble)."""
        s = seed + k
        xm, wm, xd, wd = x_mc, w_mc, x_data, w_data
        if ensemble > 1:
            im, id_ = bootstrap_indices(len(w_mc), 2 * s), bootstrap_indices(len(w_data), 2 * s + 1)
            xm, wm = {n: v[im] for n, v in x_mc.items()}, w_mc[im]
            xd, wd = {n: v[id_] for n, v in x_data.items()}, w_data[id_]
        model = MorphingFlow(
            names,
            context,
            kinds=[kinds.get(n, "identity") for n in names],
            context_kinds=[kinds.get(n, "identity") for n in context],
            transformer=transformer,
            n_layers=layers,
            seed=s,
            derived=list(derive or []),
            holdout=record,
        )
        ckpt = checkpoint if ensemble == 1 else out.with_name(f"{out.name}.member{k}.ckpt")
        result = fit_morphing(
            model,
            xm,
            xd,
            mc_weights=wm if mc_weight else None,
            data_weights=wd if data_weight else None,
            steps=steps,
            batch_size=batch,
            lr=lr,
            log_path=log if ensemble == 1 or not log else f"{log}.member{k}",
            progress=progress,
            seed=s,
            n_eval_batches=eval_batches,
            feature_weight=feature_weight,
            validation=checks[0] if checks else None,
            validation_weights=(checks[1][0] if mc_weight else None, checks[1][1] if data_weight else None)
            if checks
            else None,
            validate_every=validate_every,
            checkpoint_path=ckpt if checkpoint_every else None,
            checkpoint_every=checkpoint_every,
            resume=resume,
        )
        return model, result

    if ensemble == 1:
        model, result = member(0)
        model.save(out)
        finals = [result]
    else:  # finished members are kept in <out>.member<k>.pt, so a killed ensemble resumes where it stopped
        flows, finals = [], []
        for k in range(ensemble):
            done = out.with_name(f"{out.name}.member{k}.pt")
            if resume and done.is_file():
                flows.append(MorphingFlow.load(done))
                finals.append(None)
                continue
            flow_k, result_k = member(k)
            flow_k.save(done)
            flows.append(flow_k)
            finals.append(result_k)
        model = MorphingEnsemble(flows, holdout=record)
        model.save(out)
        for path in partial:  # the ensemble file holds every member now
            path.unlink(missing_ok=True)
    last = finals[-1]
    return {
        "model": str(out),
        "checkpoint": str(checkpoint) if checkpoint_every and ensemble == 1 else None,
        "mc": f"{mc_path}:{mc_tree}",
        "data": f"{data_path}:{data_tree}",
        "variables": names,
        "context": context,
        "kinds": {n: kinds.get(n, "identity") for n in names + context},
        "derived": {k: e.text for k, e in model.derived.items()},
        "holdout": record,
        "ensemble": ensemble,
        "events_mc": int(len(w_mc)),
        "events_data": int(len(w_data)),
        "events_validation": {"mc": int(len(checks[1][0])), "data": int(len(checks[1][1]))} if checks else None,
        "best_step": [r.best_step if r else None for r in finals] if checks else None,
        "batch_size": batch,
        "steps": steps,
        "resumed": resume,
        "final_lambda": float(last.multipliers[-1]) if last else None,
        **({k: float(v) for k, v in last.final.items()} if last else {}),
        "constraint_satisfied": bool(last.satisfied) if last and last.final else None,
        "members_satisfied": [bool(r.satisfied) if r and r.final else None for r in finals] if ensemble > 1 else None,
        "log": log,
    }


def read_split(
    path: str,
    tree: str,
    branches: Sequence[str],
    cut: str | None,
    weight_branch: str | None,
    split: dict[str, Any] | None,
    part: str,
    keys: bool = False,
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, Any]]:
    """The ``"train"``, ``"holdout"`` or ``"all"`` events of a tree that pass ``cut``: ``(arrays, weights, info)``.

    ``split = {"fraction": F, "seed": s}`` holds out entry ``i`` when :func:`~bgflow_sci.hep.splits.holdout_mask`
    says so (a function of the global entry number: reproducible from the file alone); with ``"key": BRANCH`` the
    integer values of that branch (e.g. an event number) are hashed instead; ``None`` or ``part="all"``
    reads every selected event.  ``info = {"file", "tree", "entries", "selected"}`` (entries of the whole tree,
    events returned).  ``keys``: add ``arrays["__key__"]``, the split key (entry number or key branch) of every
    returned event.
    """
    from ..hep.io import num_entries, read_tree
    from ..hep.splits import held_out

    entries = num_entries(path, tree)
    info = {"file": str(Path(path).resolve()), "tree": tree, "entries": int(entries)}
    key = (split or {}).get("key")
    if part not in ("train", "holdout", "all"):
        raise ValueError(f"part must be 'train', 'holdout' or 'all', got {part!r}")
    if (split is None or part == "all") and not keys:
        arrays, weights = read_tree(path, tree, branches, cut=cut, weight_branch=weight_branch, library="np")
        return arrays, weights, {**info, "selected": int(len(weights))}
    extra = [key] if key and key not in branches else []
    arrays, weights = read_tree(path, tree, [*branches, *extra], weight_branch=weight_branch, library="np")
    values = (arrays.pop(key) if extra else arrays[key]) if key else np.arange(entries)
    keep = np.ones(entries, dtype=bool)
    if split is not None and part != "all":
        try:
            held = held_out(values, float(split["fraction"]), int(split["seed"]))
        except ValueError as err:
            raise ValueError(f"--holdout-key {key!r} of tree {tree!r} in {str(path)!r}: {err}") from None
        keep = held if part == "holdout" else ~held
    if cut:
        sel, _ = read_tree(path, tree, ["_selected"], aliases={"_selected": cut}, library="np")
        keep &= np.asarray(sel["_selected"]).astype(bool)
    if keep.sum() < 2:
        what = f"{part} part of " if split is not None and part != "all" else ""
        raise ValueError(
            f"empty selection: {what}tree {tree!r} in {str(path)!r} (holdout {(split or {}).get('fraction')}, "
            f"cut {cut!r}) has {int(keep.sum())} selected events"
        )
    out = {n: v[keep] for n, v in arrays.items()}
    if keys:
        out["__key__"] = np.asarray(values)[keep]
    return out, weights[keep], {**info, "selected": int(keep.sum())}


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

    Derived observables of the model are written as ``NAME_corr`` (computed from the corrected variables).  An
    ensemble model writes the member mean as ``<var>_corr`` and the member spread as ``<var>_corr_unc`` (and
    ``NAME_corr_unc``; :mod:`bgflow_sci.hep.ensemble`).  Chunk ``i`` of ``step_size`` entries is morphed with seed
    ``seed + i`` (spike dequantisation).
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
    is_ensemble = hasattr(flow, "members")
    chunks: list[dict[str, np.ndarray]] = []
    spread_chunks: list[dict[str, np.ndarray]] = []
    for i, (arrays, _) in enumerate(
        iterate_tree(in_path, tree, needed, step_size=step_size, library="np", progress=progress)
    ):
        if is_ensemble:  # member mean (derived observables of the mean included) and member spread
            morphed, spread = flow.morph(arrays, batch_size=batch_size, seed=seed + i)
            spread_chunks.append(spread)
        else:
            morphed = flow.morph(arrays, batch_size=batch_size, seed=seed + i)
            if flow.derived:  # derived observables recomputed from the corrected variables (context as it is)
                morphed.update(flow.derive({**arrays, **morphed}))
        chunks.append(morphed)
    corrected = {n: np.concatenate([c[n] for c in chunks]) for n in flow.names}
    extra = {k + "_corr": np.concatenate([c[k] for c in chunks]) for k in flow.derived}
    if is_ensemble:
        extra.update(
            {k + "_corr_unc": np.concatenate([c[k] for c in spread_chunks]) for k in [*flow.names, *flow.derived]}
        )
    write_corrected(in_path, out, tree, corrected, overwrite=overwrite, progress=progress, extra=extra or None)
    return {
        "out": str(out),
        "tree": tree,
        "events": int(len(corrected[flow.names[0]])),
        "ensemble": len(flow) if is_ensemble else 1,
        "branches": [n + "_corr" for n in flow.names] + list(extra),
    }


# ----------------------------------------------------------------------------------------------------- report
def _table(arrays: dict[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    return np.stack([np.asarray(arrays[n], dtype=np.float64) for n in names], axis=1)


def morph_report(
    data: str | Sequence[str],
    corrected: str | Sequence[str],
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
    events: str = "auto",
    floor: bool = True,
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

    ``data``/``corrected``: ``FILE:TREE`` specs, one or several (globs allowed): the statistics are over all of
    them (only the needed branches are read).  ``events``: which events enter -- ``"holdout"``: the entries the
    model's ``--holdout`` split kept out of training (refused if the model has none or a file's entry count
    differs from the recorded one); ``"all"``: every selected event; ``"auto"`` (default): held-out entries of
    each file that matches the recorded training file (same number of entries), all events of any other file
    (independent of the training).  A report on the
    training events themselves warns.  ``floor``: adds the row ``data vs data (floor)``, the metrics of one half of
    the data against the other half (each half half the size of the data sample, so a conservative floor), flags
    every metric of uncorrected MC that is already within it, and warns when all are.  ``mass``: a branch or a
    derived observable of the model, plotted for the three samples and summarised by W1 to data and the peak width
    (weighted std in ``mass_range``).  An ensemble model adds its member envelope to the plots.  Returns the
    summary written to ``report.json``; ``summary["table"]`` is the printable metrics table,
    ``summary["warnings"]`` the warnings.
    """
    import warnings

    from tqdm.auto import tqdm

    from ..hep.metrics import compare, format_table, wasserstein_1d
    from ..hep.plots import plot_correlations, plot_mass, plot_variables

    _set_threads(threads)
    if events not in ("auto", "holdout", "all"):
        raise ValueError(f"--events must be auto, holdout or all, got {events!r}")
    from .morph_many import expand_inputs

    data_files = expand_inputs([data] if isinstance(data, str) else list(data), tree)
    corr_files = expand_inputs([corrected] if isinstance(corrected, str) else list(corrected), tree)
    names, context, flow = vars, context, None
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
    derived = flow.derived if flow is not None else {}
    extra = [mass] if mass and mass not in features and mass not in derived else []
    split = flow.holdout if flow is not None else None
    corr_names = [n + "_corr" for n in names]
    d, w_data, d_info = _read_sample(
        data_files, "data", features + extra, cut, data_weight, split, events, model
    )  # fmt: skip
    try:
        mc, w_mc, mc_info = _read_sample(
            corr_files, "mc", features + corr_names + extra, cut, mc_weight, split, events, model
        )  # fmt: skip
    except ValueError as err:
        if any(f"branch {c!r} not found" in str(err) for c in corr_names):
            raise ValueError(f"{err} (is --corrected an output of `bgflow-sci morph apply`?)") from err
        raise
    parts = {"data": d_info["part"], "corrected": mc_info["part"]}
    x_data = _table(d, features)
    x_mc = _table(mc, features)
    corr_values = {**mc, **{n: mc[n + "_corr"] for n in names}}
    x_corr = _table(corr_values, features)
    wd = w_data if data_weight else None
    wm = w_mc if mc_weight else None
    candidates = {"MC": (x_mc, wm), "corrected MC": (x_corr, wm)}
    rng = np.random.default_rng(seed)
    half = rng.permutation(len(x_data))
    a, b = half[: len(half) // 2], half[len(half) // 2 :]
    floor_label = "data vs data (floor)"
    if floor:
        candidates[floor_label] = (x_data[b], None if wd is None else wd[b])

    metrics: dict[str, Any] = {}
    steps = tqdm(list(candidates.items()), desc="metrics", disable=not progress)
    for label, cand in steps:
        steps.set_postfix_str(label)
        reference = (x_data[a], None if wd is None else wd[a]) if label == floor_label else (x_data, wd)
        metrics.update(
            compare(
                reference[0],
                {label: cand},
                data_weights=reference[1],
                names=features,
                auc=auc,
                seed=seed,
                mmd_max_events=mmd_events,
                n_permutations=permutations,
                max_events=auc_events,
            )
        )
    nbins = int(np.clip(np.sqrt(len(x_data)), 10, 80))  # ~sqrt(n) bins: readable for 500 events and for 10^6
    members = None
    if flow is not None and hasattr(flow, "members"):  # the ensemble's own corrections of these MC events
        members = [{**mc, **m} for m in flow.morph_members({n: mc[n] for n in features}, seed=seed)]
    bands = {"corrected MC": [_table(m, names) for m in members]} if members else None
    samples = {
        "data": (_table(d, names), wd),
        "MC": (x_mc[:, : len(names)], wm),
        "corrected MC": (x_corr[:, : len(names)], wm),
    }
    plots = [
        plot_variables(
            samples, out / "variables.png", names=names, log_y=list(log_y), bands=bands, bins=min(50, nbins)
        ),
        plot_correlations(
            {"data": (x_data, wd), "MC": (x_mc, wm), "corrected MC": (x_corr, wm)},
            out / "correlations.png",
            names=features,
        ),
    ]
    mass_summary = None
    if mass:
        if mass in derived:  # a derived observable: recomputed for every sample from its own variables
            expr = derived[mass]
            d[mass] = expr(d).double().numpy()
            m_corr = expr(corr_values).double().numpy()
            mc[mass] = expr(mc).double().numpy()
            mass_bands = [expr(m).double().numpy() for m in members] if members else None
        else:
            m_corr = mc[mass + "_corr"] if mass in names else mc[mass]
            mass_bands = [m[mass] for m in members] if members and mass in names else None
        lo, hi = mass_range if mass_range else np.nanquantile(d[mass], [0.001, 0.999])
        plots.append(
            plot_mass(
                {"data": (d[mass], wd), "MC": (mc[mass], wm), "corrected MC": (m_corr, wm)},
                out / "mass.png",
                bins=nbins,
                range_=(float(lo), float(hi)),
                xlabel=mass,
                bands={"corrected MC": mass_bands} if mass_bands else None,
            )
        )
        mass_summary = _mass_summary(d[mass], wd, mc[mass], m_corr, wm, (float(lo), float(hi)), a, b, wasserstein_1d)
    within = _within_floor(metrics["MC"], metrics[floor_label]) if floor else None
    warned = []
    if within and all(v for k, v in within.items() if k != "w1") and all(within["w1"].values()):
        warned.append(
            "uncorrected MC is already within the data-vs-data floor on every metric "
            f"({len(x_data)} data, {len(x_mc)} MC events): the correction is not statistically supported by these "
            "samples"
        )
    seen = [k for k, p in parts.items() if p == "training"]
    if seen:
        warned.append(
            f"the {' and '.join(seen)} events are the ones the model was trained on (same file, same entries; "
            "train with --holdout F for an honest report, or report on independent files)"
        )
    for msg in warned:
        warnings.warn(msg, stacklevel=2)
    improvement = {
        "w1_ratio": {
            n: metrics["corrected MC"]["w1"][n] / metrics["MC"]["w1"][n] for n in names if metrics["MC"]["w1"][n] > 0
        },
        "corr_diff_ratio": metrics["corrected MC"]["corr_diff"] / metrics["MC"]["corr_diff"]
        if metrics["MC"]["corr_diff"] > 0
        else None,
    }
    summary = {
        "data": ", ".join(f"{f}:{t}" for f, t in data_files),
        "corrected": ", ".join(f"{f}:{t}" for f, t in corr_files),
        "cut": cut,
        "events": {"data": d_info, "corrected": mc_info},
        "variables": names,
        "context": context,
        "features": features,
        "events_data": int(len(x_data)),
        "events_mc": int(len(x_mc)),
        "metrics": metrics,
        "uncorrected_within_floor": within,
        "corrected_over_uncorrected": improvement,
        "mass": mass_summary,
        "ensemble": len(members) if members else None,
        "warnings": warned,
        "plots": [str(p) for p in plots],
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(summary, indent=2))
    table = format_table(metrics)
    if mass_summary:
        table += "\n\n" + _format_mass(mass, mass_summary)
    return {**summary, "table": table}


def _read_sample(
    files: Sequence[tuple[str, str]],
    key: str,
    branches: Sequence[str],
    cut: str | None,
    weight: str | None,
    split: dict[str, Any] | None,
    events: str,
    model: Any,
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, Any]]:
    """The report's events of one sample (one file or several, concatenated): ``(arrays, weights, info)`` with
    ``info["part"]`` the common part (:func:`_report_part`; ``"mixed"`` if files differ) and, for several files,
    ``info["files"]`` the per-file details.  Only ``branches`` are held in memory."""
    held_split = split if split and split.get("fraction", 0) > 0 else None
    chunks, weights, infos = [], [], []
    for path, tree in files:
        part = _report_part(events, split, key, path, tree, model)
        arrays, w, info = read_split(
            path, tree, branches, cut, weight, held_split, "holdout" if part == "holdout" else "all"
        )  # fmt: skip
        chunks.append(arrays)
        weights.append(w)
        infos.append({**info, "part": part})
    parts = {i["part"] for i in infos}
    if len(infos) == 1:
        return chunks[0], weights[0], infos[0]
    arrays = {n: np.concatenate([c[n] for c in chunks]) for n in chunks[0]}
    info = {"part": parts.pop() if len(parts) == 1 else "mixed", "selected": int(sum(len(w) for w in weights))}
    return arrays, np.concatenate(weights), {**info, "files": infos}


def _report_part(events: str, split: dict[str, Any] | None, key: str, path: str, tree: str, model: Any) -> str:
    """Which events of ``path`` a report uses (see :func:`morph_report`): ``"holdout"``, ``"all"`` (an independent
    file, or ``events="all"``) or ``"training"`` (all events of the file the model was trained on, no holdout)."""
    from ..hep.io import num_entries

    held = bool(split and split.get("fraction", 0) > 0)
    if events == "holdout" and not held:
        raise ValueError(f"--events holdout: the model {str(model)!r} was trained without --holdout")
    if split is None or key not in split:
        return "all"
    expected = int(split[key]["entries"])
    found = num_entries(path, tree)
    same = found == expected
    if events == "holdout" and not same:
        raise ValueError(
            f"--events holdout: tree {tree!r} of {str(path)!r} has {found} entries, the model's {key} training "
            f"file {split[key]['file']!r} had {expected}; it is not that file (or `morph apply` output of it)"
        )
    if not same:
        return "all"  # an independent file: none of its events were seen in training
    if events == "all" or not held:
        return "training"
    return "holdout"


def _within_floor(mc: dict[str, Any], floor: dict[str, Any]) -> dict[str, Any]:
    """Per metric: is uncorrected MC already as close to data as data is to itself?"""
    out: dict[str, Any] = {"w1": {n: bool(v <= floor["w1"][n]) for n, v in mc["w1"].items()}}
    out["corr_diff"] = bool(mc["corr_diff"] <= floor["corr_diff"])
    if "auc" in mc:
        out["auc"] = bool(abs(mc["auc"] - 0.5) <= abs(floor["auc"] - 0.5))
    if "mmd2" in mc:
        out["mmd2"] = bool(mc["mmd2"] <= floor["mmd2"] or mc["mmd_p"] > 0.05)
    return out


def _mass_summary(m_data, wd, m_mc, m_corr, wm, range_, a, b, w1) -> dict[str, Any]:
    """W1 to data and the peak width (weighted std inside ``range_``) of a mass, for MC, corrected MC and the
    data-vs-data floor (half ``a`` against half ``b``)."""

    def width(m, w):
        inside = (m >= range_[0]) & (m <= range_[1])
        w = np.ones_like(m) if w is None else np.asarray(w, dtype=np.float64)
        m, w = m[inside], w[inside]
        mean = np.sum(w * m) / np.sum(w)
        return float(np.sqrt(np.sum(w * (m - mean) ** 2) / np.sum(w)))

    def dist(x, wx, y, wy):
        return float(w1(np.asarray(x)[:, None], np.asarray(y)[:, None], wx, wy)[0])

    mc_w1, corr_w1 = dist(m_mc, wm, m_data, wd), dist(m_corr, wm, m_data, wd)
    return {
        "range": list(range_),
        "w1": {
            "MC": mc_w1,
            "corrected MC": corr_w1,
            "data vs data (floor)": dist(
                m_data[b], None if wd is None else wd[b], m_data[a], None if wd is None else wd[a]
            ),
        },
        "w1_ratio": corr_w1 / mc_w1 if mc_w1 > 0 else None,
        "width": {"data": width(m_data, wd), "MC": width(m_mc, wm), "corrected MC": width(m_corr, wm)},
    }


def _format_mass(name: str, s: dict[str, Any]) -> str:
    w, sd = s["w1"], s["width"]
    return (
        f"{name}: W1 to data  MC {w['MC']:.4g}  corrected {w['corrected MC']:.4g}  floor "
        f"{w['data vs data (floor)']:.4g}  (ratio {s['w1_ratio']:.3g});  width in {s['range'][0]:.4g}-"
        f"{s['range'][1]:.4g}: data {sd['data']:.4g}  MC {sd['MC']:.4g}  corrected {sd['corrected MC']:.4g}"
    )
