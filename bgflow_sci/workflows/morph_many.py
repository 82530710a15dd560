"""Apply a trained morphing model to many ROOT files with Dask: one output file per input, with progress.

::

    # every MC file of a production (their sum larger than memory), 4 local worker processes
    apply_many("model.pt", ["mc/*.root:Events", "extra/mc_2023.root"], "corrected/", workers=4)
    # -> corrected/<stem>_corr.root per input; the same on a running cluster (only the client is closed)
    apply_many("model.pt", ["mc/*.root:Events"], "corrected/", scheduler="tcp://scheduler:8786")
    # without dask: a plain loop in this process
    apply_many("model.pt", ["mc/*.root:Events"], "corrected/", workers=0)

Design:

* **Parallelism is per file.** Each input file is one Dask task that calls
  :func:`bgflow_sci.workflows.morph.apply_morphing` on it (the same function as ``bgflow-sci morph apply`` on one
  file; its logic is not duplicated here). That function reads the input in chunks of ``step_size`` entries to morph
  it and copies its branches to the output chunk by chunk too, but it keeps the corrected columns (derived and
  ensemble-spread ones too) of the whole file in memory until they are written (``8 B x variables x events`` of that
  file, twice that while the chunks are joined; e.g. 2.4 GB for 10^8 events and 3 variables). So a worker's memory is
  the model, one input chunk and the corrected columns of the *one* file it works on: it does not grow with the number
  or the total size of the files (which may be far larger than memory), but it is not bounded by ``step_size`` alone,
  and one file's corrected columns must fit in a worker. With ``threads_per_worker=1`` a worker morphs one file at a
  time.
* **One output per input**: ``out_dir/<stem><suffix><ext>`` in the input's format (TTree or RNTuple), with all the
  input's branches plus the ``<var>_corr`` ones.  Output names that collide (``a/x.root`` and ``b/x.root``), an
  output that would be an input, and existing outputs (unless ``overwrite``) are all refused before any work starts.
  Each output is written to ``<out>.tmp`` and renamed when complete, so a failed file leaves no partial output
  (a worker process killed while writing may leave its ``.tmp``).
* **Reproducible**: each file is morphed with the same ``seed`` (chunk ``i`` of a file with ``seed + i``), so every
  output equals what :func:`~bgflow_sci.workflows.morph.apply_morphing` writes for that file in-process, whichever
  worker runs it and in whatever order (bit for bit with the same software, hardware and ``threads``).
* **Errors**: a failing file does not stop the others; when all have run, the first failure (in input order) is
  re-raised with its file named, with the same exception type where possible (``ValueError`` etc., which the CLI
  shows as a user error); the outputs of the files that finished stay.

This is the file-level path: it does not split files into ``uproot.dask`` / dask-awkward partitions and builds no
dask-awkward graph.  A single huge file is processed by one worker (in chunks); spreading one file over several
workers is not done here.  The input files, the outputs and the model must be reachable under the same paths from
every worker (a shared file system for a remote cluster); the paths are made absolute before they are sent.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .parallel import check_workers, import_distributed, run_tasks

__all__ = ["apply_many", "expand_inputs", "output_paths"]


# ----------------------------------------------------------------------------------------------------- inputs
def expand_inputs(specs: Sequence[str], tree: str | None) -> list[tuple[str, str]]:
    """Input specs -> ``[(file, tree), ...]``, globs expanded.

    Args:
        specs: each ``FILE``, ``FILE:TREE`` or a glob of files with an optional ``:TREE`` (``"data/*.root:Events"``;
            ``**`` matches sub-folders).  A glob's matches are sorted; the specs keep their order.
        tree: the tree of specs given without ``:TREE`` (``None``: every spec must name its tree).

    Returns:
        ``(file, tree)`` per input file, the file as given or matched (not made absolute).

    Raises:
        FileNotFoundError: a glob that matches no file or a file that does not exist (the spec named).
        ValueError: a spec without a tree and ``tree=None``, no specs, or the same file and tree twice (also
            through differently spelled paths or overlapping globs).
    """
    from .morph import parse_file_tree

    if isinstance(specs, (str, os.PathLike)):
        raise ValueError(f"inputs must be a list of FILE[:TREE] specs, got the single value {str(specs)!r}")
    if not specs:
        raise ValueError("no input files given")
    out: list[tuple[str, str]] = []
    seen: dict[tuple[str, str], str] = {}
    for spec in specs:
        path, name = parse_file_tree(str(spec), tree, "input")
        if glob.has_magic(path):
            files = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
            if not files:
                raise FileNotFoundError(f"input {spec!r}: the pattern {path!r} matches no file")
        elif not os.path.isfile(path):
            what = "is a folder, not a ROOT file" if os.path.isdir(path) else "does not exist"
            raise FileNotFoundError(f"input {spec!r}: file {path!r} {what}")
        else:
            files = [path]
        for file in files:
            key = (str(Path(file).resolve()), name)
            if key in seen:
                raise ValueError(
                    f"input file {file!r} (tree {name!r}) is given twice: by {seen[key]!r} and by {spec!r}"
                )
            seen[key] = str(spec)
            out.append((file, name))
    return out


def output_paths(inputs: Sequence[tuple[str, str]], out_dir: str | Path, suffix: str = "_corr") -> list[Path]:
    """``out_dir/<stem><suffix><ext>`` for each ``(file, tree)`` of :func:`expand_inputs`, in the same order.

    Raises:
        ValueError: two inputs that would write the same output (``a/x.root`` and ``b/x.root``, or two trees of one
            file), both named; an output that would be one of the inputs; a ``suffix`` with a path separator.
    """
    if "/" in suffix or os.sep in suffix:
        raise ValueError(f"suffix {suffix!r} must not contain a path separator")
    out_dir = Path(out_dir)
    outs: list[Path] = []
    owner: dict[Path, str] = {}
    ins = {Path(file).resolve(): f"{file}:{name}" for file, name in inputs}
    inodes = {_inode(Path(file)): f"{file}:{name}" for file, name in inputs}  # hard links to an input
    inodes.pop(None, None)
    for file, name in inputs:
        src = Path(file)
        out = out_dir / f"{src.stem}{suffix}{src.suffix}"
        key = out.resolve()
        if key in owner:
            raise ValueError(
                f"inputs {owner[key]!r} and {f'{file}:{name}'!r} would both be written to {str(out)!r}; "
                "morph them in separate calls (other --out folders) or rename one"
            )
        node = _inode(out)
        clash = ins.get(key) or (inodes.get(node) if node is not None else None)
        if clash:
            raise ValueError(
                f"refusing to write {str(out)!r} for input {f'{file}:{name}'!r}: it is the input file of "
                f"{clash!r} (choose another output folder or suffix)"
            )
        owner[key] = f"{file}:{name}"
        outs.append(out)
    return outs


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


# ------------------------------------------------------------------------------------------------------ tasks
def _morph_one(model: str, file: str, tree: str, out: str, options: dict[str, Any]) -> dict[str, Any]:
    """One file (a Dask task, or one step of the in-process loop): ``apply_morphing`` without a progress bar."""
    from .morph import apply_morphing

    summary = apply_morphing(model, f"{file}:{tree}", out, progress=False, **options)
    return {"in": f"{file}:{tree}", "out": summary["out"], "events": summary["events"]}


# ------------------------------------------------------------------------------------------------------ apply
def apply_many(
    model: str | Path,
    inputs: Sequence[str],
    out_dir: str | Path,
    *,
    tree: str | None = None,
    overwrite: bool = False,
    vars: Sequence[str] | None = None,
    context: Sequence[str] | None = None,
    step_size: int = 200_000,
    batch_size: int = 65_536,
    seed: int = 0,
    threads: int = 1,
    workers: int = 2,
    scheduler: str | None = None,
    suffix: str = "_corr",
    progress: bool = True,
) -> dict[str, Any]:
    """Morph every input file with the model ``model`` into its own new file in ``out_dir``, in parallel with Dask.

    Args:
        model: the model file written by :func:`~bgflow_sci.workflows.morph.train_morphing`.
        inputs: ``FILE``, ``FILE:TREE`` or glob specs (:func:`expand_inputs`); ``tree`` is the default tree.
        out_dir: the output folder (created if needed); outputs are named by :func:`output_paths` with ``suffix``.
        overwrite: replace existing outputs (otherwise all existing ones are named and nothing is done).
        vars, context, step_size, batch_size, seed: as for :func:`~bgflow_sci.workflows.morph.apply_morphing`,
            for every file (the same ``seed`` for each, so each output equals that of ``apply_morphing`` alone).
        threads: torch threads per task (``0``: torch's default, which oversubscribes the cores with several
            workers); with ``workers=0`` this sets the threads of this process, as ``apply_morphing`` does.
        workers: worker processes of the local Dask cluster started (and shut down) here, one thread each;
            ``0``: no Dask, a plain loop in this process.  Ignored with ``scheduler``.
        scheduler: the address of a running Dask scheduler (``"tcp://host:8786"``) to use instead of a local
            cluster; only the client is closed at the end.
        progress: a progress bar over the completed files.

    Returns:
        ``{"outputs": [{"in": "FILE:TREE", "out": path, "events": n}, ...] (input order), "files": n_files,
        "events": total events, "workers": number of workers (0 in-process), "scheduler": "local", the address or
        "in-process"}``; paths absolute.

    Raises:
        ValueError, FileNotFoundError, FileExistsError: bad inputs or outputs, before any work starts; the error of
            a failed file (after the others ran), its input named.
        ImportError: ``dask.distributed`` is missing (``workers > 0`` or ``scheduler``).
    """
    from .morph import _check_names, load_morphing_model

    check_workers(workers, scheduler)
    model_path = Path(model).resolve()
    flow = load_morphing_model(model_path)  # a missing/wrong model or mismatched --vars fail here, not in N tasks
    _check_names(flow, vars, context, repr(str(model)))
    del flow

    pairs = [(os.path.abspath(f), t) for f, t in expand_inputs(inputs, tree)]
    outs = [Path(os.path.abspath(p)) for p in output_paths(pairs, out_dir, suffix)]
    out_dir = Path(os.path.abspath(out_dir))
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output folder {str(out_dir)!r} is a file")
    existing = [str(p) for p in outs if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{len(existing)} output file(s) exist: {existing}; pass --overwrite to replace them")
    if scheduler is not None or workers > 0:
        import_distributed("morphing many files")  # before any work

    jobs = [(file, name, str(out)) for (file, name), out in zip(pairs, outs)]
    options = {  # the tree travels in each FILE:TREE
        "overwrite": overwrite,
        "vars": list(vars) if vars is not None else None,
        "context": list(context) if context is not None else None,
        "step_size": step_size,
        "batch_size": batch_size,
        "seed": seed,
        "threads": threads,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    results, where = run_tasks(
        _morph_one,
        [(str(model_path), file, name, out, options) for file, name, out in jobs],
        workers=workers,
        scheduler=scheduler,
        progress=progress,
        desc="morph",
        unit="file",
        name=lambda job: f"{job[1]}:{job[2]}",
        what="morphing input",
        verb="were morphed",
    )
    done = list(results)
    return {
        "outputs": done,
        "files": len(done),
        "events": int(sum(r["events"] for r in done)),
        **where,
    }
