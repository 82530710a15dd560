"""The Müller–Brown potential (Müller & Brown, Theor. Chim. Acta 53, 75, 1979)."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Energy


class MuellerBrown(Energy):
    """``u(x, y) = β V(x, y)``, ``V = Σ_k A_k exp(a_k (x - x0_k)^2 + b_k (x - x0_k)(y - y0_k) + c_k (y - y0_k)^2)``.

    Standard parameters of Müller & Brown (1979): ``A = (-200, -100, -170, 15)``, ``a = (-1, -1, -6.5, 0.7)``,
    ``b = (0, 0, 11, 0.6)``, ``c = (-10, -10, -6.5, 0.7)``, ``x0 = (1, 0, -0.5, -1)``, ``y0 = (0, 0.5, 1.5, 1)``.
    ``beta`` is the inverse temperature that reduces ``V`` to kT; the default 0.1 is a common choice that
    makes the barriers a few kT high.  ``minima`` holds the three local minima of ``V`` (rounded to 1e-4):
    the global one near ``(-0.558, 1.442)`` (``V ≈ -146.70``), then ``(0.623, 0.028)`` (``V ≈ -108.17``) and
    the shallow intermediate ``(-0.050, 0.467)`` (``V ≈ -80.77``).
    """

    minima = ((-0.5582, 1.4417), (0.6235, 0.0280), (-0.0500, 0.4667))

    def __init__(self, beta: float = 0.1):
        super().__init__(2)
        if beta <= 0:
            raise ValueError(f"beta must be positive, got {beta}")
        self.beta = float(beta)
        self.register_buffer("amp", torch.tensor([-200.0, -100.0, -170.0, 15.0], dtype=torch.float64))
        self.register_buffer("ca", torch.tensor([-1.0, -1.0, -6.5, 0.7], dtype=torch.float64))
        self.register_buffer("cb", torch.tensor([0.0, 0.0, 11.0, 0.6], dtype=torch.float64))
        self.register_buffer("cc", torch.tensor([-10.0, -10.0, -6.5, 0.7], dtype=torch.float64))
        self.register_buffer("x0", torch.tensor([1.0, 0.0, -0.5, -1.0], dtype=torch.float64))
        self.register_buffer("y0", torch.tensor([0.0, 0.5, 1.5, 1.0], dtype=torch.float64))

    def potential(self, x: Tensor) -> Tensor:
        """The unreduced potential ``V`` of ``x`` of shape ``(batch, 2)``, returned as ``(batch,)``."""
        amp, ca, cb, cc, x0, y0 = (t.to(x) for t in (self.amp, self.ca, self.cb, self.cc, self.x0, self.y0))
        dx = x[:, :1] - x0
        dy = x[:, 1:] - y0
        return (amp * torch.exp(ca * dx**2 + cb * dx * dy + cc * dy**2)).sum(-1)

    def _energy(self, x: Tensor) -> Tensor:
        return self.beta * self.potential(x)
