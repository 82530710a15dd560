"""Masked autoregressive layers: MADE conditioners (Germain et al., ICML 2015) with any elementwise transformer.

In autoregressive order ``o`` each coordinate is transformed with parameters that depend only on the
coordinates earlier in the order (and on a context ``c``).  Two directions, in our convention
``forward = latent x -> sample y``:

* ``mode="maf"`` (Papamakarios, Pavlakou, Murray, NeurIPS 2017): ``y_i = τ(x_i; θ_i(y_{<i}, c))``.
  The conditioner reads the *sample* side, so ``inverse`` (``y -> x``, density evaluation, maximum-likelihood
  training) is **one pass**; ``forward`` (sampling) takes ``dim`` sequential passes.
* ``mode="iaf"`` (Kingma et al., NeurIPS 2016): ``y_i = τ(x_i; θ_i(x_{<i}, c))``.  The conditioner reads the
  *latent* side, so ``forward`` (sampling, reverse-KL training) is **one pass**; ``inverse`` takes ``dim``
  passes.

Either way the Jacobian ``dy/dx`` is triangular in the order and ``log|det| = Σ_i log|τ'(x_i)|``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from .._checks import check_batch, check_context
from .base import Flow
from .coupling import DomainFeatures, coordinate_domains
from .transformers import Transformer


class MaskedLinear(nn.Linear):
    """``nn.Linear`` whose weight is multiplied by a fixed 0/1 ``mask`` ``(out_features, in_features)``."""

    def __init__(self, mask: Tensor):
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return nnf.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Sequential):
    """Masked autoencoder conditioner: output ``j`` depends only on inputs of strictly smaller degree.

    Args:
        in_degrees: degree of each input (``0`` for context inputs, which every output may see).
        out_degrees: degree of each output; output ``j`` sees inputs with degree ``< out_degrees[j]``.
        hidden: hidden widths; hidden units get degrees cycling through ``[min_in, max_out - 1]``.
        zero_init: start the last layer at zero (the flow starts as the identity).
    """

    def __init__(
        self,
        in_degrees: Tensor,
        out_degrees: Tensor,
        hidden: Sequence[int] = (64, 64),
        activation: type[nn.Module] = nn.SiLU,
        zero_init: bool = True,
    ):
        low = int(in_degrees.min()) if len(in_degrees) else 0
        span = max(int(out_degrees.max()) - low, 1)
        layers: list[nn.Module] = []
        prev = in_degrees
        for h in hidden:
            deg = low + torch.arange(h) % span
            layers += [MaskedLinear(deg[:, None] >= prev[None, :]), activation()]
            prev = deg
        last = MaskedLinear(out_degrees[:, None] > prev[None, :])
        if zero_init:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        super().__init__(*layers)


class MaskedAutoregressive(Flow):
    """Autoregressive layer ``y_i = τ(x_i; θ_i(·_{<i}, c))`` with a MADE conditioner (see the module docstring).

    Args:
        dim: event dimension.
        transformer: elementwise map ``τ`` over all ``dim`` coordinates (any domains it declares are kept;
            circular coordinates enter the conditioner as ``(cos, sin)``).
        hidden: MADE hidden widths.
        context_dim: width of the conditioning vector (0: unconditional).
        order: ``order[i]`` is the 0-based rank of coordinate ``i`` in the autoregressive order
            (default ``0, 1, ..., dim - 1``).
        mode: ``"maf"`` (one-pass ``inverse``, fast density) or ``"iaf"`` (one-pass ``forward``, fast sampling).
    """

    def __init__(
        self,
        dim: int,
        transformer: Transformer,
        hidden: Sequence[int] = (64, 64),
        context_dim: int = 0,
        order: Sequence[int] | Tensor | None = None,
        mode: Literal["maf", "iaf"] = "maf",
        activation: type[nn.Module] = nn.SiLU,
    ):
        super().__init__()
        if mode not in ("maf", "iaf"):
            raise ValueError(f"mode must be 'maf' or 'iaf', got {mode!r}")
        rank = torch.arange(dim) if order is None else torch.as_tensor(order, dtype=torch.long)
        if rank.shape != (dim,) or not torch.equal(rank.sort().values, torch.arange(dim)):
            raise ValueError(f"order must be a permutation of range({dim}), got {rank.tolist()}")
        self.dim, self.context_dim, self.mode, self.transformer = dim, context_dim, mode, transformer
        self.register_buffer("order", rank)
        self.features = DomainFeatures(coordinate_domains(transformer, dim))
        degree = rank + 1
        in_degrees = torch.cat([degree[self.features.owner], torch.zeros(context_dim, dtype=torch.long)])
        out_degrees = degree.repeat(transformer.n_params)  # parameter-major layout (n_params, dim)
        self.net = MADE(in_degrees, out_degrees, hidden, activation)

    def _params(self, v: Tensor, context: Tensor | None) -> Tensor:
        h = self.features(v)
        if context is not None:
            h = torch.cat([h, context.to(h)], dim=-1)
        return self.net(h).view(v.shape[0], self.transformer.n_params, self.dim).transpose(1, 2)

    def _one_pass(self, v: Tensor, cond: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        params = self._params(cond, context)
        out, ld = (self.transformer.inverse if inverse else self.transformer)(v, params)
        return out, ld.sum(-1)

    def _sequential(self, v: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        # after pass k the first k coordinates in the order are exact; the conditioner reads the output side
        out = v
        for _ in range(self.dim):
            out, ld = self._one_pass(v, out, context, inverse)
        return out, ld

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_batch(x, self.dim)
        context = check_context(context, x.shape[0], self.context_dim)
        if self.mode == "iaf":
            return self._one_pass(x, x, context, inverse=False)
        return self._sequential(x, context, inverse=False)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_batch(y, self.dim)
        context = check_context(context, y.shape[0], self.context_dim)
        if self.mode == "maf":
            return self._one_pass(y, y, context, inverse=True)
        return self._sequential(y, context, inverse=True)
