"""Counter-based random numbers: a uniform per integer key, the same whichever chunk or worker computes it."""

from __future__ import annotations

import numpy as np

__all__ = ["hashed_uniform"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def hashed_uniform(keys: np.ndarray, seed: int) -> np.ndarray:
    """Uniform ``[0, 1)`` numbers, ``float64`` of ``keys``' shape, one per integer key ``>= 0`` (a global entry or
    sample number): the splitmix64 finaliser of ``key + (seed + 1) * golden``, a pure function of ``(key, seed)``."""
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps around by design
        z = np.asarray(keys, dtype=np.uint64) + np.uint64(seed % 2**32) * _GOLDEN + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(2**53)
