"""Rational-quadratic spline transformer (Durkan, Bekasov, Murray, Papamakarios, NeurIPS 2019).

On ``[left, right]`` a monotonic spline with ``K`` bins has knots ``(x_k, y_k)``, ``k = 0..K``, and positive
knot derivatives ``d_k``.  In bin ``k`` with width ``w``, height ``h``, slope ``s = h / w`` and
``ξ = (x - x_k) / w``::

    y = y_k + h (s ξ² + d_k ξ(1-ξ)) / (s + (d_k + d_{k+1} - 2s) ξ(1-ξ))
    dy/dx = s² (d_{k+1} ξ² + 2s ξ(1-ξ) + d_k (1-ξ)²) / (s + (d_k + d_{k+1} - 2s) ξ(1-ξ))²

and the inverse is the root of a quadratic in ``ξ``, taken in the cancellation-free form
``ξ = 2c / (-b - sqrt(b² - 4ac))``.

Domains (per coordinate, :class:`~bgflow_sci.flows.transformers.Domain`):

* **interval** ``[low, high]``: the spline maps the interval onto itself, all ``K + 1`` knot derivatives are
  free.  Inputs outside the interval raise ``ValueError``.
* **circle** of period ``P = high - low``: the end derivatives are one shared parameter, so the map is a
  circle diffeomorphism.  Inputs are wrapped into ``[low, high)`` and the integer offset is added back,
  ``y(x + P) = y(x) + P``.
* **real** line: spline on ``[-bound, bound]`` with end derivatives fixed to 1 and identity tails outside.

Parameters per coordinate (``n_params``): ``K`` raw widths, ``K`` raw heights, then raw derivatives
(``K - 1`` interior ones, one more if any coordinate is a circle or interval, and another one if any is an
interval).  Widths/heights are ``min + (1 - K min) softmax(raw)`` and derivatives
``min_d + softplus(raw + log(e^{1 - min_d} - 1))``, so raw parameters equal to zero give the identity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as nnf
from torch import Tensor

from .._checks import checks_enabled
from .transformers import Domain, Transformer, constant_like

_KIND_CODE = {"real": 0, "interval": 1, "circle": 2}
_REAL = Domain()


def _unit_spline(u: Tensor, table: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
    """The spline on the unit box.

    ``u`` ``(...)`` in ``[0, 1]``; ``table`` ``(..., 6, K)`` from :func:`_table`.  Returns the image of ``u``
    and ``log dy/dx`` there (at the output point when ``inverse``).  One bin search and one gather fetch
    every quantity of the bin.
    """
    knots = table[..., int(inverse), 1:]  # interior knots (left edges of bins 1..K-1)
    k = (knots <= u.unsqueeze(-1)).sum(-1, keepdim=True)  # the bin index
    x0, y0, w, h, d0, d1 = table.gather(-1, k.unsqueeze(-2).expand(*k.shape[:-1], 6, 1)).squeeze(-1).unbind(-1)
    s = h / w
    two_s = 2 * s
    dsum = d0 + d1 - two_s
    if inverse:
        dy = u - y0
        sdy = s * dy
        a = torch.addcmul(h * (s - d0), dy, dsum)
        b = torch.addcmul(h * d0, dy, dsum, value=-1)
        # root in [0, 1] of a ξ² + b ξ - s dy = 0, in the form without cancellation
        xi = (2 * sdy / (b + torch.addcmul(b * b, a, sdy, value=4).clamp_min(0).sqrt())).clamp(0, 1)
        out = torch.addcmul(x0, xi, w)
    else:
        xi = ((u - x0) / w).clamp(0, 1)
    zeta = 1 - xi
    t = xi * zeta
    xi2 = xi * xi
    denom = torch.addcmul(s, dsum, t)
    if not inverse:
        out = y0 + h * torch.addcmul(s * xi2, d0, t) / denom
    ratio = s / denom
    # log dy/dx = log(s² (d1 ξ² + 2s ξ(1-ξ) + d0 (1-ξ)²) / denom²): log d0 at ξ = 0, log d1 at ξ = 1
    log_grad = torch.log(torch.addcmul(torch.addcmul(d1 * xi2, two_s, t), d0, zeta * zeta) * ratio * ratio)
    return out, log_grad


def _table(fractions: Tensor, derivatives: Tensor) -> Tensor:
    """Per-bin table ``(..., 6, K)``: left knot ``x``, left knot ``y``, width, height, left and right derivative.

    ``fractions`` ``(..., 2, K)``: bin widths and heights on the unit box; ``derivatives`` ``(..., K+1)``.
    """
    left = torch.cumsum(fractions, dim=-1) - fractions  # exclusive sums: the first left knot is exactly 0
    return torch.cat([left, fractions, derivatives[..., None, :-1], derivatives[..., None, 1:]], dim=-2)


def _unsqueeze(v: float | Tensor) -> float | Tensor:
    return v.unsqueeze(-1) if isinstance(v, Tensor) else v


def rational_quadratic_spline(
    x: Tensor,
    widths: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    left: float | Tensor = 0.0,
    right: float | Tensor = 1.0,
    bottom: float | Tensor = 0.0,
    top: float | Tensor = 1.0,
    inverse: bool = False,
) -> tuple[Tensor, Tensor]:
    """Monotonic rational-quadratic spline from already-constrained knots.

    Args:
        x: inputs ``(...)``, inside ``[left, right]`` (``[bottom, top]`` when ``inverse``); values outside are
            clamped, so callers handle tails themselves.
        widths: positive bin widths as fractions of ``right - left``, ``(..., K)``, summing to 1.
        heights: positive bin heights as fractions of ``top - bottom``, ``(..., K)``, summing to 1.
        derivatives: positive derivatives ``dy/dx`` at the ``K + 1`` knots, ``(..., K + 1)``.
        left, right, bottom, top: the box ``[left, right] x [bottom, top]``; floats or tensors broadcasting
            against ``x``.
        inverse: evaluate the inverse map ``y -> x`` instead.

    Returns:
        ``(y, log|dy/dx|)`` (or ``(x, log|dx/dy|)`` when ``inverse``), both of ``x``'s shape.
    """
    width, height = right - left, top - bottom
    ratio = height / width  # box aspect: unit-box derivatives are d / ratio
    lo_in, span_in, lo_out, span_out = (bottom, height, left, width) if inverse else (left, width, bottom, height)
    u = ((x - lo_in) / span_in).clamp(0, 1)
    table = _table(torch.stack([widths, heights], dim=-2), derivatives / _unsqueeze(ratio))
    out, log_grad = _unit_spline(u, table, inverse)
    log_grad = log_grad + (torch.log(ratio) if isinstance(ratio, Tensor) else math.log(ratio))
    return lo_out + span_out * out, (-log_grad if inverse else log_grad)


def _domain_list(domains: Domain | Sequence[Domain]) -> list[Domain] | None:
    if isinstance(domains, Domain):
        return None
    domains = list(domains)
    if not domains or not all(isinstance(d, Domain) for d in domains):
        raise ValueError("domains must be a Domain or a non-empty sequence of Domain objects, one per coordinate")
    return domains


class RationalQuadraticSpline(Transformer):
    """Elementwise rational-quadratic spline on the real line, intervals and circles (see the module docstring).

    Args:
        domains: one :class:`Domain` for every coordinate, or a sequence of them (one per coordinate, so that
            a mixed vector keeps each coordinate on its own domain).
        n_bins: number of bins ``K``.
        bound: the spline region ``[-bound, bound]`` of real-line coordinates (identity tails outside).
        min_bin_width, min_bin_height: smallest bin width / height as a fraction of the domain length.
        min_derivative: smallest knot derivative.

    ``forward(x, params)``: ``x`` ``(..., d)``, ``params`` ``(..., d, n_params)`` -> ``(y, log|dy/dx|)``.
    """

    def __init__(
        self,
        domains: Domain | Sequence[Domain] = _REAL,
        n_bins: int = 8,
        bound: float = 5.0,
        min_bin_width: float = 1e-3,
        min_bin_height: float = 1e-3,
        min_derivative: float = 1e-3,
    ):
        super().__init__()
        if n_bins < 1:
            raise ValueError(f"n_bins must be positive, got {n_bins}")
        if not bound > 0:
            raise ValueError(f"bound must be positive, got {bound}")
        if min_bin_width * n_bins >= 1 or min_bin_height * n_bins >= 1:
            raise ValueError("min_bin_width * n_bins and min_bin_height * n_bins must be below 1")
        if not 0 <= min_derivative < 1:
            raise ValueError(f"min_derivative must be in [0, 1), got {min_derivative}")
        self.n_bins, self.bound = int(n_bins), float(bound)
        self.min_bin_width, self.min_bin_height, self.min_derivative = min_bin_width, min_bin_height, min_derivative
        self._deriv_shift = math.log(math.expm1(1.0 - min_derivative))

        per_coord = _domain_list(domains)
        self.domain = domains if per_coord is None else None
        self.domains = per_coord if per_coord is not None else domains
        kinds = {d.kind for d in (per_coord or [domains])}
        self._any_circle, self._any_interval = "circle" in kinds, "interval" in kinds
        self._all_same = len(kinds) == 1
        self._kind = next(iter(kinds)) if self._all_same else "mixed"
        self.n_derivatives = self.n_bins - 1 + int(self._any_circle or self._any_interval) + int(self._any_interval)
        self.n_params = 2 * self.n_bins + self.n_derivatives

        if per_coord is not None:
            codes = torch.tensor([_KIND_CODE[d.kind] for d in per_coord])
            low = torch.tensor([d.low if d.kind != "real" else -bound for d in per_coord], dtype=torch.float64)
            high = torch.tensor([d.high if d.kind != "real" else bound for d in per_coord], dtype=torch.float64)
            self.register_buffer("_codes", codes, persistent=False)
            self._low = low.tolist()  # exact Python floats, see constant_like
            self._width = [d.high - d.low if d.kind != "real" else 2 * self.bound for d in per_coord]
            # same-kind per-coordinate domains with equal bounds collapse to the scalar fast path
            if self._all_same and len(set(low.tolist())) == 1 and len(set(high.tolist())) == 1:
                self._scalar = (low[0].item(), high[0].item())
            else:
                self._scalar = None
        else:
            d = domains
            self._scalar = (d.low, d.high) if d.kind != "real" else (-self.bound, self.bound)

    def extra_repr(self) -> str:
        return f"domains={self.domains}, n_bins={self.n_bins}, bound={self.bound}"

    def restrict(self, index: Sequence[int] | Tensor) -> RationalQuadraticSpline:
        """The same spline on the coordinates ``index`` only (used by coupling layers)."""
        if self.domain is not None:
            return self
        index = torch.as_tensor(index, dtype=torch.long).tolist()
        sub = RationalQuadraticSpline(
            [self.domains[i] for i in index],
            self.n_bins,
            self.bound,
            self.min_bin_width,
            self.min_bin_height,
            self.min_derivative,
        )
        return sub.to(self._codes.device)

    # ---- parameters --------------------------------------------------------------------------------------
    def _spline_table(self, params: Tensor) -> Tensor:
        """Raw parameters ``(..., n_params)`` -> the unit-box table ``(..., 6, K)`` (see :func:`_table`)."""
        if params.shape[-1] != self.n_params:
            raise ValueError(f"params must have shape (..., d, {self.n_params}), got {tuple(params.shape)}")
        k = self.n_bins
        fractions = torch.softmax(params[..., : 2 * k].unflatten(-1, (2, k)), dim=-1)
        if self.min_bin_width == self.min_bin_height:
            fractions = self.min_bin_width + (1 - k * self.min_bin_width) * fractions
        else:
            mins = constant_like([self.min_bin_width, self.min_bin_height], params).unsqueeze(-1)
            fractions = mins + (1 - k * mins) * fractions
        d = self.min_derivative + nnf.softplus(params[..., 2 * k :] + self._deriv_shift)
        inner = d[..., : k - 1]
        if self._kind == "real":  # end derivatives 1: C^1 joins to the identity tails
            derivs = nnf.pad(inner, (1, 1), value=1.0)
        elif self._kind == "circle":  # one shared end derivative: C^1 across the seam
            end = d[..., k - 1 : k]
            derivs = torch.cat([end, inner, end], dim=-1)
        elif self._kind == "interval":
            derivs = torch.cat([d[..., k - 1 : k], inner, d[..., k : k + 1]], dim=-1)
        else:  # mixed: end derivatives per coordinate kind
            codes = self._codes.unsqueeze(-1)
            ones = torch.ones_like(inner[..., :1])
            first = d[..., k - 1 : k]
            last = d[..., k : k + 1] if self._any_interval else first
            start = torch.where(codes == 0, ones, first)
            stop = torch.where(codes == 1, last, torch.where(codes == 2, first, ones))
            derivs = torch.cat([start, inner, stop], dim=-1)
        return _table(fractions, derivs)

    # ---- domain handling ---------------------------------------------------------------------------------
    def _bounds(self, x: Tensor) -> tuple[float | Tensor, float | Tensor]:
        """``(low, width)`` of the spline box of each coordinate: floats, or ``(d,)`` tensors when mixed."""
        if self._scalar is not None:
            return self._scalar[0], self._scalar[1] - self._scalar[0]
        return constant_like(self._low, x), constant_like(self._width, x)

    def _validate(self, x: Tensor, name: str) -> None:
        if self.domain is None and x.shape[-1] != len(self._low):
            raise ValueError(
                f"this spline has {len(self._low)} coordinates; {name} must have shape (..., {len(self._low)})"
            )
        if x.numel() == 0 or not checks_enabled():
            return
        ok = torch.isfinite(x)
        if self._any_interval:
            low, width = self._bounds(x)
            tol = 64 * torch.finfo(x.dtype).eps * width
            inside = (x >= low - tol) & (x <= low + width + tol)
            if self.domain is not None:
                ok = ok & inside
            else:
                ok = ok & (inside | (self._codes != 1))
        if not bool(ok.all()):  # one host sync per call
            if not torch.isfinite(x).all():
                raise ValueError(f"{name} contains non-finite values (NaN or inf)")
            raise ValueError(f"{name} has values outside the interval domain(s) {self.domains}")

    def _map(self, x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        if params.shape[:-1] != x.shape:
            raise ValueError(f"params must have shape {tuple(x.shape) + (self.n_params,)}, got {tuple(params.shape)}")
        self._validate(x, "y" if inverse else "x")
        table = self._spline_table(params)
        low, width = self._bounds(x)
        u = (x - low) / width
        if self._kind == "real":
            v = u.clamp(0, 1)
            out, ld = _unit_spline(v, table, inverse)
            # identity tails outside [-bound, bound]; there v sits on an end knot of derivative 1, so
            # ld is 0 (up to rounding of the last knot) with zero gradient, and needs no masking
            return torch.where(v == u, low + width * out, x), (-ld if inverse else ld)
        if self._kind == "interval":
            out, ld = _unit_spline(u.clamp(0, 1), table, inverse)
            return low + width * out.clamp(0, 1), (-ld if inverse else ld)
        if self._kind == "circle":  # wrap into one period, keep the integer number of periods
            turns = torch.floor(u)
            out, ld = _unit_spline((u - turns).clamp(0, 1), table, inverse)
            return low + width * (out + turns), (-ld if inverse else ld)
        # mixed domains
        codes = self._codes
        turns = torch.where(codes == 2, torch.floor(u), torch.zeros_like(u))
        v = (u - turns).clamp(0, 1)
        out, ld = _unit_spline(v, table, inverse)
        ld = -ld if inverse else ld
        out = torch.where(codes == 1, out.clamp(0, 1), out)
        tail = (codes == 0) & (v != u)  # real-line tails: identity (ld is 0 there, see above)
        return torch.where(tail, x, low + width * (out + turns)), ld

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """``y = τ(x)`` and ``log|dy/dx|``, elementwise; ``x`` ``(..., d)``, ``params`` ``(..., d, n_params)``."""
        return self._map(x, params, inverse=False)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """``x = τ⁻¹(y)`` and ``log|dx/dy|``, elementwise."""
        return self._map(y, params, inverse=True)
