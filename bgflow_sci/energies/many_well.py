"""FAB's Many Well: independent copies of the 2D double well (Midgley et al., ICLR 2023)."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Energy
from .double_well import DoubleWell2D
from .quadrature import standard_normal


class ManyWell(Energy):
    """``u(x) = Σ_i u_DW(x[2i], x[2i+1])`` over ``n_copies`` coordinate pairs, ``dim = 2 n_copies``.

    ``u_DW`` is :class:`DoubleWell2D` with parameters ``a, b, c`` (defaults ``1, -6, -0.5``, i.e.
    ``x1^4 - 6 x1^2 - 0.5 x1 + x2^2 / 2``).  With 16 copies this is the 32-dimensional Many Well of FAB
    (Midgley et al., ICLR 2023), which has ``2^16`` modes.  The pairs are independent, so
    ``log Z = n_copies · log Z_DW`` and exact samples are copies of exact double-well samples.
    """

    def __init__(self, n_copies: int = 16, a: float = 1.0, b: float = -6.0, c: float = -0.5, n_grid: int = 20001):
        if n_copies < 1:
            raise ValueError(f"n_copies must be positive, got {n_copies}")
        super().__init__(2 * n_copies)
        self.n_copies = int(n_copies)
        self.well = DoubleWell2D(a=a, b=b, c=c, n_grid=n_grid)

    def _energy(self, x: Tensor) -> Tensor:
        pairs = x.reshape(x.shape[0], self.n_copies, 2)
        return self.well.pair_energy(pairs[..., 0], pairs[..., 1]).sum(-1)

    def log_z(self) -> float:
        """Exact ``log Z = n_copies · log Z_DW``."""
        return self.n_copies * self.well.log_z()

    def sample_exact(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """``n`` exact samples ``(n, 2 n_copies)``: each pair an exact :class:`DoubleWell2D` sample."""
        m = n * self.n_copies
        x1 = self.well.sample_x1(m, generator=generator, device=device, dtype=torch.float64)
        x2 = standard_normal(m, generator, x1.device)
        x = torch.stack([x1, x2], dim=-1).reshape(n, 2 * self.n_copies)
        return x.to(dtype or torch.get_default_dtype())


class ManyWell32(ManyWell):
    """The 32-dimensional Many Well of FAB: :class:`ManyWell` with 16 copies."""

    def __init__(self, a: float = 1.0, b: float = -6.0, c: float = -0.5, n_grid: int = 20001):
        super().__init__(n_copies=16, a=a, b=b, c=c, n_grid=n_grid)
