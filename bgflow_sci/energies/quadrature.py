"""Exact one-dimensional references for densities ``p(x) ∝ exp(-u(x))`` on a grid.

These helpers give the "exact integral" oracles of the toy energies: log normalising constants by
composite Simpson quadrature in log space (float64, numpy/scipy), and exact sampling by inverting the
grid cumulative distribution function (torch, batched, on any device).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import logsumexp
from torch import Tensor

PotentialFn = Callable[[np.ndarray], np.ndarray]
"""A reduced 1D energy ``u(x)`` evaluated elementwise on a float64 numpy array."""


def _odd(n: int) -> int:
    if n < 3:
        raise ValueError(f"need at least 3 grid points, got {n}")
    return n if n % 2 == 1 else n + 1


def log_integral_1d(u_fn: PotentialFn, low: float, high: float, n: int = 20001) -> float:
    """``log ∫_low^high exp(-u(x)) dx`` by composite Simpson on ``n`` points (rounded up to odd).

    Evaluated as ``logsumexp(-u(x_i) + log w_i)`` with Simpson weights ``w = h/3 · (1, 4, 2, ..., 4, 1)``,
    so it neither overflows nor underflows for deep wells.  The error is ``O(h^4)`` for smooth ``u``.
    """
    if not high > low:
        raise ValueError(f"need high > low, got [{low}, {high}]")
    n = _odd(n)
    x = np.linspace(low, high, n, dtype=np.float64)
    h = (high - low) / (n - 1)
    w = np.full(n, 2.0)
    w[1::2] = 4.0
    w[0] = w[-1] = 1.0
    return float(logsumexp(-np.asarray(u_fn(x), dtype=np.float64) + np.log(w * h / 3.0)))


def finite_support(u_fn: PotentialFn, cutoff: float = 50.0, start: float = 1.0, n: int = 4001) -> tuple[float, float]:
    """An interval ``[low, high]`` outside which ``u - min(u) > cutoff`` (mass there below ``~exp(-cutoff)``).

    Doubles a symmetric window ``[-L, L]`` until both ends exceed the cutoff, then tightens it to the grid
    points just outside the region where ``u - min(u) <= cutoff``.  Assumes a confining ``u`` (growing
    outward beyond the window), such as a quartic.
    """
    half = float(start)
    for _ in range(40):
        x = np.linspace(-half, half, n, dtype=np.float64)
        du = np.asarray(u_fn(x), dtype=np.float64)
        du = du - du.min()
        if du[0] > cutoff and du[-1] > cutoff:
            inside = np.nonzero(du <= cutoff)[0]
            return float(x[max(inside[0] - 1, 0)]), float(x[min(inside[-1] + 1, n - 1)])
        half *= 2.0
    raise ValueError("exp(-u) does not decay within |x| < 2^40; is the potential confining?")


@dataclass(frozen=True)
class GridInverseCDF:
    """Exact sampler of ``p(x) ∝ exp(-u(x))`` on ``[grid[0], grid[-1]]`` by inverting a tabulated CDF.

    The CDF is the cumulative trapezoid rule of ``exp(-u)`` on the grid, normalised to end at 1; between
    grid points it is linearly interpolated, i.e. the density is taken constant within each cell.
    """

    grid: np.ndarray  # (n,) increasing
    cdf: np.ndarray  # (n,) from 0 to 1, non-decreasing

    def __call__(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """``n`` independent samples, shape ``(n,)``."""
        gen_device = generator.device if generator is not None else None
        dev = torch.device(device) if device is not None else (gen_device or torch.device("cpu"))
        uni = torch.rand(n, generator=generator, dtype=torch.float64, device=gen_device or dev).to(dev)
        grid = torch.as_tensor(self.grid, dtype=torch.float64, device=dev)
        cdf = torch.as_tensor(self.cdf, dtype=torch.float64, device=dev)
        idx = torch.searchsorted(cdf, uni, right=True).clamp(1, len(self.grid) - 1)
        c0, c1 = cdf[idx - 1], cdf[idx]
        x0, x1 = grid[idx - 1], grid[idx]
        frac = ((uni - c0) / (c1 - c0).clamp_min(torch.finfo(torch.float64).tiny)).clamp(0.0, 1.0)
        return (x0 + frac * (x1 - x0)).to(dtype or torch.get_default_dtype())


def inverse_cdf_sampler(u_fn: PotentialFn, low: float, high: float, n: int = 20001) -> GridInverseCDF:
    """Tabulate the CDF of ``exp(-u)`` on ``n`` points of ``[low, high]`` and return its sampler."""
    if not high > low:
        raise ValueError(f"need high > low, got [{low}, {high}]")
    x = np.linspace(low, high, max(int(n), 2), dtype=np.float64)
    u = np.asarray(u_fn(x), dtype=np.float64)
    p = np.exp(-(u - u.min()))
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (p[1:] + p[:-1]) * np.diff(x))])
    return GridInverseCDF(grid=x, cdf=cdf / cdf[-1])


def standard_normal(
    n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> Tensor:
    """``n`` float64 draws of ``N(0, 1)`` on ``device``, using ``generator`` on its own device when given."""
    gen_device = generator.device if generator is not None else None
    dev = torch.device(device) if device is not None else (gen_device or torch.device("cpu"))
    return torch.randn(n, generator=generator, dtype=torch.float64, device=gen_device or dev).to(dev)
