"""Invertible preprocessing of physics variables before a flow: per column a shape transform, then standardisation.

Column kinds (``y`` before standardisation):

* ``"identity"``: ``y = x`` (angles, η; φ stays linear here -- use a circular flow for it if it is morphed);
* ``"log"``: ``y = log x`` for momenta/energies (``x > 0`` required);
* ``("logit", lo, hi)`` (``"logit"`` means ``lo, hi = 0, 1``): ``t = (x − lo)/(hi − lo)`` clamped to
  ``[ε, 1 − ε]``, ``y = log t − log(1 − t)``; for bounded variables such as R9 ∈ (0, 1].  Exactly invertible
  inside the interval; values on a bound come back ``ε (hi − lo)`` inside it.
* ``"spike"`` (or ``("spike", at)``, default ``at = 0``): dequantisation of a point mass at ``at`` (isolation = 0
  for a fraction π₀ of the photons).  Values equal to ``at`` are replaced by ``at − δ U``, ``U ~ Uniform(0, 1]``,
  i.e. spread uniformly over ``[at − δ, at)`` below the continuous part; the inverse maps everything ``≤ at``
  back to exactly ``at``.  ``δ = π₀ m / (1 − π₀)`` with ``m`` the mean of ``x − at`` over ``x > at``: for an
  exponential tail the dequantised density is then continuous at ``at`` (height ``(1 − π₀)/m`` on both sides).
  Not a bijection (the spike has zero width), hence no Jacobian.
* ``"spike_asinh"`` (or ``("spike_asinh", at)``): the same spike, with a logarithmic tail for heavy, exponential-like
  continuous parts (isolation).  Values above the spike go to ``t = asinh((x − at)/m)`` (``m`` the fitted mean
  excess, stored in ``b``): linear near the spike, ``≈ log(2(x − at)/m)`` in the tail, so an exponential tail becomes
  a doubly-exponentially decaying one and the far-tail events land inside a flow's spline range instead of many
  standard deviations outside it (where the flow is an identity with a Gaussian latent, and the density ratio of
  two flows is uncontrolled).  Values on the spike are dequantised in ``t``: ``t = −δ U`` with ``δ = π₀/(1 − π₀)``
  (continuous density at 0 for an exponential tail, as above).  Jacobian ``−log m − ½ log(1 + ((x − at)/m)²)``
  above the spike, 0 on it.

Standardisation: ``(y − μ) / σ`` with (weighted) mean and standard deviation fitted on the transformed sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["PhysicsPreprocessor"]

_KINDS = ("identity", "log", "logit", "spike", "spike_asinh")


def _parse(kind: Any) -> tuple[str, float, float]:
    if isinstance(kind, str):
        kind = (kind,)
    name = kind[0]
    if name not in _KINDS:
        raise ValueError(f"unknown preprocessing kind {name!r}; choose from {_KINDS}")
    if name == "logit":
        lo, hi = (float(kind[1]), float(kind[2])) if len(kind) > 1 else (0.0, 1.0)
        if not hi > lo:
            raise ValueError(f"logit bounds must satisfy lo < hi, got {lo}, {hi}")
        return name, lo, hi
    if name in ("spike", "spike_asinh"):
        return name, float(kind[1]) if len(kind) > 1 else 0.0, 0.0
    return name, 0.0, 0.0


class PhysicsPreprocessor(nn.Module):
    """Column-wise invertible preprocessing ``x (n, d) -> y (n, d)``; fitted parameters are buffers (``state_dict``).

    Args:
        kinds: one entry per column (see the module docstring).
        names: optional column names used in error messages.
        eps: clamp of the logit argument.
    """

    def __init__(self, kinds: Sequence[Any], names: Sequence[str] | None = None, eps: float = 1e-6):
        super().__init__()
        parsed = [_parse(k) for k in kinds]
        if not parsed:
            raise ValueError("kinds must name at least one column")
        self.kinds = [p[0] for p in parsed]
        self.names = list(names) if names is not None else [f"x{i}" for i in range(len(parsed))]
        if len(self.names) != len(parsed):
            raise ValueError(f"{len(self.names)} names for {len(parsed)} columns")
        self.eps = float(eps)
        d = len(parsed)
        self.register_buffer("a", torch.tensor([p[1] for p in parsed], dtype=torch.float64))  # logit lo / spike at
        self.register_buffer("b", torch.tensor([p[2] for p in parsed], dtype=torch.float64))  # logit hi / asinh m
        self.register_buffer("delta", torch.zeros(d, dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(d, dtype=torch.float64))
        self.register_buffer("std", torch.ones(d, dtype=torch.float64))
        self.register_buffer("fitted", torch.tensor(False))

    @property
    def dim(self) -> int:
        return len(self.kinds)

    def _input(self, x) -> tuple[Tensor, bool]:
        is_np = not isinstance(x, Tensor)
        t = torch.as_tensor(np.asarray(x, dtype=np.float64)) if is_np else x
        if t.dim() != 2 or t.shape[1] != self.dim:
            raise ValueError(f"expected shape (batch, {self.dim}) for columns {self.names}, got {tuple(t.shape)}")
        return t, is_np

    def _shape(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        cols = []
        a, b, delta = (t.to(x) for t in (self.a, self.b, self.delta))
        for j, kind in enumerate(self.kinds):
            c = x[:, j]
            if kind == "log":
                c = torch.log(c)
            elif kind == "logit":
                t = ((c - a[j]) / (b[j] - a[j])).clamp(self.eps, 1 - self.eps)
                c = torch.log(t) - torch.log1p(-t)
            elif kind in ("spike", "spike_asinh"):
                dev = c.device if generator is None else generator.device
                u = 1.0 - torch.rand(c.shape, generator=generator, dtype=c.dtype, device=dev).to(c.device)
                if kind == "spike":
                    c = torch.where(c == a[j], a[j] - delta[j] * u, c)
                else:
                    c = torch.where(c == a[j], -delta[j] * u, torch.asinh((c - a[j]) / b[j]))
            cols.append(c)
        return torch.stack(cols, 1)

    def fit(self, x, weights=None, seed: int = 0) -> PhysicsPreprocessor:
        """Fit spike widths and standardisation on ``x (n, d)`` (optional weights ``(n,)``)."""
        t, _ = self._input(x)
        t = t.detach().to(torch.float64).cpu()
        if len(t) < 2:
            raise ValueError(f"fit needs at least 2 rows, got {len(t)}")
        w = torch.ones(len(t), dtype=torch.float64) if weights is None else torch.as_tensor(weights).double().cpu()
        if w.shape != (len(t),) or not w.sum() > 0:
            raise ValueError(f"weights must have shape ({len(t)},) with a positive total")
        for j, (kind, name) in enumerate(zip(self.kinds, self.names)):
            c = t[:, j]
            finite = torch.isfinite(c)
            if not finite.any():
                raise ValueError(f"column {name!r} is all NaN / non-finite")
            if kind == "log" and (c[finite] <= 0).any():
                raise ValueError(f"column {name!r}: 'log' needs x > 0, min is {c[finite].min().item():.4g}")
            if kind in ("spike", "spike_asinh"):
                at = self.a[j].item()
                if (c[finite] < at).any():
                    raise ValueError(f"column {name!r}: 'spike' at {at} needs x >= {at}")
                on, above = finite & (c == at), finite & (c > at)
                p0 = (w[on].sum() / w[finite].sum()).item()
                m = ((w[above] * (c[above] - at)).sum() / w[above].sum()).item() if above.any() else 1.0
                if kind == "spike":
                    self.delta[j] = p0 * m / max(1.0 - p0, 1e-12) if p0 > 0 else 0.0
                else:
                    self.b[j] = m if m > 0 else 1.0
                    self.delta[j] = p0 / max(1.0 - p0, 1e-12) if p0 > 0 else 0.0
        y = self._shape(t, torch.Generator().manual_seed(seed))
        ok = torch.isfinite(y).all(1)
        wn = w[ok] / w[ok].sum()
        mean = (wn[:, None] * y[ok]).sum(0)
        var = (wn[:, None] * (y[ok] - mean) ** 2).sum(0)
        std = var.sqrt()
        std[std <= 0] = 1.0
        self.mean.copy_(mean)
        self.std.copy_(std)
        self.fitted.fill_(True)
        return self

    def _require_fit(self) -> None:
        if not bool(self.fitted):
            raise RuntimeError("PhysicsPreprocessor must be fitted (fit(x)) before use")

    def forward(self, x, generator: torch.Generator | None = None):
        """``x (n, d) -> y (n, d)`` (numpy in, numpy out; tensors keep dtype and device)."""
        self._require_fit()
        t, is_np = self._input(x)
        y = (self._shape(t, generator) - self.mean.to(t)) / self.std.to(t)
        return y.numpy() if is_np else y

    def inverse(self, y):
        """``y (n, d) -> x (n, d)``; dequantised spikes return exactly to the spike value."""
        self._require_fit()
        t, is_np = self._input(y)
        t = t * self.std.to(t) + self.mean.to(t)
        a, b = self.a.to(t), self.b.to(t)
        cols = []
        for j, kind in enumerate(self.kinds):
            c = t[:, j]
            if kind == "log":
                c = torch.exp(c)
            elif kind == "logit":
                c = a[j] + (b[j] - a[j]) * torch.sigmoid(c)
            elif kind == "spike":
                c = torch.clamp(c, min=a[j])
            elif kind == "spike_asinh":
                c = a[j] + b[j] * torch.sinh(torch.clamp(c, min=0.0))
            cols.append(c)
        x = torch.stack(cols, 1)
        return x.numpy() if is_np else x

    def log_abs_det_jacobian(self, x) -> Tensor:
        """``log|det ∂y/∂x|`` per row ``(n,)`` of :meth:`forward` (spike columns contribute 0, see module doc)."""
        self._require_fit()
        t, _ = self._input(x)
        a, b = self.a.to(t), self.b.to(t)
        out = -torch.log(self.std.to(t)).sum().expand(len(t)).clone()
        for j, kind in enumerate(self.kinds):
            c = t[:, j]
            if kind == "log":
                out = out - torch.log(c)
            elif kind == "logit":
                s = (c - a[j]) / (b[j] - a[j])
                out = out - torch.log(b[j] - a[j]) - torch.log(s) - torch.log1p(-s)
            elif kind == "spike_asinh":
                u = (c - a[j]) / b[j]
                out = out + torch.where(c == a[j], torch.zeros_like(u), -torch.log(b[j]) - 0.5 * torch.log1p(u * u))
        return out

    def extra_repr(self) -> str:
        return ", ".join(f"{n}:{k}" for n, k in zip(self.names, self.kinds))
