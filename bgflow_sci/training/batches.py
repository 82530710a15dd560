"""Where a data loss gets its minibatches: a fixed tensor, an iterable of batches, or a sampler ``n -> batch``.

:func:`as_batch_source` turns any of these into a zero-argument callable returning one batch as a dict of named
tensors (the loss names the fields, e.g. ``("x", "weights", "context")``):

* a ``Tensor`` ``(n, ...)`` (with optional aligned tensors of the other fields): ``batch_size`` rows drawn uniformly
  with replacement by ``torch.randint`` (the global RNG unless a ``generator`` is given, so checkpoints that store
  RNG states resume exactly); ``batch_size=None`` returns every row in order;
* an iterable of batches (a ``DataLoader``, a list, any object whose ``iter()`` returns a fresh iterator) or a
  generator function (called with no argument): consumed batch by batch and restarted when exhausted (a new epoch);
* a one-shot iterator (a generator object, ``iter(loader)``): consumed batch by batch; running out raises a
  ``RuntimeError`` that says so;
* any other callable: a sampler called as ``sampler(batch_size)`` for every batch (an MD sampler,
  ``target.sample_exact``).

A batch from an iterable or a sampler is one tensor (the first field), a tuple/list of tensors in field order
(``None`` for an absent field, shorter tuples leave the trailing fields out), or a mapping from field names to
tensors.  Its tensors are used as they are (same device and dtype as the model; batch size as produced).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from . import distributed

__all__ = ["BatchData", "BatchSource", "as_batch_source"]

Batch = Tensor | Sequence[Tensor | None] | Mapping[str, Tensor | None]
BatchData = Tensor | Iterable[Batch] | Callable[..., Any]
"""What a data loss accepts: a tensor, an iterable/iterator of batches, a generator function or a sampler."""


class BatchSource:
    """A zero-argument callable giving one batch ``{field: tensor or None}``; ``streamed`` is ``False`` for tensors.

    ``kind`` is one of ``"tensor"``, ``"iterable"``, ``"generator function"``, ``"iterator"``, ``"sampler"``.
    """

    def __init__(self, fields: Sequence[str], kind: str, next_batch: Callable[[], Any], name: str):
        self.fields, self.kind, self.name = tuple(fields), kind, name
        self._next = next_batch
        self.n_batches = 0  # batches delivered so far

    @property
    def streamed(self) -> bool:
        """``True`` unless the batches are drawn from a fixed tensor (then they were validated up front)."""
        return self.kind != "tensor"

    def __call__(self) -> dict[str, Tensor | None]:
        raw = self._next()
        self.n_batches += 1
        return raw if self.kind == "tensor" else _as_fields(raw, self.fields, self.name)


def _as_fields(raw: Any, fields: tuple[str, ...], name: str) -> dict[str, Tensor | None]:
    """Name the parts of one produced batch (tensor, tuple/list in field order, or mapping)."""
    if isinstance(raw, Tensor):
        items: dict[str, Any] = {fields[0]: raw}
    elif isinstance(raw, Mapping):
        unknown = set(raw) - set(fields)
        if unknown:
            raise ValueError(f"{name}: batch has unknown fields {sorted(unknown)}; expected some of {list(fields)}")
        items = dict(raw)
    elif isinstance(raw, (tuple, list)):
        if not 1 <= len(raw) <= len(fields):
            raise ValueError(f"{name}: a batch tuple must hold 1 to {len(fields)} items {fields}, got {len(raw)}")
        items = dict(zip(fields, raw))
    else:
        raise TypeError(f"{name}: a batch must be a Tensor, a tuple/list of tensors or a mapping, got {type(raw)}")
    for key, value in items.items():
        if value is not None and not isinstance(value, Tensor):
            raise TypeError(f"{name}: batch field {key!r} must be a Tensor or None, got {type(value).__name__}")
    if items.get(fields[0]) is None:
        raise ValueError(f"{name}: every batch needs its {fields[0]!r} tensor")
    return {f: items.get(f) for f in fields}


def _tensor_source(
    data: Tensor, batch_size: int | None, fields: tuple[str, ...], aligned: Mapping[str, Tensor | None], gen
) -> Callable[[], dict[str, Tensor | None]]:
    for key, t in aligned.items():
        if t is not None and len(t) != len(data):
            raise ValueError(f"{key} must have {len(data)} rows (one per data row), got {len(t)}")
    if batch_size is None:
        whole = {fields[0]: data, **{f: aligned.get(f) for f in fields[1:]}}
        return lambda: whole

    def draw() -> dict[str, Tensor | None]:
        with distributed.shared_draws():  # under DDP: the global batch's rows, the same on every rank ...
            idx = torch.randint(len(data), (batch_size,), device=data.device, generator=gen)
        idx = distributed.part(idx)  # ... of which this rank keeps its slice
        out: dict[str, Tensor | None] = {fields[0]: data[idx]}
        for f in fields[1:]:
            t = aligned.get(f)
            out[f] = None if t is None else t[idx]
        return out

    return draw


def _restarting(make_iter: Callable[[], Iterator[Any]], name: str) -> Callable[[], Any]:
    """Next item of an iterator that is re-created when exhausted (an epoch ends)."""
    state: dict[str, Any] = {"it": make_iter()}

    def step() -> Any:
        try:
            return next(state["it"])
        except StopIteration:
            state["it"] = make_iter()
            try:
                return next(state["it"])
            except StopIteration:
                raise RuntimeError(f"{name} yields no batches (empty iterable)") from None

    return step


def _one_shot(it: Iterator[Any], name: str, source: list[BatchSource]) -> Callable[[], Any]:
    def step() -> Any:
        try:
            return next(it)
        except StopIteration:
            raise RuntimeError(
                f"{name}: the iterator of batches is exhausted after {source[0].n_batches} batches; a one-shot "
                "iterator cannot restart. Pass a re-iterable (a DataLoader, a list, a generator function) or a "
                "sampler n -> batch for more steps."
            ) from None

    return step


def as_batch_source(
    data: BatchData,
    batch_size: int | None,
    fields: Sequence[str] = ("x",),
    aligned: Mapping[str, Tensor | None] | None = None,
    generator: torch.Generator | None = None,
    name: str = "data",
) -> BatchSource:
    """The one way a data loss reads its data (see the module docstring for the accepted forms).

    Args:
        data: a ``Tensor`` (the first field), an iterable/iterator of batches, a generator function, or a sampler.
        batch_size: rows per batch drawn from a tensor (``None``: all rows in order) and the ``n`` a sampler is
            called with; ignored by iterables, whose batches keep the size they come with.
        fields: names of a batch's parts, first the data itself.
        aligned: only with a tensor: the other fields' ``(n, ...)`` tensors, indexed with the same rows.
        generator: RNG of the tensor draws (default: the global torch RNG).
        name: what error messages call the data.
    """
    fields = tuple(fields)
    if not fields:
        raise ValueError("as_batch_source needs at least one field name")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be positive or None, got {batch_size}")
    extra = {k: v for k, v in (aligned or {}).items() if v is not None}
    unknown = set(extra) - set(fields[1:])
    if unknown:
        raise ValueError(f"aligned fields {sorted(unknown)} are not among {list(fields[1:])}")
    if isinstance(data, Tensor):
        return BatchSource(fields, "tensor", _tensor_source(data, batch_size, fields, extra, generator), name)
    if extra:
        raise ValueError(
            f"{sorted(extra)} given as separate tensors, but {name} is not a tensor: let its batches carry them "
            f"(tuples in the order {fields} or mappings)"
        )
    if type(data).__module__.startswith("numpy"):
        raise TypeError(f"{name} is a numpy array: convert it with torch.as_tensor(...) first")
    if inspect.isgeneratorfunction(data):
        return BatchSource(fields, "generator function", _restarting(data, name), name)
    if isinstance(data, Iterator):
        holder: list[BatchSource] = []
        holder.append(BatchSource(fields, "iterator", _one_shot(data, name, holder), name))
        return holder[0]
    if isinstance(data, Iterable):
        return BatchSource(fields, "iterable", _restarting(lambda: iter(data), name), name)
    if callable(data):
        if batch_size is None:
            raise ValueError(f"{name} is a sampler n -> batch: it needs a batch_size")
        return BatchSource(fields, "sampler", lambda: data(batch_size), name)
    raise TypeError(
        f"{name} must be a Tensor, an iterable or iterator of batches, a generator function or a sampler n -> batch, "
        f"got {type(data).__name__}"
    )
