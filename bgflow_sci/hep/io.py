"""ROOT TTree and RNTuple input/output with uproot and awkward-array.

Both storage formats behave the same everywhere below: an RNTuple's top-level fields play the role of a TTree's
branches (nested fields are reachable as ``"parent.child"``), and :func:`tree_format` / :func:`num_entries` tell
them apart and count their entries.

* :func:`read_tree` reads chosen branches (with an optional selection ``cut``, ``aliases`` and an event-weight branch;
  negative generator weights are kept as they are) into awkward, numpy or torch arrays;
* :func:`iterate_tree` does the same chunk by chunk (``uproot.iterate``) with a progress bar, for files larger than
  memory;
* :func:`flatten_objects` / :func:`unflatten_objects` go from jagged object collections (``var * float`` per event,
  e.g. all muons) to one row per object and back;
* :func:`write_corrected` writes a *new* ROOT file holding the original branches plus ``<branch>_corr`` (an optional
  weight branch and extra per-event branches), jagged structure preserved, as a TTree or an RNTuple.  The input is
  never modified or overwritten.

uproot (5.7) reads RNTuples but ignores ``cut`` and ``aliases`` for them (and has no expressions), so for RNTuples the
selection and the aliases are evaluated here, with the same Python syntax and math functions as uproot uses for
TTrees, on the fields they need; chunking (``step_size`` in entries or bytes) and entry ranges are uproot's own.

Every error names the file, the tree and the branch concerned.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import torch
import uproot
from tqdm.auto import tqdm

__all__ = [
    "flatten_objects",
    "iterate_tree",
    "num_entries",
    "read_tree",
    "tree_format",
    "unflatten_objects",
    "write_corrected",
]

_LIBRARIES = ("ak", "np", "torch")
_GROUP = "__bgflow_group__"  # internal record name of branches sharing a counter (never written as a name)
_FORMATS = ("ttree", "rntuple")
_RNTUPLE_CLASS = "ROOT::RNTuple"
# the names an expression may call, the same table uproot evaluates TTree cuts and aliases with
_FUNCTIONS: dict[str, Any] = dict(uproot.language.python.PythonLanguage.default_functions)
_GETTER = "get"  # get("name") reaches a field whose name is not a Python identifier, as in uproot


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
    trees = [k for k, c in classes.items() if c.startswith(("TTree", "TNtuple")) or c == _RNTUPLE_CLASS]
    if tree not in trees:
        file.close()
        if tree in classes:
            raise ValueError(f"{tree!r} in file {str(path)!r} is a {classes[tree]}, not a TTree or an RNTuple")
        raise ValueError(f"tree {tree!r} not found in file {str(path)!r}; trees in the file: {sorted(set(trees))}")
    return file[tree]


def _is_rntuple(obj: Any) -> bool:
    return isinstance(obj, uproot.behaviors.RNTuple.RNTuple)


def _field_names(obj: Any) -> list[str]:
    """What a tree's entries are made of: the TTree's branches, or the RNTuple's top-level fields."""
    return list(obj.keys(recursive=False)) if _is_rntuple(obj) else list(obj.keys())


def tree_format(path: str | os.PathLike, tree: str) -> str:
    """``"rntuple"`` if ``tree`` in ``path`` is a ``ROOT::RNTuple``, ``"ttree"`` if it is a TTree (or TNtuple)."""
    obj = _open_tree(path, tree)
    fmt = "rntuple" if _is_rntuple(obj) else "ttree"
    obj.file.close()
    return fmt


def num_entries(path: str | os.PathLike, tree: str) -> int:
    """Number of entries (events) of the TTree or RNTuple ``tree`` in ``path``."""
    obj = _open_tree(path, tree)
    n = int(obj.num_entries)
    obj.file.close()
    return n


def _check_branches(
    keys: Sequence[str], path: str | os.PathLike, tree: str, names: Sequence[str], aliases: Mapping[str, str] | None
) -> None:
    if isinstance(names, str):
        raise ValueError(f"branches must be a list of names, got the string {names!r} (file {str(path)!r})")
    if len(names) == 0:
        raise ValueError(f"no branches requested from tree {tree!r} in file {str(path)!r}")
    dupes = sorted({n for n in names if list(names).count(n) > 1})
    if dupes:
        raise ValueError(f"branches {dupes} requested more than once from tree {tree!r} in file {str(path)!r}")
    known = set(keys) | set(aliases or {})
    for name in names:
        if name not in known:
            close = [k for k in keys if name.lower() in k.lower() or k.lower() in name.lower()][:5]
            hint = f"; similar: {close}" if close else ""
            raise ValueError(f"branch {name!r} not found in tree {tree!r} of file {str(path)!r}{hint}")


