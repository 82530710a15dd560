"""Coupling layers (Dinh et al., NICE 2015 / RealNVP ICLR 2017; Durkan et al., neural spline flows, NeurIPS 2019).

With a boolean ``mask`` selecting the transformed coordinates ``T`` and the conditioning ones ``C``::

    y_C = x_C,   y_T = τ(x_T; θ(x_C, c)),   log|det dy/dx| = sum_T log|τ'(x_T)|

for any elementwise :class:`~bgflow_sci.flows.transformers.Transformer` ``τ`` (affine: RealNVP; spline: NSF).
The conditioner sees domain-aware features of ``x_C``: circle coordinates as ``(cos φ, sin φ)`` (so the layer
is continuous across the seam and a proper map of the torus), interval coordinates rescaled to ``[-1, 1]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._checks import check_batch, check_context
from .affine import Affine
from .base import Flow
from .nets import MLP, with_context
from .transformers import Domain, Transformer, constant_like


def half_mask(dim: int, second: bool = True) -> Tensor:
    """Mask transforming the second (or first) half of ``dim`` coordinates."""
    mask = torch.zeros(dim, dtype=torch.bool)
    if second:
        mask[dim // 2 :] = True
    else:
        mask[: dim // 2] = True
    return mask


def coordinate_domains(transformer: Transformer, dim: int) -> list[Domain]:
    """The :class:`Domain` of each of ``dim`` coordinates as declared by ``transformer``.

    Reads ``transformer.domains`` (a sequence with one domain per coordinate, or one domain for all) or
    ``transformer.domain``; transformers declaring neither act on the real line.
    """
    declared = getattr(transformer, "domains", None)
    if declared is None:
        declared = getattr(transformer, "domain", None)
    if declared is None:
        return [Domain()] * dim
    if isinstance(declared, Domain):
        return [declared] * dim
    declared = list(declared)
    if len(declared) != dim:
        raise ValueError(f"the transformer declares {len(declared)} coordinate domains, the layer has dim={dim}")
    return declared


class DomainFeatures(nn.Module):
    """Conditioner input features ``(..., n) -> (..., n_features)`` that respect each coordinate's domain.

    Real: ``x``; interval ``[a, b]``: ``2 (x - a) / (b - a) - 1``; circle of period ``P`` starting at ``a``:
    ``cos φ, sin φ`` with ``φ = 2π (x - a) / P``.  ``owner[j]`` is the coordinate feature ``j`` comes from.
    """

    def __init__(self, domains: Sequence[Domain]):
        super().__init__()
        domains = list(domains)
        self.identity = all(d.kind == "real" for d in domains)
        owner, angle, scale, offset = [], [], [], []
        for i, d in enumerate(domains):
            if d.kind == "circle":
                owner += [i, i]
            else:
                owner.append(i)
            angle.append(d.kind == "circle")
            if d.kind == "real":
                scale.append(1.0), offset.append(0.0)
            elif d.kind == "interval":
                scale.append(2.0 / (d.high - d.low)), offset.append(-1.0 - 2.0 * d.low / (d.high - d.low))
            else:
                scale.append(2 * math.pi / (d.high - d.low)), offset.append(-2 * math.pi * d.low / (d.high - d.low))
        self.owner = owner
        self.n_features = len(owner)
        self._scale, self._offset = scale, offset  # exact Python floats (see constant_like)
        self.register_buffer("_angle", torch.tensor(angle, dtype=torch.bool), persistent=False)
        self.register_buffer("_index", torch.tensor(owner, dtype=torch.long), persistent=False)
        is_sin = [j > 0 and owner[j - 1] == o for j, o in enumerate(owner)]
        self.register_buffer("_is_sin", torch.tensor(is_sin, dtype=torch.bool), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.identity:
            return x
        u = x * constant_like(self._scale, x) + constant_like(self._offset, x)
        u = u.index_select(-1, self._index)
        angle = self._angle.index_select(0, self._index)
        return torch.where(angle, torch.where(self._is_sin, torch.sin(u), torch.cos(u)), u)


class Coupling(Flow):
    """Coupling layer with any elementwise transformer and an MLP conditioner that may take a context.

    Args:
        dim: event dimension (at least 2).
        transformer: the elementwise map ``τ``; if it declares one domain per coordinate, it describes all
            ``dim`` coordinates and the layer keeps the transformed ones (``transformer.restrict``).
        mask: boolean ``(dim,)``; ``True`` marks the transformed coordinates. Default: second half.
        hidden: hidden widths of the conditioner MLP (last layer zero: the layer starts as the identity).
        context_dim: width of the conditioning vector (0: unconditional).

    The conditioner output is laid out parameter-major: ``(batch, n_params, n_T)``.
    """

    def __init__(
        self,
        dim: int,
        transformer: Transformer,
        mask: Tensor | Sequence[bool] | None = None,
        hidden: Sequence[int] = (64, 64),
        context_dim: int = 0,
        activation: type[nn.Module] = nn.SiLU,
    ):
        super().__init__()
        name = type(self).__name__
        if dim < 2:
            raise ValueError(f"{name} needs dim >= 2, got {dim}")
        mask = half_mask(dim) if mask is None else torch.as_tensor(mask, dtype=torch.bool)
        if mask.shape != (dim,) or mask.all() or not mask.any():
            raise ValueError(f"mask must be a boolean ({dim},) tensor with both True and False entries")
        self.dim, self.context_dim = dim, context_dim
        domains = coordinate_domains(transformer, dim)
        self.register_buffer("transformed", mask.nonzero().flatten())
        self.register_buffer("conditioning", (~mask).nonzero().flatten())
        self.transformer = transformer.restrict(self.transformed)
        self.features = DomainFeatures([domains[i] for i in self.conditioning.tolist()])
        self.n_transformed = len(self.transformed)
        n_out = self.transformer.n_params * self.n_transformed
        self.net = MLP(self.features.n_features + context_dim, n_out, hidden, activation)

    def _params(self, x: Tensor, context: Tensor | None) -> Tensor:
        x_c = x.index_select(1, self.conditioning)
        out = self.net(with_context(self.features(x_c), context))
        return out.view(x.shape[0], self.transformer.n_params, self.n_transformed).transpose(1, 2)

    def _transform(self, x: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        check_batch(x, self.dim)
        context = check_context(context, x.shape[0], self.context_dim)
        params = self._params(x, context)
        x_t = x.index_select(1, self.transformed)
        y_t, ld = (self.transformer.inverse if inverse else self.transformer)(x_t, params)
        return x.index_copy(1, self.transformed, y_t), ld.sum(-1)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._transform(x, context, inverse=False)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._transform(y, context, inverse=True)


class AffineCoupling(Coupling):
    """RealNVP affine coupling: :class:`Coupling` with the :class:`~bgflow_sci.flows.affine.Affine` transformer.

    ``y_T = x_T exp(s(x_C, c)) + t(x_C, c)`` with log-scales soft-clamped to ``(-scale_bound, scale_bound)``.
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
        super().__init__(dim, Affine(scale_bound), mask, hidden, context_dim, activation)
        self.scale_bound = scale_bound
