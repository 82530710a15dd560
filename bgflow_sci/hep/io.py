"""ROOT TTree input/output with uproot and awkward-array.

* :func:`read_tree` reads chosen branches (with an optional selection ``cut``, ``aliases`` and an event-weight branch;
  negative generator weights are kept as they are) into awkward, numpy or torch arrays;
* :func:`iterate_tree` does the same chunk by chunk (``uproot.iterate``) with a progress bar, for files larger than
  memory;
* :func:`flatten_objects` / :func:`unflatten_objects` go from jagged object collections (``var * float`` per event,
  e.g. all muons) to one row per object and back;
* :func:`write_corrected` writes a *new* ROOT file holding the original branches plus ``<branch>_corr`` (and an
  optional weight branch), jagged structure preserved.  The input is never modified or overwritten.

Every error names the file, the tree and the branch concerned.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import torch
import uproot
from tqdm.auto import tqdm

__all__ = ["flatten_objects", "iterate_tree", "read_tree", "unflatten_objects", "write_corrected"]

_LIBRARIES = ("ak", "np", "torch")
_GROUP = "__bgflow_group__"  # internal record name of branches sharing a counter (never written as a name)


# ----------------------------------------------------------------------------------------------- validation
def _open_tree(path: str | os.PathLike, tree: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ROOT file {str(path)!r} does not exist (looking for tree {tree!r})")
    try:
        file = uproot.open(path)
    except Exception as err:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"cannot open {str(path)!r} as a ROOT file: {err}") from err
    classes = {k.split(";")[0]: c for k, c in file.classnames().items()}
    trees = [k for k, c in classes.items() if c.startswith(("TTree", "TNtuple"))]
    if tree not in trees:
        file.close()
        if tree in classes:
            raise ValueError(f"{tree!r} in file {str(path)!r} is a {classes[tree]}, not a TTree")
        raise ValueError(f"tree {tree!r} not found in file {str(path)!r}; trees in the file: {sorted(set(trees))}")
    return file[tree]


def _check_branches(
    ttree: Any, path: str | os.PathLike, tree: str, names: Sequence[str], aliases: Mapping[str, str] | None
) -> None:
    if isinstance(names, str):
        raise ValueError(f"branches must be a list of names, got the string {names!r} (file {str(path)!r})")
    if len(names) == 0:
        raise ValueError(f"no branches requested from tree {tree!r} in file {str(path)!r}")
    dupes = sorted({n for n in names if list(names).count(n) > 1})
    if dupes:
        raise ValueError(f"branches {dupes} requested more than once from tree {tree!r} in file {str(path)!r}")
    known = set(ttree.keys()) | set(aliases or {})
    for name in names:
        if name not in known:
            close = [k for k in ttree.keys() if name.lower() in k.lower() or k.lower() in name.lower()][:5]
            hint = f"; similar: {close}" if close else ""
            raise ValueError(f"branch {name!r} not found in tree {tree!r} of file {str(path)!r}{hint}")


def _is_jagged(array: ak.Array) -> bool:
    return array.ndim > 1


def _check_values(arrays: ak.Array, path: str | os.PathLike, tree: str, where: str) -> None:
    if len(arrays) == 0:
        raise ValueError(f"empty selection: no entries of tree {tree!r} in file {str(path)!r} pass {where}")
    for name in arrays.fields:
        col = arrays[name]
        flat = ak.flatten(col, axis=None) if _is_jagged(col) else col
        try:
            values = ak.to_numpy(flat)
        except Exception:  # noqa: BLE001 - strings and other non-numeric branches are not checked
            continue
        if values.dtype.kind == "f" and values.size > 0 and np.isnan(values).all():
            raise ValueError(f"branch {name!r} of tree {tree!r} in file {str(path)!r} is all NaN ({where})")


def _convert(arrays: ak.Array, library: str, path: str | os.PathLike, tree: str) -> Any:
    if library == "ak":
        return arrays
    out = {}
    for name in arrays.fields:
        col = arrays[name]
        if _is_jagged(col):
            raise ValueError(
                f"branch {name!r} of tree {tree!r} in file {str(path)!r} is jagged ({col.type}); read it with "
                "library='ak' and use flatten_objects"
            )
        values = ak.to_numpy(col)
        out[name] = torch.from_numpy(np.ascontiguousarray(values)) if library == "torch" else values
    return out


def _weights(arrays: ak.Array, weight_branch: str | None, library: str, path, tree: str) -> Any:
    n = len(arrays)
    if weight_branch is None:
        w = np.ones(n)
    else:
        col = arrays[weight_branch]
        if _is_jagged(col):
            raise ValueError(f"weight branch {weight_branch!r} of tree {tree!r} in file {str(path)!r} is jagged")
        w = ak.to_numpy(col).astype(np.float64)
        if not np.isfinite(w).all():
            bad = int((~np.isfinite(w)).sum())
            raise ValueError(
                f"weight branch {weight_branch!r} of tree {tree!r} in file {str(path)!r} has {bad} non-finite values"
            )
    if library == "torch":
        return torch.from_numpy(w)
    return ak.Array(w) if library == "ak" else w


def _expressions(branches: Sequence[str], weight_branch: str | None) -> list[str]:
    names = list(branches)
    if weight_branch is not None and weight_branch not in names:
        names.append(weight_branch)
    return names


def read_tree(
    path: str | os.PathLike,
    tree: str,
    branches: Sequence[str],
    cut: str | None = None,
    aliases: Mapping[str, str] | None = None,
    weight_branch: str | None = None,
    library: str = "ak",
    entry_start: int | None = None,
    entry_stop: int | None = None,
) -> tuple[Any, Any]:
    """Read ``branches`` of ``tree`` in ``path``; returns ``(arrays, weights)``.

    Args:
        path, tree: the ROOT file and the TTree name in it.
        branches: branch names (or keys of ``aliases``) to read.
        cut: uproot selection expression on branches/aliases (e.g. ``"(pt_1 > 30) & (abs(eta_1) < 2.5)"``).
        aliases: ``{name: expression}``, e.g. ``{"pt": "sqrt(px**2 + py**2)"}``.
        weight_branch: per-event weight branch (negative weights kept); weights are ones if ``None``.
        library: ``"ak"`` (a record array, jagged branches allowed), ``"np"`` or ``"torch"`` (a dict of flat
            arrays; jagged branches are refused).

    Returns:
        ``arrays`` (``ak.Array`` record or ``{branch: array}``) and ``weights`` of shape ``(n_events,)`` (float64)
        for the selected events.

    Raises:
        FileNotFoundError: missing file.
        ValueError: missing tree or branch, empty selection, all-NaN branch, non-finite weights, jagged branches
            with a flat library -- each message names the file, tree and branch.
    """
    if library not in _LIBRARIES:
        raise ValueError(f"library must be one of {_LIBRARIES}, got {library!r}")
    ttree = _open_tree(path, tree)
    names = _expressions(branches, weight_branch)
    _check_branches(ttree, path, tree, names, aliases)
    try:
        arrays = ttree.arrays(
            names, cut=cut, aliases=dict(aliases or {}), library="ak", entry_start=entry_start, entry_stop=entry_stop
        )
    except Exception as err:  # noqa: BLE001 - uproot's message lacks the file/tree
        raise ValueError(f"reading tree {tree!r} of file {str(path)!r} (cut={cut!r}) failed: {err}") from err
    where = f"cut {cut!r}" if cut else "no cut"
    _check_values(arrays, path, tree, where)
    weights = _weights(arrays, weight_branch, library, path, tree)
    data = arrays[list(branches)]
    return _convert(data, library, path, tree), weights


def iterate_tree(
    path: str | os.PathLike,
    tree: str,
    branches: Sequence[str],
    step_size: int | str = "100 MB",
    cut: str | None = None,
    aliases: Mapping[str, str] | None = None,
    weight_branch: str | None = None,
    library: str = "ak",
    progress: bool = True,
) -> Iterator[tuple[Any, Any]]:
    """Iterate over ``tree`` in chunks of ``step_size`` entries (int) or bytes (``"100 MB"``), with a tqdm bar.

    Yields ``(arrays, weights)`` per chunk as :func:`read_tree` returns them.  Chunks whose events all fail ``cut``
    are skipped (an error is raised only if no chunk has any selected event).
    """
    if library not in _LIBRARIES:
        raise ValueError(f"library must be one of {_LIBRARIES}, got {library!r}")
    ttree = _open_tree(path, tree)
    names = _expressions(branches, weight_branch)
    _check_branches(ttree, path, tree, names, aliases)
    n_selected = 0
    bar = tqdm(total=ttree.num_entries, disable=not progress, unit="evt", desc=f"{Path(path).name}:{tree}")
    try:
        chunks = ttree.iterate(names, step_size=step_size, cut=cut, aliases=dict(aliases or {}), report=True)
        for arrays, report in chunks:
            bar.update(report.tree_entry_stop - report.tree_entry_start)
            if len(arrays) == 0:
                continue
            n_selected += len(arrays)
            _check_values(arrays, path, tree, f"entries {report.tree_entry_start}-{report.tree_entry_stop}")
            weights = _weights(arrays, weight_branch, library, path, tree)
            yield _convert(arrays[list(branches)], library, path, tree), weights
    finally:
        bar.close()
    if n_selected == 0:
        raise ValueError(f"empty selection: no entries of tree {tree!r} in file {str(path)!r} pass cut {cut!r}")


# ---------------------------------------------------------------------------------------------- jagged <-> flat
def flatten_objects(array: ak.Array | Mapping[str, Any], fields: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Jagged per-event collections -> one row per object.

    Args:
        array: events (``ak.Array`` record or mapping of arrays) whose ``fields`` are jagged ``var * number``
            with the same multiplicity in every event (e.g. ``Muon_Px, Muon_Py``).
        fields: the columns of the table, in order.

    Returns:
        ``table`` of shape ``(n_objects, len(fields))`` (float64) and ``counts`` of shape ``(n_events,)`` (int64),
        objects ordered event by event.  :func:`unflatten_objects` inverts it.
    """
    if isinstance(fields, str) or len(fields) == 0:
        raise ValueError(f"fields must be a non-empty list of names, got {fields!r}")
    available = array.fields if isinstance(array, ak.Array) else list(array)
    missing = [f for f in fields if f not in available]
    if missing:
        raise ValueError(f"fields {missing} not in the array; available: {sorted(available)}")
    counts = None
    columns = []
    for name in fields:
        col = ak.Array(array[name])
        if col.ndim != 2:
            raise ValueError(f"field {name!r} must be jagged with type n * var * number, got {col.type}")
        c = ak.to_numpy(ak.num(col, axis=1)).astype(np.int64)
        if counts is None:
            counts = c
        elif not np.array_equal(c, counts):
            bad = int(np.flatnonzero(c != counts)[0])
            raise ValueError(
                f"field {name!r} has a different multiplicity than {fields[0]!r} (first at event {bad}: "
                f"{c[bad]} vs {counts[bad]}); only collections of the same objects can be flattened together"
            )
        columns.append(ak.to_numpy(ak.flatten(col, axis=1)).astype(np.float64))
    return np.stack(columns, axis=1), counts


