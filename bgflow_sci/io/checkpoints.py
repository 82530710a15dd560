"""The one checkpoint format of the package: a ``torch.save`` of plain types and tensors, loaded ``weights_only``.

A checkpoint is a dict ``{"format": "bgflow_sci", "version": 1, "kind": KIND, ...payload}``; ``KIND`` says what
wrote it (``"trainer"``, ``"boltzmann_generator"``, ``"morphing_flow"``, ...).  The payload holds only what
``torch.load(weights_only=True)`` accepts: tensors, numbers, strings, ``None``, lists, tuples and dicts of them.
Nothing in a checkpoint is executed on loading, so a foreign file cannot run code; a corrupt, truncated or foreign
file raises :class:`CheckpointError` naming the file and what was expected.

Writes are atomic (temporary file beside the target, then ``os.replace``), so a run killed while saving leaves the
previous checkpoint intact.  Random-number-generator states of torch, numpy and ``random`` are converted to
tensors and plain tuples by :func:`rng_state` and restored by :func:`set_rng_state`.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "bgflow_sci"
VERSION = 1

__all__ = ["CheckpointError", "load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state"]


class CheckpointError(ValueError):
    """A file that is not a readable bgflow_sci checkpoint of the expected kind (the message names the file)."""


def save_checkpoint(path: str | os.PathLike, kind: str, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` (plain types and tensors; tensors are moved to CPU) as a checkpoint of ``kind``, atomically.

    Returns the path written.  Raises :class:`CheckpointError` if the payload holds an object that
    ``weights_only`` loading would refuse (so that a file is never written that cannot be read back).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": FORMAT, "version": VERSION, "kind": kind, **_plain(dict(payload), "payload")}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(blob, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(
    path: str | os.PathLike, kind: str | tuple[str, ...] | None = None, map_location: Any = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` with ``weights_only=True`` (no code is executed).

    ``kind``: the kind (or kinds) expected; another kind raises :class:`CheckpointError`.  A missing file raises
    ``FileNotFoundError``; a corrupt, truncated or foreign file raises :class:`CheckpointError`, both naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file {str(path)!r}")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # any failure of the restricted unpickler means: not a checkpoint we can read
        raise CheckpointError(
            f"{str(path)!r} is not a readable bgflow_sci checkpoint (corrupt, truncated, or written by another "
            f"program; only plain types and tensors are loaded): {str(err).splitlines()[0] if str(err) else err!r}"
        ) from err
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is a torch file but not a bgflow_sci checkpoint (no format tag)")
    if int(blob.get("version", 0)) > VERSION:
        raise CheckpointError(
            f"{str(path)!r} has checkpoint version {blob['version']}; this bgflow_sci reads up to {VERSION}"
        )
    wanted = (kind,) if isinstance(kind, str) else kind
    if wanted is not None and blob.get("kind") not in wanted:
        raise CheckpointError(
            f"{str(path)!r} is a {blob.get('kind')!r} checkpoint, expected {' or '.join(repr(k) for k in wanted)}"
        )
    return blob


def _plain(value: Any, where: str) -> Any:
    """A copy of ``value`` with tensors on CPU; refuses objects ``weights_only`` loading would reject."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if value is None or isinstance(value, bool | int | float | str | torch.dtype | torch.device):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, Mapping):
        return {k: _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise CheckpointError(f"cannot store {where} of type {type(value).__name__} in a checkpoint (plain types only)")


def rng_state() -> dict[str, Any]:
    """The global RNG states of torch (CPU and CUDA), numpy and ``random`` as tensors and plain tuples."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos)},
        "python": random.getstate(),
    }
    state["numpy"].update(has_gauss=int(has_gauss), cached_gaussian=float(cached))
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore :func:`rng_state` output (CUDA states only for the devices present)."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available():
        k = min(len(cuda), torch.cuda.device_count())
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda[:k]])
