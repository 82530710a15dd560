"""Elementwise monotonic transformers: the scalar bijections inside coupling and autoregressive layers.

A transformer ``τ(x; θ)`` maps each scalar ``x_i`` with its own parameter vector ``θ_i`` (``n_params``
numbers, produced by a conditioner network). Convention: **raw parameters equal to zero give the
identity map**, so a conditioner whose last layer starts at zero makes the whole flow start as the
identity. Each transformer knows the :class:`Domain` of its coordinates, so intervals stay intervals and
circles stay circles (``y(x + period) = y(x) + period``).

Shapes: ``x`` ``(..., d)``, ``params`` ``(..., d, n_params)`` -> ``y`` ``(..., d)`` and the elementwise
log-derivative ``log|dy/dx|`` ``(..., d)``; ``inverse`` returns ``x`` and ``log|dx/dy|``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Domain:
    """Where a coordinate lives: the real line, an interval ``[low, high]`` or a circle of period ``high - low``."""

    kind: Literal["real", "interval", "circle"] = "real"
    low: float = -math.inf
    high: float = math.inf

    def __post_init__(self) -> None:
        if self.kind not in ("real", "interval", "circle"):
            raise ValueError(f"unknown domain kind {self.kind!r}; use 'real', 'interval' or 'circle'")
        if self.kind != "real" and not (math.isfinite(self.low) and math.isfinite(self.high) and self.high > self.low):
            raise ValueError(f"{self.kind} domain needs finite low < high, got [{self.low}, {self.high}]")

    @classmethod
    def real(cls) -> Domain:
        return cls("real")

    @classmethod
    def interval(cls, low: float = 0.0, high: float = 1.0) -> Domain:
        return cls("interval", low, high)

    @classmethod
    def circle(cls, low: float = -math.pi, high: float = math.pi) -> Domain:
        return cls("circle", low, high)


class Transformer(nn.Module):
    """Base class of elementwise monotonic transformers (see the module docstring for the contract).

    Transformers hold no per-sample state; trainable hyper-parameters (e.g. a global shape exponent)
    may be ``nn.Parameter`` s.
    """

    n_params: int

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:  # noqa: D102
        raise NotImplementedError

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:  # noqa: D102
        raise NotImplementedError

    def restrict(self, index: Sequence[int] | Tensor) -> Transformer:
        """This transformer acting on the coordinates ``index`` only (a coupling layer transforms a subset).

        Transformers holding one :class:`Domain` per coordinate override this to select theirs; the default
        (one domain for every coordinate) returns ``self``.
        """
        return self


def constant_like(values: Sequence[float], like: Tensor) -> Tensor:
    """Exact float constants (e.g. domain bounds, kept as Python floats) as a tensor of ``like``'s dtype/device.

    Buffers would be rounded when a module passes through float32; this materialises the Python values
    directly in the requested precision and caches the tensor.
    """
    return _constant(tuple(float(v) for v in values), like.dtype, like.device)


@lru_cache(maxsize=256)
def _constant(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.tensor(values, dtype=dtype, device=device)
