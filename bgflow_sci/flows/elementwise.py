"""Elementwise layers: a transformer on every coordinate, and rotations of circular coordinates."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._checks import check_batch, check_context
from .base import Flow, zero_logdet
from .coupling import coordinate_domains
from .nets import MLP
from .transformers import Domain, Transformer, constant_like


class Elementwise(Flow):
    """``y_i = τ(x_i; θ_i)`` for every coordinate, ``log|det dy/dx| = Σ_i log|τ'(x_i)|``.

    Without context the parameters ``θ`` ``(dim, n_params)`` are learnable and start at zero (identity);
    with ``context_dim > 0`` they are ``MLP(context)`` (last layer zero, so it starts as the identity too).
    """

    def __init__(
        self,
        dim: int,
        transformer: Transformer,
        context_dim: int = 0,
        hidden: Sequence[int] = (64, 64),
        activation: type[nn.Module] = nn.SiLU,
    ):
        super().__init__()
        coordinate_domains(transformer, dim)  # validates the number of per-coordinate domains
        self.dim, self.context_dim, self.transformer = dim, context_dim, transformer
        n_params = transformer.n_params
        if context_dim > 0:
            self.net = MLP(context_dim, dim * n_params, hidden, activation)
        else:
            self.params = nn.Parameter(torch.zeros(dim, n_params))

    def _params(self, x: Tensor, context: Tensor | None) -> Tensor:
        if context is None:
            return self.params.to(x.dtype).expand(x.shape[0], -1, -1)
        n_params = self.transformer.n_params
        return self.net(context.to(x)).view(x.shape[0], n_params, self.dim).transpose(1, 2)

    def _transform(self, x: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        check_batch(x, self.dim)
        context = check_context(context, x.shape[0], self.context_dim)
        params = self._params(x, context)
        y, ld = (self.transformer.inverse if inverse else self.transformer)(x, params)
        return y, ld.sum(-1)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._transform(x, context, inverse=False)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._transform(y, context, inverse=True)


class CircularShift(Flow):
    """Rotate circular coordinates, ``y_i = wrap(x_i + δ_i)``, to move a spline's seam; ``log|det| = 0``.

    ``wrap`` keeps the integer number of periods of the input (as the circle splines do): an input in
    ``[low, high)`` lands in ``[low, high)``, and ``y(x + P) = y(x) + P``.  Other coordinates pass unchanged.

    Args:
        dim: event dimension.
        circular_dims: indices of the circular coordinates.
        domain: their :class:`Domain` (kind ``"circle"``), one for all or one per circular coordinate.
        learnable: a trainable shift (initialised to ``shift``, default 0) or a fixed buffer.
        shift: the shifts ``δ``; default 0 when learnable, else uniform random in the period (from ``seed``).
    """

    def __init__(
        self,
        dim: int,
        circular_dims: Sequence[int],
        domain: Domain | Sequence[Domain] = Domain.circle(),  # noqa: B008 (frozen dataclass)
        learnable: bool = True,
        shift: float | Sequence[float] | Tensor | None = None,
        seed: int = 0,
    ):
        super().__init__()
        index = torch.as_tensor(list(circular_dims), dtype=torch.long)
        if index.ndim != 1 or len(index) == 0 or len(set(index.tolist())) != len(index):
            raise ValueError(f"circular_dims must be distinct coordinate indices, got {list(circular_dims)}")
        if (index < 0).any() or (index >= dim).any():
            raise ValueError(f"circular_dims must lie in range({dim}), got {index.tolist()}")
        domains = [domain] * len(index) if isinstance(domain, Domain) else list(domain)
        if len(domains) != len(index) or any(d.kind != "circle" for d in domains):
            raise ValueError("domain must be one circle Domain or one circle Domain per circular coordinate")
        self.dim = dim
        self.register_buffer("index", index)
        self._low = [d.low for d in domains]  # exact Python floats (see constant_like)
        self._period = [d.high - d.low for d in domains]
        if shift is None:
            if learnable:
                init = torch.zeros(len(index))
            else:
                init = torch.rand(len(index), generator=torch.Generator().manual_seed(seed)) * torch.tensor(
                    self._period
                )
        else:
            init = torch.as_tensor(shift, dtype=torch.get_default_dtype()).expand(len(index)).clone()
        if learnable:
            self.shift = nn.Parameter(init)
        else:
            self.register_buffer("shift", init)

    def _wrap(self, v: Tensor) -> Tensor:
        low, period = constant_like(self._low, v), constant_like(self._period, v)
        return torch.remainder(v - low, period) + low

    def _rotate(self, x: Tensor, sign: float) -> tuple[Tensor, Tensor]:
        check_batch(x, self.dim)
        x_c = x.index_select(1, self.index)
        base = self._wrap(x_c)
        y_c = self._wrap(base + sign * self.shift.to(x.dtype)) + (x_c - base)
        return x.index_copy(1, self.index, y_c), zero_logdet(x)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._rotate(x, 1.0)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._rotate(y, -1.0)
