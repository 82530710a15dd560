"""Sample sets larger than memory: draw them in chunks on Dask workers, reweight many samples files.

::

    # 10^7 samples of a trained model as 100 files of 10^5, drawn on 8 local worker processes
    sample_chunks("run/model.pt", 10_000_000, "run/samples/", chunk_size=100_000, workers=8)
    # ESS, log Z, ΔF and profiles over all of them, each file reduced on a worker (or on a running scheduler)
    reweight_files(["run/samples/"], "run/reweight/", workers=8)

**Drawing** (:func:`sample_chunks`): chunk ``k`` is drawn with ``torch.manual_seed(seed + k)`` by a task that loads
the model from its checkpoint, evaluates the target energies there and writes ``samples_<k>.npz`` (the
:func:`~bgflow_sci.workflows.sample.write_samples` format, plus the system's trajectory if it writes one): the files
do not depend on the number of workers or on which worker drew which chunk.

**Reweighting** (:func:`reweight_files`): a first pass reads each file's size and the range of its collective
variables (for common bin edges), a second reduces each file to weighted sums
(:mod:`bgflow_sci.reweighting.chunked`; samples numbered across files in file order) that are added on the client:
a worker holds one file at a time, the client only sums. The estimates equal those of
:func:`~bgflow_sci.workflows.reweight.reweight` on all samples in one file (errors from the Poisson bootstrap,
independent of the chunking); ``results.json`` and the profile plots have the same layout (the 2D map, which needs
every sample, is not drawn).
"""

from __future__ import annotations

import functools
import glob
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..reweighting.chunked import chunk_sums, estimates, merge_sums
from .config import EVALUATE_DEFAULTS, merge_config
from .parallel import check_workers, run_tasks, task_client
from .reweight import delta_f_entry, profile_edges, profile_entry
from .sample import read_samples
from .systems import load_system, resolve_system_reference

__all__ = ["expand_sample_files", "reweight_files", "sample_chunks"]

CHUNK_NAME = "samples_{:05d}.npz"


# ------------------------------------------------------------------------------------------------------ draw
@functools.lru_cache(maxsize=2)
def _model(checkpoint: str, device: str, mtime_ns: int):
    """The model of ``checkpoint``, loaded once per worker process (and again when the file changes)."""
    from .models import load_model

    return load_model(checkpoint, device)


def _draw_chunk(checkpoint: str, k: int, n: int, out: str, seed: int, device: str, batch_size, threads: int) -> dict:
    """One chunk (a Dask task, or a step of the in-process loop)."""
    from .sample import write_samples

    if threads > 0:
        torch.set_num_threads(threads)
    module, config, bg = _model(checkpoint, device, os.stat(checkpoint).st_mtime_ns)
    torch.manual_seed(seed + k)
    path = write_samples(module, bg, n, out, batch_size or config["evaluate"]["batch_size"], config)
    return {"file": str(path), "samples": n}


