"""Diagonal normal prior with temperature scaling of its width."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import check_batch
from .base import Distribution


class Normal(Distribution):
    """``N(mean, diag(std^2) * temperature)`` on ``R^dim``.

    ``temperature`` scales the variance (``std -> std * sqrt(T)``): sampling a Gaussian prior at
    ``T < 1`` is the usual trick to draw low-energy samples from a Boltzmann generator.
    """

    def __init__(self, dim: int, mean: float | Tensor = 0.0, std: float | Tensor = 1.0, temperature: float = 1.0):
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        mean_t = torch.as_tensor(mean, dtype=torch.get_default_dtype()).expand(dim).clone()
        std_t = torch.as_tensor(std, dtype=torch.get_default_dtype()).expand(dim).clone()
        if (std_t <= 0).any() or temperature <= 0:
            raise ValueError("std and temperature must be positive")
        self.dim = dim
        self.temperature = float(temperature)
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def _scale(self, temperature: float | None) -> Tensor:
        t = self.temperature if temperature is None else temperature
        if t <= 0:
            raise ValueError(f"temperature must be positive, got {t}")
        return self.std * math.sqrt(t)

    def sample(self, n: int, context: Tensor | None = None, temperature: float | None = None) -> Tensor:
        """``(n, dim)`` draws ``mean + std √T ε``, ``ε ~ N(0, I)`` (``temperature`` overrides ``T`` for this call)."""
        eps = torch.randn(n, self.dim, dtype=self.mean.dtype, device=self.mean.device)
        return self.mean + self._scale(temperature) * eps

    def log_prob(self, x: Tensor, context: Tensor | None = None, temperature: float | None = None) -> Tensor:
        """``(batch,)`` normalised log density at temperature ``T`` (``temperature`` overrides it)."""
        check_batch(x, self.dim)
        scale = self._scale(temperature)
        z = (x - self.mean) / scale
        return -0.5 * (z**2).sum(-1) - torch.log(scale).sum() - 0.5 * self.dim * math.log(2 * math.pi)
