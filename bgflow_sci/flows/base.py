"""The Flow protocol: invertible maps with log-determinants, their composition and inversion.

Direction convention (the Boltzmann-generator direction): ``forward`` maps latent ``x`` to sample ``y``::

    y, logdet = flow(x, context)          # logdet = log|det dy/dx|, shape (batch,)
    x, logdet_inv = flow.inverse(y, context)  # logdet_inv = log|det dx/dy| = -logdet
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Flow(nn.Module):
    """Base class of every bijection.  Subclasses implement ``forward`` and ``inverse``.

    ``dim`` is the flat event dimension; ``context_dim`` the width of the conditioning vector
    (0 for unconditional flows).
    """

    dim: int
    context_dim: int = 0

    @property
    def output_dim(self) -> int:
        """Dimension of the forward output (``dim`` unless the flow changes dimension, e.g. internal coordinates)."""
        return self.dim

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:  # noqa: D102
        raise NotImplementedError

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:  # noqa: D102
        raise NotImplementedError

    def transform(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``y = f(x)`` without the log-determinant (what sampling needs).

        Defaults to ``self(x, context)[0]``; flows whose log-determinant is extra work beyond ``y`` (continuous
        flows: the divergence integral) override it with a cheaper path that gives the same ``y``.
        """
        return self(x, context)[0]

    def inverse_transform(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        """``x = f⁻¹(y)`` without the log-determinant; defaults to ``self.inverse(y, context)[0]``."""
        return self.inverse(y, context)[0]


class Sequential(Flow):
    """Composition ``f_n ∘ … ∘ f_1``: forward applies the flows in the given order, inverse in reverse."""

    def __init__(self, *flows: Flow):
        super().__init__()
        if not flows:
            raise ValueError("Sequential needs at least one flow")
        self.flows = nn.ModuleList(flows)
        self.dim = getattr(flows[0], "dim", None)
        self.context_dim = max(getattr(f, "context_dim", 0) for f in flows)

    @property
    def output_dim(self) -> int:
        return self.flows[-1].output_dim

    def __len__(self) -> int:
        return len(self.flows)

    def __getitem__(self, i: int) -> Flow:
        return self.flows[i]

    @staticmethod
    def _ctx(flow: Flow, context: Tensor | None) -> Tensor | None:
        return context if getattr(flow, "context_dim", 0) > 0 else None

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        logdet = x.new_zeros(x.shape[0])
        for flow in self.flows:
            x, ld = flow(x, self._ctx(flow, context))
            logdet = logdet + ld
        return x, logdet

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        logdet = y.new_zeros(y.shape[0])
        for flow in reversed(self.flows):
            y, ld = flow.inverse(y, self._ctx(flow, context))
            logdet = logdet + ld
        return y, logdet

    def transform(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        for flow in self.flows:
            x = _transform(flow, x, self._ctx(flow, context))
        return x

    def inverse_transform(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        for flow in reversed(self.flows):
            y = _inverse_transform(flow, y, self._ctx(flow, context))
        return y


class Inverse(Flow):
    """The inverse of a flow: ``Inverse(f)(y) = f.inverse(y)``."""

    def __init__(self, flow: Flow):
        super().__init__()
        self.flow = flow
        self.dim = getattr(flow, "dim", None)
        self.context_dim = getattr(flow, "context_dim", 0)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.flow.inverse(x, context)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.flow(y, context)

    def transform(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return _inverse_transform(self.flow, x, context)

    def inverse_transform(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        return _transform(self.flow, y, context)


def _transform(flow: nn.Module, x: Tensor, context: Tensor | None) -> Tensor:
    """``flow.transform`` for flows, ``flow(x, context)[0]`` for other modules with the flow signature."""
    if isinstance(flow, Flow):
        return flow.transform(x, context)
    return flow(x, context)[0]


def _inverse_transform(flow: nn.Module, y: Tensor, context: Tensor | None) -> Tensor:
    if isinstance(flow, Flow):
        return flow.inverse_transform(y, context)
    return flow.inverse(y, context)[0]


def zero_logdet(x: Tensor) -> Tensor:
    """A ``(batch,)`` zero log-determinant matching ``x``'s dtype and device."""
    return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
