"""Deterministic per-entry train/holdout splits of ROOT trees, and bootstrap resamples.

An entry is held out when ``u(entry, seed) < fraction`` with ``u`` a uniform number in ``[0, 1)`` obtained by
hashing the global entry number (splitmix64 finaliser).  The split is a pure function of ``(entry, seed,
fraction)``: no index list is stored, any chunk or partition of a file can compute its own part of the mask, and
a model only needs to record ``(fraction, seed)`` and the file's number of entries to reproduce it.  With a key
branch (e.g. an event number, :func:`held_out`) the hash is of its value instead, so that rows belonging to one
physical event (several candidates or reconstructions) are held out together.  Held-out sets
are nested in the fraction (a larger fraction holds out a superset).
"""

from __future__ import annotations

import numpy as np

from .._hashing import hashed_uniform

__all__ = ["bootstrap_indices", "entry_uniform", "held_out", "holdout_mask"]

entry_uniform = hashed_uniform  # the per-entry uniform of the splits (splitmix64 finaliser)


def held_out(keys: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """``(n,) bool``: True where the integer ``keys (n,)`` (entry numbers, or event numbers so that all rows of one
    event fall on the same side) are held out."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    keys = np.asarray(keys)
    if keys.dtype.kind not in "iub":
        raise ValueError(f"holdout keys must be integers (entry or event numbers), got dtype {keys.dtype}")
    return entry_uniform(keys.astype(np.int64).view(np.uint64), seed) < fraction


def holdout_mask(entry_start: int, entry_stop: int, fraction: float, seed: int) -> np.ndarray:
    """``(entry_stop - entry_start,) bool``: True for the held-out entries of ``[entry_start, entry_stop)``."""
    return held_out(np.arange(entry_start, entry_stop), fraction, seed)


def bootstrap_indices(n: int, seed: int) -> np.ndarray:
    """``(n,) int64`` indices of a bootstrap resample of ``n`` events (drawn with replacement, sorted)."""
    return np.sort(np.random.default_rng(seed).integers(0, n, size=n))