# ------------------------------------------------------------------------------- RNTuple cuts and aliases
def _parse(expression: str, path: str | os.PathLike, tree: str) -> ast.Expression:
    try:
        return ast.parse(expression, mode="eval")
    except SyntaxError as err:
        raise ValueError(
            f"cannot parse the expression {expression!r} for tree {tree!r} of file {str(path)!r}: {err.msg}"
        ) from err


def _symbols(node: ast.AST) -> set[str]:
    """Names an expression refers to, apart from the math functions (``get("x")`` counts as ``x``)."""
    found = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and sub.id not in _FUNCTIONS and sub.id != _GETTER:
            found.add(sub.id)
        elif isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id == _GETTER:
            if len(sub.args) == 1 and isinstance(sub.args[0], ast.Constant) and isinstance(sub.args[0].value, str):
                found.add(sub.args[0].value)
    return found


class _Fields:
    """The values of fields, nested fields (``"a.b"``) and aliases of one RNTuple range, aliases evaluated lazily.

    A name that is a field wins over an alias of the same name, as with uproot's TTrees.
    """

    def __init__(
        self, fields: Sequence[str], aliases: Mapping[str, str] | None, path: str | os.PathLike, tree: str
    ) -> None:
        self.fields = set(fields)
        self.aliases = dict(aliases or {})
        self.path, self.tree = path, tree
        self.raw: ak.Array | None = None
        self._cache: dict[str, Any] = {}
        self._active: list[str] = []

    def _is_field(self, name: str) -> bool:
        return name.split(".")[0] in self.fields

    def needed(self, names: Sequence[str], cut: str | None) -> list[str]:
        """The top-level fields to read for ``names`` and ``cut``; raises for names that are neither."""
        out: list[str] = []

        def visit(name: str, stack: tuple[str, ...]) -> None:
            if self._is_field(name):
                top = name.split(".")[0]
                if top not in out:
                    out.append(top)
            elif name in self.aliases:
                if name in stack:
                    raise ValueError(f"alias {name!r} refers to itself (through {' -> '.join((*stack, name))})")
                for sym in sorted(_symbols(_parse(self.aliases[name], self.path, self.tree))):
                    visit(sym, (*stack, name))
            else:
                raise ValueError(
                    f"branch {name!r} not found in tree {self.tree!r} of file {str(self.path)!r}"
                    + (f" (used in {' -> '.join(stack)})" if stack else "")
                )

        for name in names:
            visit(name, ())
        if cut is not None:
            for sym in sorted(_symbols(_parse(cut, self.path, self.tree))):
                visit(sym, ("cut",))
        return out

    def bind(self, raw: ak.Array) -> None:
        self.raw = raw
        self._cache = {}

    def value(self, name: str) -> Any:
        if self._is_field(name):
            top, *rest = name.split(".")
            values = self.raw[top]
            for part in rest:
                values = values[part]
            return values
        if name not in self.aliases:
            raise KeyError(name)
        if name not in self._cache:
            if name in self._active:
                raise ValueError(f"alias {name!r} refers to itself")
            self._active.append(name)
            try:
                self._cache[name] = self.evaluate(self.aliases[name])
            finally:
                self._active.pop()
        return self._cache[name]

    def evaluate(self, expression: str) -> Any:
        fields = self

        class Scope(dict):
            def __missing__(self, key: str) -> Any:  # names are looked up here first, then among the functions
                if fields._is_field(key) or key in fields.aliases:
                    return fields.value(key)
                raise KeyError(key)

        code = compile(_parse(expression, self.path, self.tree), "<expression>", "eval")
        result = eval(code, {"__builtins__": {}, **_FUNCTIONS, _GETTER: self.value}, Scope())  # noqa: S307
        n = len(self.raw)
        if not isinstance(result, (ak.Array, np.ndarray)) and np.ndim(result) == 0:  # a constant, for every entry
            result = np.full(n, result)
        return result

    def select(self, names: Sequence[str], cut: str | None) -> ak.Array:
        columns = {name: self.value(name) for name in names}
        if cut is not None:
            mask = self.evaluate(cut) != 0
            columns = {name: col[mask] for name, col in columns.items()}
        return ak.zip(columns, depth_limit=1)


