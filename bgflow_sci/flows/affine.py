"""Affine transformer ``y = x exp(s) + t`` (RealNVP, Dinh et al. ICLR 2017; MAF/IAF use the same map).

Parameters per coordinate: ``(t, raw)``; the log-scale is soft-clamped, ``s = B tanh(raw / B)``, so that
``|s| < B`` and raw parameters equal to zero give the identity.  ``log|dy/dx| = s``.  Real line only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .transformers import Transformer


class Affine(Transformer):
    """Elementwise affine transformer with soft-clamped log-scale (``scale_bound`` ``B``, see module docstring)."""

    n_params = 2

    def __init__(self, scale_bound: float = 5.0):
        super().__init__()
        if not scale_bound > 0:
            raise ValueError(f"scale_bound must be positive, got {scale_bound}")
        self.scale_bound = float(scale_bound)

    def extra_repr(self) -> str:
        return f"scale_bound={self.scale_bound}"

    def _split(self, params: Tensor) -> tuple[Tensor, Tensor]:
        if params.shape[-1] != 2:
            raise ValueError(f"params must have shape (..., d, 2), got {tuple(params.shape)}")
        shift, raw = params.unbind(-1)
        return shift, self.scale_bound * torch.tanh(raw / self.scale_bound)

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """``y = x exp(s) + t`` and ``log|dy/dx| = s``; ``x`` ``(..., d)``, ``params`` ``(..., d, 2)``."""
        shift, log_scale = self._split(params)
        return x * torch.exp(log_scale) + shift, log_scale

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """``x = (y - t) exp(-s)`` and ``log|dx/dy| = -s``."""
        shift, log_scale = self._split(params)
        return (y - shift) * torch.exp(-log_scale), -log_scale
