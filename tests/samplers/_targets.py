"""Small energies with exact references shared by the sampler tests."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from bgflow_sci.energies import DoubleWell2D, Energy

MEAN = torch.tensor([1.0, -0.5], dtype=torch.float64)
COV = torch.tensor([[2.0, 0.9], [0.9, 1.0]], dtype=torch.float64)


class CorrelatedGaussian(Energy):
    """``u(x) = (x - μ)ᵀ Σ⁻¹ (x - μ) / 2`` in 2D with a correlated ``Σ`` (unnormalised)."""

    def __init__(self):
        super().__init__(2)
        self.register_buffer("mean", MEAN.clone())
        self.register_buffer("precision", torch.linalg.inv(COV))

    def _energy(self, x: Tensor) -> Tensor:
        d = x - self.mean.to(x)
        return 0.5 * torch.einsum("bi,ij,bj->b", d, self.precision.to(x), d)

    def sample(self, n: int, generator: torch.Generator, dtype: torch.dtype, device) -> Tensor:
        z = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        x = MEAN + z @ torch.linalg.cholesky(COV).T
        return x.to(dtype=dtype, device=device)


def double_well_x1_cdf(well: DoubleWell2D):
    """Exact CDF of the double well's ``x1`` marginal, from its normalised marginal free energy on a fine grid."""
    grid = np.linspace(-4.0, 4.0, 40001)
    p = np.exp(-well.marginal_x1_free_energy(torch.tensor(grid, dtype=torch.float64)).numpy())
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (p[1:] + p[:-1]) * np.diff(grid))])
    cdf /= cdf[-1]
    return lambda x: np.interp(x, grid, cdf)
