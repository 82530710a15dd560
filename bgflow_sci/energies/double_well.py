"""Two-dimensional double well with exact references (normaliser, marginal free energy, samples)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .base import Energy
from .quadrature import GridInverseCDF, finite_support, inverse_cdf_sampler, log_integral_1d, standard_normal


@dataclass(frozen=True)
class _X1Reference:
    low: float
    high: float
    log_z_x1: float
    sampler: GridInverseCDF


class DoubleWell2D(Energy):
    """``u(x) = a x1^4 + b x1^2 + c x1 + x2^2 / 2`` (reduced units, kT).

    The defaults ``a = 1, b = -6, c = -0.5`` are the double-well benchmark of stochastic normalizing
    flows (Wu, Köhler, Noé, NeurIPS 2020); the same pair of coordinates is the building block of FAB's
    Many Well (Midgley et al., ICLR 2023).  Two wells near ``x1 ≈ ±1.7``; ``c < 0`` makes the right one
    deeper.  ``x1`` and ``x2`` are independent, so every reference is exact: the ``x1`` factor by 1D
    quadrature (float64, cached), the ``x2`` factor a unit Gaussian.

    Parameters: ``a > 0`` (quartic, confining), ``b`` (quadratic), ``c`` (linear tilt), and ``n_grid``
    points for the quadrature and the inverse-CDF table.
    """

    def __init__(self, a: float = 1.0, b: float = -6.0, c: float = -0.5, n_grid: int = 20001):
        super().__init__(2)
        if a <= 0:
            raise ValueError(f"the quartic coefficient a must be positive (confining), got {a}")
        self.a, self.b, self.c = float(a), float(b), float(c)
        self.n_grid = int(n_grid)
        self._ref: _X1Reference | None = None

    def energy_x1(self, x1):
        """The ``x1`` part ``a x1^4 + b x1^2 + c x1``, elementwise on a tensor or numpy array."""
        return self.a * x1**4 + self.b * x1**2 + self.c * x1

    def pair_energy(self, x1: Tensor, x2: Tensor) -> Tensor:
        """Elementwise ``u(x1, x2)`` for tensors of any (equal) shape."""
        return self.energy_x1(x1) + 0.5 * x2**2

    def _energy(self, x: Tensor) -> Tensor:
        return self.pair_energy(x[:, 0], x[:, 1])

    # ---- exact references -------------------------------------------------------------------------
    def _reference(self) -> _X1Reference:
        if self._ref is None:
            low, high = finite_support(self.energy_x1)
            self._ref = _X1Reference(
                low=low,
                high=high,
                log_z_x1=log_integral_1d(self.energy_x1, low, high, self.n_grid),
                sampler=inverse_cdf_sampler(self.energy_x1, low, high, self.n_grid),
            )
        return self._ref

    def log_z_x1(self) -> float:
        """``log ∫ exp(-(a x1^4 + b x1^2 + c x1)) dx1`` by Simpson quadrature (float64)."""
        return self._reference().log_z_x1

    def log_z(self) -> float:
        """Exact ``log Z = log Z_x1 + log √(2π)``."""
        return self.log_z_x1() + 0.5 * math.log(2.0 * math.pi)

    def marginal_x1_free_energy(self, grid) -> Tensor:
        """Exact ``F(x1) = -log p(x1) = u1(x1) + log Z_x1`` (normalised marginal), same shape as ``grid``."""
        g = torch.as_tensor(grid)
        out_dtype = g.dtype if g.is_floating_point() else torch.get_default_dtype()
        f = self.energy_x1(g.to(torch.float64)) + self.log_z_x1()
        return f.to(out_dtype)

    def free_energy_difference_exact(self, split: float = 0.0) -> float:
        """``ΔF = F(x1 > split) - F(x1 < split) = -log P(x1 > split) + log P(x1 < split)``.

        Negative when the right state is more probable (the default tilt ``c < 0``).
        """
        ref = self._reference()
        if not ref.low < split < ref.high:
            raise ValueError(f"split must lie inside the support [{ref.low:.3f}, {ref.high:.3f}], got {split}")
        log_left = log_integral_1d(self.energy_x1, ref.low, split, self.n_grid)
        log_right = log_integral_1d(self.energy_x1, split, ref.high, self.n_grid)
        return log_left - log_right

    def sample_x1(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """``n`` exact samples of the ``x1`` marginal by inverse CDF on the quadrature grid, shape ``(n,)``."""
        return self._reference().sampler(n, generator=generator, device=device, dtype=dtype)

    def sample_exact(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """``n`` exact samples ``(n, 2)``: ``x1`` by inverse CDF, ``x2 ~ N(0, 1)``."""
        x1 = self.sample_x1(n, generator=generator, device=device, dtype=torch.float64)
        x2 = standard_normal(n, generator, x1.device)
        return torch.stack([x1, x2], dim=-1).to(dtype or torch.get_default_dtype())