def _rntuple_filter(fields: Sequence[str]) -> Any:
    wanted = set(fields)
    return lambda field: field.path in wanted


def _read(
    obj: Any,
    names: Sequence[str],
    cut: str | None,
    aliases: Mapping[str, str] | None,
    entry_start: int | None,
    entry_stop: int | None,
    path: str | os.PathLike,
    tree: str,
) -> ak.Array:
    if not _is_rntuple(obj):
        return obj.arrays(
            names, cut=cut, aliases=dict(aliases or {}), library="ak", entry_start=entry_start, entry_stop=entry_stop
        )
    fields = _Fields(_field_names(obj), aliases, path, tree)
    needed = fields.needed(names, cut)
    fields.bind(
        obj.arrays(filter_field=_rntuple_filter(needed), entry_start=entry_start, entry_stop=entry_stop, library="ak")
    )
    return fields.select(names, cut)


def _chunks(
    obj: Any,
    names: Sequence[str],
    step_size: int | str,
    cut: str | None,
    aliases: Mapping[str, str] | None,
    path: str | os.PathLike,
    tree: str,
) -> Iterator[tuple[ak.Array, int, int]]:
    """``(arrays, entry_start, entry_stop)`` per chunk; reading failures name the file, tree and cut."""
    failed = f"reading tree {tree!r} of file {str(path)!r} (cut={cut!r}) failed"
    fields = None
    try:
        if _is_rntuple(obj):
            fields = _Fields(_field_names(obj), aliases, path, tree)
            needed = fields.needed(names, cut)
            source = obj.iterate(filter_field=_rntuple_filter(needed), step_size=step_size, library="ak", report=True)
        else:
            source = obj.iterate(
                names, step_size=step_size, cut=cut, aliases=dict(aliases or {}), library="ak", report=True
            )
        source = iter(source)
    except Exception as err:  # noqa: BLE001 - uproot's message lacks the file/tree
        raise ValueError(f"{failed}: {err}") from err
    while True:
        try:
            raw, report = next(source)
            if fields is None:
                arrays = raw
            else:
                fields.bind(raw)
                arrays = fields.select(names, cut)
        except StopIteration:
            return
        except Exception as err:  # noqa: BLE001 - uproot's message lacks the file/tree
            raise ValueError(f"{failed}: {err}") from err
        yield arrays, int(report.tree_entry_start), int(report.tree_entry_stop)


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
        path, tree: the ROOT file and the name of the TTree or RNTuple in it.
        branches: branch names (RNTuple: field names, nested ones as ``"parent.child"``; or keys of ``aliases``).
        cut: uproot selection expression on branches/aliases (e.g. ``"(pt_1 > 30) & (abs(eta_1) < 2.5)"``);
            evaluated here for RNTuples, which uproot cannot cut.
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
    obj = _open_tree(path, tree)
    names = _expressions(branches, weight_branch)
    _check_branches(obj.keys(), path, tree, names, aliases)
    try:
        arrays = _read(obj, names, cut, aliases, entry_start, entry_stop, path, tree)
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

    Yields ``(arrays, weights)`` per chunk as :func:`read_tree` returns them, for TTrees and RNTuples alike.  Chunks
    whose events all fail ``cut`` are skipped (an error is raised only if no chunk has any selected event).  A chunk
    that cannot be read or selected raises a ValueError naming the file, tree and cut.
    """
    if library not in _LIBRARIES:
        raise ValueError(f"library must be one of {_LIBRARIES}, got {library!r}")
    obj = _open_tree(path, tree)
    names = _expressions(branches, weight_branch)
    _check_branches(obj.keys(), path, tree, names, aliases)
    n_selected = 0
    bar = tqdm(total=obj.num_entries, disable=not progress, unit="evt", desc=f"{Path(path).name}:{tree}")
    try:
        for arrays, start, stop in _chunks(obj, names, step_size, cut, aliases, path, tree):
            bar.update(stop - start)
            if len(arrays) == 0:
                continue
            n_selected += len(arrays)
            _check_values(arrays, path, tree, f"entries {start}-{stop}")
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
    format: str | None = None,  # noqa: A002 - the natural name of the option
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a new ROOT file with tree ``tree``: the original branches plus ``<branch><suffix>`` for each corrected one.

    Args:
        in_path, tree: the input file and tree (a TTree or an RNTuple; opened read-only, never modified).
        out_path: the new file; refused if it is the input (symlinks and hard links resolved), and if it exists
            unless ``overwrite``.
        corrected: ``{branch: values}`` for every entry of the tree (no cut), with the branch's structure: ``(n,)``
            for flat branches, a jagged array with the same counts per event for jagged ones (numpy, torch or
            awkward).
        weight: optional per-event weights ``(n,)`` written as ``weight_name``.
        branches: original branches to copy (default: all; for an RNTuple, its top-level fields).  Corrected
            branches are always copied.
        step_size: entries per chunk when copying (the input is streamed; only ``corrected`` and ``extra`` are held
            in memory).  Each chunk becomes one TTree basket / RNTuple cluster.
        format: ``None`` writes the input's format, ``"ttree"`` or ``"rntuple"`` force one.
        extra: ``{name: values}`` of new flat per-event branches ``(n,)`` (e.g. a derived observable or an
            uncertainty), written under exactly these names.

    In a TTree output, jagged branches sharing a counter in the input (e.g. ``Muon_Px``, ``Muon_Px_corr`` counted by
    ``NMuon``) are written with that same counter; other jagged branches (e.g. RNTuple lists) get a counter named
    ``n<branch>``.  An RNTuple output stores lists natively and copies a TTree's counter branches as plain fields.

    Returns:
        the output path.
    """
    if format is not None and format not in _FORMATS:
        raise ValueError(f"format must be None (the input's format) or one of {_FORMATS}, got {format!r}")
    in_path, out_path = Path(in_path), Path(out_path)
    obj = _open_tree(in_path, tree)
    to_rntuple = (format or ("rntuple" if _is_rntuple(obj) else "ttree")) == "rntuple"
    if _same_file(in_path, out_path):
        raise ValueError(f"refusing to write {str(out_path)!r}: it is the input file {str(in_path.resolve())!r}")
    if out_path.exists() and not overwrite:
        raise FileExistsError(f"output file {str(out_path)!r} exists; pass overwrite=True to replace it")
    if not corrected and weight is None and not extra:
        raise ValueError(f"nothing to write: no corrected branches and no weight for tree {tree!r} of {str(in_path)!r}")
    keys = _field_names(obj)
    copy = list(keys) if branches is None else list(branches)
    _check_branches(keys, in_path, tree, copy, None)
    n = obj.num_entries
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
    extras = _check_extra(extra, obj, keys, corr, suffix, weight_name if weight is not None else None, n, in_path, tree)

    taken = set(copy) | {c + suffix for c in corr} | set(extras) | ({weight_name} if weight is not None else set())
    flat, groups, counter_names = ([*copy], {}, {}) if to_rntuple else _ttree_layout(obj, copy, taken)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    try:
        with uproot.recreate(tmp) as fout:
            writer = None
            bar = tqdm(total=n, disable=not progress, unit="evt", desc=f"write {out_path.name}")
            for chunk, start, stop in _chunks(obj, copy, step_size, None, None, in_path, tree):
                data: dict[str, Any] = {}
                for name in flat:
                    data[name] = chunk[name]
                    if name in corr:
                        fix = _jagged_corr if _is_jagged(chunk[name]) else _flat_corr
                        data[name + suffix] = fix(corr[name][start:stop], chunk[name], name, tree, in_path)
                for key, members in groups.items():
                    fields: dict[str, Any] = {}
                    for name in members:
                        fields[name] = chunk[name]
                        if name in corr:
                            fields[name + suffix] = _jagged_corr(
                                corr[name][start:stop], chunk[name], name, tree, in_path
                            )
                    data[key] = ak.zip(fields, depth_limit=2)
                if weight is not None:
                    data[weight_name] = weight[start:stop]
                for name, values in extras.items():
                    data[name] = values[start:stop]
                if writer is None:
                    writer = _create(fout, tree, data, counter_names, to_rntuple)
                writer.extend(data)
                bar.update(stop - start)
            bar.close()
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out_path