def sample_chunks(
    checkpoint: str | os.PathLike,
    n: int,
    out_dir: str | os.PathLike,
    *,
    chunk_size: int = 100_000,
    seed: int = 0,
    workers: int = 2,
    scheduler: str | None = None,
    device: str = "cpu",
    batch_size: int | None = None,
    threads: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Draw ``n`` importance-weighted samples from ``checkpoint`` as ``ceil(n / chunk_size)`` files in ``out_dir``.

    ``workers``: local Dask worker processes (``0``: a loop in this process); ``scheduler``: a running Dask
    scheduler's address instead. ``threads``: torch threads per task. Existing chunk files are refused (named)
    unless ``overwrite``. Returns ``{"files": [...], "samples": n, "workers", "scheduler"}``.
    """
    from .models import load_model

    if n < 1 or chunk_size < 1:
        raise ValueError(f"n and chunk_size must be positive, got n={n}, chunk_size={chunk_size}")
    check_workers(workers, scheduler)
    checkpoint = Path(checkpoint).resolve()
    load_model(checkpoint)  # a missing or foreign checkpoint fails here, not in every task
    out_dir = Path(os.path.abspath(out_dir))
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output folder {str(out_dir)!r} is a file")
    sizes = [min(chunk_size, n - lo) for lo in range(0, n, chunk_size)]
    paths = [out_dir / CHUNK_NAME.format(k) for k in range(len(sizes))]
    existing = sorted(str(p) for p in out_dir.glob("samples_*.npz"))
    if existing and not overwrite:
        raise FileExistsError(f"{len(existing)} samples file(s) exist in {str(out_dir)!r} (e.g. {existing[0]!r}); "
                              "pass --overwrite to replace them")  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [
        (str(checkpoint), k, m, str(p), seed, device, batch_size, threads) for k, (m, p) in enumerate(zip(sizes, paths))
    ]
    results, where = run_tasks(_draw_chunk, jobs, workers=workers, scheduler=scheduler, progress=progress,
                               desc="sample", unit="chunk", name=lambda job: Path(job[3]).name,
                               what="drawing samples file")  # fmt: skip
    return {"files": [r["file"] for r in results], "samples": n, **where}


# -------------------------------------------------------------------------------------------------- reweight
def expand_sample_files(specs: list[str | os.PathLike]) -> list[Path]:
    """Samples files from file names, folders (their ``*.npz``) and glob patterns, in the order given (globs and
    folders sorted); an error names a spec that matches nothing and a file given twice."""
    files: list[Path] = []
    for spec in specs:
        spec = os.fspath(spec)
        if os.path.isdir(spec):
            found = sorted(glob.glob(os.path.join(spec, "*.npz")))
        elif glob.has_magic(spec):
            found = sorted(glob.glob(spec))
        else:
            found = [spec] if os.path.exists(spec) else []
        if not found:
            raise FileNotFoundError(f"no samples file matches {spec!r} (write them with `bgflow-sci sample`)")
        files += [Path(os.path.abspath(f)) for f in found]
    seen = set()
    for f in files:
        if f in seen:
            raise ValueError(f"samples file {str(f)!r} is given twice")
        seen.add(f)
    return files


def _hooks(path: str):
    stored = read_samples(path)
    module = load_system(resolve_system_reference(stored["system"], Path(path).parent))
    return stored, module


def _scan(path: str) -> dict[str, Any]:
    """Pass 1 of one file: its system, config, size and the range of each collective variable."""
    stored, module = _hooks(path)
    cvs = module.collective_variables(stored["x"]) if hasattr(module, "collective_variables") else {}
    return {
        "system": str(Path(module.__file__).resolve()),
        "config": stored["config"],
        "n": len(stored["log_w"]),
        "ranges": {k: (float(np.min(v)), float(np.max(v))) for k, v in cvs.items()},
    }


def _reduce(path: str, start: int, edges: dict[str, torch.Tensor], n_bootstrap: int, seed: int):
    """Pass 2 of one file: its weighted sums (samples numbered from ``start``)."""
    stored, module = _hooks(path)
    cvs = module.collective_variables(stored["x"]) if edges else {}
    regions = module.free_energy_regions(cvs) if cvs and hasattr(module, "free_energy_regions") else {}
    sums = chunk_sums(stored["log_w"], start, regions=regions, cvs=cvs, edges=edges, n_bootstrap=n_bootstrap,
                      seed=seed)  # fmt: skip
    # the flow-only ΔF needs the unweighted region counts: a second reduction with zero log weights on valid samples
    valid = torch.where(torch.isfinite(stored["log_w"]), 0.0, -torch.inf).to(torch.float64)
    flow = chunk_sums(valid, start, regions=regions, n_bootstrap=0) if regions else None
    return sums, flow


def _common_bins(scans: list[dict[str, Any]], n_bootstrap: int | None) -> tuple[dict[str, torch.Tensor], int]:
    """Bin edges over the range of every file's collective variables, and the number of bootstrap replicates."""
    systems = {s["system"] for s in scans}
    if len(systems) > 1:
        raise ValueError(f"the samples files belong to different systems {sorted(systems)}: reweight them apart")
    ev = merge_config(EVALUATE_DEFAULTS, scans[0]["config"].get("evaluate", {}))
    edges = {}
    for k in scans[0]["ranges"]:
        lo, hi = min(s["ranges"][k][0] for s in scans), max(s["ranges"][k][1] for s in scans)
        edges[k] = profile_edges(lo, hi, ev["bins"])
    return edges, (n_bootstrap if n_bootstrap is not None else ev["n_bootstrap"])


def reweight_files(
    specs: list[str | os.PathLike],
    out: str | os.PathLike,
    n_bootstrap: int | None = None,
    *,
    workers: int = 0,
    scheduler: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """:func:`~bgflow_sci.workflows.reweight.reweight` over many samples files of one system, file by file.

    ``specs``: files, folders or globs (:func:`expand_sample_files`). ``workers``/``scheduler`` as for
    :func:`sample_chunks` (``0``: in this process). Writes ``results.json`` (plus ``files``, ``workers`` and
    ``scheduler``) and the profile plots into ``out``; returns the results.
    """
    files = expand_sample_files(specs)
    with task_client(workers, scheduler, "reweighting many samples files") as client:
        opts = {"client": client, "progress": progress, "unit": "file", "name": lambda job: Path(job[0]).name,
                "what": "reweighting samples file"}  # fmt: skip
        scans, _ = run_tasks(_scan, [(str(f),) for f in files], desc="scan", **opts)
        edges, n_boot = _common_bins(scans, n_bootstrap)
        starts = np.concatenate([[0], np.cumsum([s["n"] for s in scans])[:-1]]).astype(int)
        jobs = [(str(f), int(a), edges, n_boot, seed) for f, a in zip(files, starts)]
        parts, where = run_tasks(_reduce, jobs, desc="reweight", **opts)
    systems = {s["system"] for s in scans}
    est = estimates(merge_sums(p[0] for p in parts))
    module = load_system(next(iter(systems)))
    reference = module.reference_free_energies() if hasattr(module, "reference_free_energies") else None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "samples": est["n"],
        "invalid": est["invalid"],
        "ess": est["ess"],
        "log_z": est["log_z"]._asdict(),
    }
    if est["delta_f"]:
        flow = estimates(merge_sums(p[1] for p in parts))["delta_f"]
        results["delta_f"] = {k: delta_f_entry(v, flow[k].value, reference, k) for k, v in est["delta_f"].items()}
    for k, prof in est["profiles"].items():
        results.setdefault("profiles", {})[k] = profile_entry(prof["reweighted"], prof["flow"], reference, k, out)
    results.update(files=[str(f) for f in files], bootstrap="poisson", **where)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    return results