def unflatten_objects(
    table: np.ndarray | torch.Tensor, counts: np.ndarray | Sequence[int], fields: Sequence[str] | None = None
) -> ak.Array:
    """Inverse of :func:`flatten_objects`: ``(n_objects, k)`` rows -> jagged events.

    Returns a record array with ``fields`` (one ``var * float64`` field per column) if ``fields`` is given, otherwise a
    jagged array of type ``n_events * var * k`` (or ``n_events * var * float64`` for a 1D ``table``).
    """
    if isinstance(table, torch.Tensor):
        table = table.detach().cpu().numpy()
    table = np.asarray(table)
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1 or (counts < 0).any():
        raise ValueError(f"counts must be a 1D array of non-negative integers, got shape {counts.shape}")
    if table.shape[0] != counts.sum():
        raise ValueError(f"table has {table.shape[0]} rows but counts sum to {int(counts.sum())} objects")
    if fields is None:
        return ak.unflatten(table, counts)
    if table.ndim != 2 or table.shape[1] != len(fields):
        raise ValueError(
            f"table must have shape (n_objects, {len(fields)}) for fields {list(fields)}, got {table.shape}"
        )
    return ak.zip({f: ak.unflatten(table[:, i], counts) for i, f in enumerate(fields)}, depth_limit=1)