def _check_extra(
    extra: Mapping[str, Any] | None,
    obj: Any,
    keys: Sequence[str],
    corr: Mapping[str, Any],
    suffix: str,
    weight_name: str | None,
    n: int,
    path: Path,
    tree: str,
) -> dict[str, np.ndarray]:
    """The new flat per-event branches of ``write_corrected``, checked against the tree and what is written."""
    out: dict[str, np.ndarray] = {}
    existing = set(keys) | set(obj.keys())
    written = {c + suffix: c for c in corr}
    for name, values in (extra or {}).items():
        where = f"tree {tree!r} of {str(path)!r}"
        if not isinstance(name, str) or not name:
            raise ValueError(f"extra branch names must be non-empty strings, got {name!r} (for {where})")
        if name in existing:
            raise ValueError(f"extra branch {name!r} clashes with an existing branch of {where}")
        if name in written:
            raise ValueError(f"extra branch {name!r} clashes with the corrected branch of {written[name]!r} in {where}")
        if name == weight_name:
            raise ValueError(f"extra branch {name!r} clashes with the weight branch written to {where}")
        values = _as_awkward(values)
        try:
            array = ak.to_numpy(values) if values.ndim == 1 else None
        except Exception:  # noqa: BLE001 - e.g. missing values: not a flat numeric array
            array = None
        if array is None or array.ndim != 1 or array.dtype.kind not in "biuf":
            raise ValueError(f"extra branch {name!r} for {where} must be flat numbers of shape (n,), got {values.type}")
        if len(array) != n:
            raise ValueError(f"extra branch {name!r} has {len(array)} entries but {where} has {n}")
        out[name] = array
    return out


