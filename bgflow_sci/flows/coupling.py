"""Affine coupling layer (RealNVP; Dinh, Sohl-Dickstein, Bengio, ICLR 2017).

With a boolean ``mask`` selecting the transformed dimensions ``T`` and the conditioning dimensions ``C``::

    y_C = x_C,   y_T = x_T * exp(s(x_C, c)) + t(x_C, c),   log|det dy/dx| = sum_T s
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._checks import check_batch, check_context
from .base import Flow
from .nets import MLP, with_context


def half_mask(dim: int, second: bool = True) -> Tensor:
    """Mask transforming the second (or first) half of ``dim`` coordinates."""
    mask = torch.zeros(dim, dtype=torch.bool)
    if second:
        mask[dim // 2 :] = True
    else:
        mask[: dim // 2] = True
    return mask


class AffineCoupling(Flow):
    """RealNVP affine coupling with an MLP conditioner that may take a context.

    Args:
        dim: event dimension (at least 2).
        mask: boolean ``(dim,)``; ``True`` marks the dimensions that are transformed. Default: second half.
        hidden: hidden widths of the conditioner MLP.
        context_dim: width of the conditioning vector (0: unconditional).
        scale_bound: log-scales are soft-clamped to ``(-scale_bound, scale_bound)`` for stability.
    """

    def __init__(
        self,
        dim: int,
        mask: Tensor | Sequence[bool] | None = None,
        hidden: Sequence[int] = (64, 64),
        context_dim: int = 0,
        scale_bound: float = 5.0,
        activation: type[nn.Module] = nn.SiLU,
    ):
        super().__init__()
        if dim < 2:
            raise ValueError(f"AffineCoupling needs dim >= 2, got {dim}")
        mask = half_mask(dim) if mask is None else torch.as_tensor(mask, dtype=torch.bool)
        if mask.shape != (dim,) or mask.all() or not mask.any():
            raise ValueError(f"mask must be a boolean ({dim},) tensor with both True and False entries")
        self.dim, self.context_dim, self.scale_bound = dim, context_dim, scale_bound
        self.register_buffer("transformed", mask.nonzero().flatten())
        self.register_buffer("conditioning", (~mask).nonzero().flatten())
        n_t, n_c = len(self.transformed), len(self.conditioning)
        self.net = MLP(n_c + context_dim, 2 * n_t, hidden, activation)

    def _shift_and_log_scale(self, x_c: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        shift, raw = self.net(with_context(x_c, context)).chunk(2, dim=-1)
        log_scale = self.scale_bound * torch.tanh(raw / self.scale_bound)
        return shift, log_scale

    def _transform(self, x: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        check_batch(x, self.dim)
        context = check_context(context, x.shape[0], self.context_dim)
        shift, log_scale = self._shift_and_log_scale(x[:, self.conditioning], context)
        x_t = x[:, self.transformed]
        if inverse:
            y_t, logdet = (x_t - shift) * torch.exp(-log_scale), -log_scale.sum(-1)
        else:
            y_t, logdet = x_t * torch.exp(log_scale) + shift, log_scale.sum(-1)
        y = x.clone()
        y[:, self.transformed] = y_t
        return y, logdet

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._transform(x, context, inverse=False)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._transform(y, context, inverse=True)