# ------------------------------------------------------------------------------------------------ writing
def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _as_awkward(values: Any) -> ak.Array:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return ak.Array(values) if not isinstance(values, ak.Array) else values


def write_corrected(
    in_path: str | os.PathLike,
    out_path: str | os.PathLike,
    tree: str,
    corrected: Mapping[str, Any],
    weight: Any | None = None,
    *,
    weight_name: str = "weight_corr",
    branches: Sequence[str] | None = None,
    suffix: str = "_corr",
    overwrite: bool = False,
    step_size: int = 100_000,
    progress: bool = False,
) -> Path:
    """Write a new ROOT file with tree ``tree``: the original branches plus ``<branch><suffix>`` for each corrected one.

    Args:
        in_path, tree: the input file and tree (opened read-only, never modified).
        out_path: the new file; refused if it is the input (symlinks and hard links resolved), and if it exists
            unless ``overwrite``.
        corrected: ``{branch: values}`` for every entry of the tree (no cut), with the branch's structure: ``(n,)``
            for flat branches, a jagged array with the same counts per event for jagged ones (numpy, torch or
            awkward).
        weight: optional per-event weights ``(n,)`` written as ``weight_name``.
        branches: original branches to copy (default: all).  Corrected branches are always copied.
        step_size: entries per chunk when copying (the input is streamed; only ``corrected`` is held in memory).

    Jagged branches sharing a counter in the input (e.g. ``Muon_Px``, ``Muon_Px_corr`` counted by ``NMuon``) are
    written with that same counter; other jagged branches get a counter named ``n<branch>``.

    Returns:
        the output path.
    """
    in_path, out_path = Path(in_path), Path(out_path)
    ttree = _open_tree(in_path, tree)
    if _same_file(in_path, out_path):
        raise ValueError(f"refusing to write {str(out_path)!r}: it is the input file {str(in_path.resolve())!r}")
    if out_path.exists() and not overwrite:
        raise FileExistsError(f"output file {str(out_path)!r} exists; pass overwrite=True to replace it")
    if not corrected and weight is None:
        raise ValueError(f"nothing to write: no corrected branches and no weight for tree {tree!r} of {str(in_path)!r}")
    keys = list(ttree.keys())
    copy = list(keys) if branches is None else list(branches)
    _check_branches(ttree, in_path, tree, copy, None)
    n = ttree.num_entries
    corr: dict[str, ak.Array] = {}
    for name, values in corrected.items():
        if name not in keys:
            raise ValueError(
                f"corrected branch {name!r} is not a branch of tree {tree!r} in file {str(in_path)!r} (variables "
                f"must match the input); branches: {keys}"
            )
        values = _as_awkward(values)
        if len(values) != n:
            raise ValueError(
                f"corrected branch {name!r} has {len(values)} entries but tree {tree!r} of {str(in_path)!r} has {n}"
            )
        if name + suffix in keys:
            raise ValueError(f"branch {name + suffix!r} already exists in tree {tree!r} of {str(in_path)!r}")
        corr[name] = values
        if name not in copy:
            copy.append(name)
    if weight is not None:
        weight = np.asarray(_as_awkward(weight), dtype=np.float64)
        if weight.shape != (n,):
            raise ValueError(f"weight must have shape ({n},) for tree {tree!r} of {str(in_path)!r}, got {weight.shape}")
        if weight_name in keys:
            raise ValueError(f"weight branch {weight_name!r} already exists in tree {tree!r} of {str(in_path)!r}")

    # group jagged branches by their counter so that they share it in the output
    groups: dict[str, list[str]] = {}
    flat: list[str] = []
    counter_of: dict[str, str] = {}
    for name in copy:
        branch = ttree[name]
        count = getattr(branch, "count_branch", None)
        if count is not None:
            counter = count.name
            groups.setdefault(counter, []).append(name)
            counter_of[name] = counter
        elif name not in flat:
            flat.append(name)
    for name in list(flat):  # the input's own counters are rewritten as the groups' counters
        if name in groups:
            flat.remove(name)
    taken = set(copy) | {c + suffix for c in corr} | {weight_name}
    counter_names: dict[str, str] = {}
    for counter in groups:
        cname = counter
        while cname in taken and cname not in groups:
            cname = "n" + cname
        counter_names[counter] = cname

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    try:
        with uproot.recreate(tmp) as fout:
            created = False
            start = 0
            bar = tqdm(total=n, disable=not progress, unit="evt", desc=f"write {out_path.name}")
            for chunk in ttree.iterate(copy, step_size=step_size, library="ak"):
                stop = start + len(chunk)
                data: dict[str, Any] = {}
                for name in flat:
                    data[name] = chunk[name]
                    if name in corr:
                        data[name + suffix] = _flat_corr(corr[name][start:stop], chunk[name], name, tree, in_path)
                for counter, members in groups.items():
                    fields: dict[str, Any] = {}
                    for name in members:
                        fields[name] = chunk[name]
                        if name in corr:
                            fields[name + suffix] = _jagged_corr(
                                corr[name][start:stop], chunk[name], name, tree, in_path
                            )
                    data[_GROUP + counter] = ak.zip(fields, depth_limit=2)
                if weight is not None:
                    data[weight_name] = weight[start:stop]
                if not created:
                    types = {
                        k: (v.type if isinstance(v, ak.Array) and k.startswith(_GROUP) else _dtype(v))
                        for k, v in data.items()
                    }
                    fout.mktree(
                        tree,
                        types,
                        counter_name=lambda outer: counter_names[outer[len(_GROUP) :]],
                        field_name=lambda outer, inner: inner,
                    )
                    created = True
                fout[tree].extend(data)
                bar.update(len(chunk))
                start = stop
            bar.close()
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out_path


def _dtype(values: Any) -> Any:
    if isinstance(values, ak.Array):
        try:
            dtype = ak.to_numpy(values).dtype
        except Exception:  # noqa: BLE001 - not a flat numeric array: awkward type
            return values.type
        return values.type if dtype.kind in "USO" else dtype  # strings are written with their awkward type
    return np.asarray(values).dtype


def _flat_corr(values: ak.Array, original: ak.Array, name: str, tree: str, path: Path) -> np.ndarray:
    if values.ndim != 1:
        raise ValueError(
            f"corrected branch {name!r} of tree {tree!r} in {str(path)!r} must be flat like the input, "
            f"got {values.type}"
        )
    return ak.to_numpy(values)


def _jagged_corr(values: ak.Array, original: ak.Array, name: str, tree: str, path: Path) -> ak.Array:
    if values.ndim != 2 or not np.array_equal(
        ak.to_numpy(ak.num(values, axis=1)), ak.to_numpy(ak.num(original, axis=1))
    ):
        raise ValueError(
            f"corrected branch {name!r} of tree {tree!r} in {str(path)!r} must have the same objects per event as "
            "the input (jagged structure preserved; use unflatten_objects(table, counts))"
        )
    return values