def _ttree_layout(
    obj: Any, copy: Sequence[str], taken: set[str]
) -> tuple[list[str], dict[str, list[str]], dict[str, str]]:
    """Group the jagged branches of a TTree output by counter: ``(flat, {group key: members}, {group key: counter})``.

    Branches counted by the same input counter share it; any other list of numbers (an RNTuple list field, an
    ``std::vector`` branch) gets a counter of its own named ``n<branch>``.  Other types are left to uproot.
    """
    probe = None  # an RNTuple's types come from reading no entries
    if _is_rntuple(obj):
        probe = obj.arrays(filter_field=_rntuple_filter(copy), entry_start=0, entry_stop=0, library="ak")
    preferred: dict[str, str] = {}  # group key -> counter name wanted
    groups: dict[str, list[str]] = {}
    flat: list[str] = []
    input_counters: set[str] = set()
    for name in copy:
        count = None if _is_rntuple(obj) else getattr(obj[name], "count_branch", None)
        if count is not None:
            key = _GROUP + "counter:" + count.name
            preferred[key] = count.name
            input_counters.add(count.name)
        elif _is_number_list(obj, name, probe):
            key = _GROUP + "own:" + name
            preferred[key] = "n" + name
        else:
            flat.append(name)
            continue
        groups.setdefault(key, []).append(name)
    flat = [name for name in flat if name not in input_counters]  # rewritten as the groups' counters
    counter_names: dict[str, str] = {}
    used: set[str] = set()
    for key, cname in preferred.items():
        own = cname if key.startswith(_GROUP + "counter:") else None
        while (cname in taken and cname != own) or cname in used:
            cname = "n" + cname
        used.add(cname)
        counter_names[key] = cname
    return flat, groups, counter_names


def _is_number_list(obj: Any, name: str, probe: ak.Array | None) -> bool:
    if probe is None:  # a TTree: ask for the branch's type without reading it
        form = obj[name].interpretation
        try:
            form = form.awkward_form(obj.file)
        except Exception:  # noqa: BLE001 - not an awkward-like branch
            return False
    else:
        form = probe[name].layout.form
    return isinstance(form, (ak.forms.ListOffsetForm, ak.forms.ListForm)) and isinstance(
        form.content, ak.forms.NumpyForm
    )


def _create(fout: Any, tree: str, data: Mapping[str, Any], counter_names: Mapping[str, str], to_rntuple: bool) -> Any:
    """The writable tree of the output, typed after the first chunk."""
    if to_rntuple:
        # uproot writes an RNTuple from its awkward form; each extend() then adds one cluster
        return fout.mkrntuple(tree, ak.zip(dict(data), depth_limit=1).layout.form)
    types = {k: (v.type if isinstance(v, ak.Array) and k.startswith(_GROUP) else _dtype(v)) for k, v in data.items()}
    return fout.mktree(
        tree,
        types,
        counter_name=lambda outer: counter_names.get(outer, "n" + outer),
        field_name=lambda outer, inner: inner if outer.startswith(_GROUP) else f"{outer}_{inner}",
    )


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
