"""Smooth (C^∞) mixture transformer on intervals and circles (Köhler, Krämer, Noé, "Smooth normalizing flows",
NeurIPS 2021).

On the unit coordinate ``u = (x - low) / (high - low)`` the building blocks are::

    ramp       ρ(z) = exp(α (1 - 1/z^β))  (z > 0),  ρ(z) = 0  (z ≤ 0)
    sigmoid    σ(z) = ρ(z) / (ρ(z) + ρ(1 - z)) = sigmoid(α (1/(1-z)^β - 1/z^β))   on (0, 1),
               σ = 0 for z ≤ 0 and 1 for z ≥ 1 — C^∞, every derivative vanishes at both ends.

(Evaluated in the centred form ``σ(½ + δ) - ½ = ½ tanh(αδ / (¼ - δ²)^β)``, exact for β = 1, 2, which keeps
full precision for small slopes.)

Per coordinate there are ``K`` components with weight ``π_k`` (softmax), slope ``s_k``, location ``μ_k`` and
ramp sharpness ``α_k`` (``β`` is a fixed option, 1 or 2):

* **interval**: ``z_k = s_k (u - μ_k) + ½`` and ``y_k(u) = (σ(z_k(u)) - σ(z_k(0))) / (σ(z_k(1)) - σ(z_k(0)))``
  (clipped to the window and renormalised), so ``y_k(0) = 0`` and ``y_k(1) = 1`` exactly;
  ``μ_k ∈ (0, 1)``, ``s_k ∈ [s_min, s_max]``.
* **circle** (period 1 in ``u``): with ``n = ⌊u - μ_k⌋`` and ``v = u - μ_k - n ∈ [0, 1)``,
  ``y_k(u) = μ_k + n + σ(s_k (v - ½) + ½)``.  For ``s_k ≥ 1`` the sigmoid is flat at ``v = 0, 1``, so ``y_k`` is
  a C^∞ lift of a circle map, ``y_k(u + 1) = y_k(u) + 1``; ``s_k ∈ [1, s_max]``, ``μ_k`` is any real number.

The mixture ``Y = Σ_k π_k y_k`` is mixed with the identity, ``y = u + (1 - ε)(Y - u)``, so that
``dy/du = ε + (1 - ε) Σ_k π_k y_k' ≥ ε > 0`` (``ε`` a fixed constant).  The log-derivative is analytic.

Domains (``Domain`` per coordinate): an interval ``[low, high]`` maps onto itself with the end points fixed
exactly (inputs outside raise ``ValueError``); on a circle of period ``P`` inputs are wrapped into
``[low, high)`` and the integer number of periods is added back, ``y(x + P) = y(x) + P`` (the convention of
the circle splines).  Real-line coordinates are not supported (a coupling layer may declare them for its
conditioning coordinates; they must not be transformed).

Inputs that are not finite raise ``ValueError`` (as for the splines).

**Inverse** by bracketed root finding, vectorised over all elements: safeguarded Newton on the bracket
``[0, 1]`` (bisection whenever Newton would leave the current bracket or fails to halve the step of two
iterations before, as in Numerical Recipes' ``rtsafe``), until the Newton estimate of the error in ``u``,
``|y(u) - t| / y'(u)``, is at most ``tol`` (or the residual is at the rounding floor of the dtype), then one
final Newton step.  If that does not happen within ``max_iter`` iterations a :class:`RootFindingError` reports
the largest residual — the inverse is never silently wrong.  Gradients of the inverse come from the inverse
function theorem in a custom autograd function whose backward is itself differentiable (double backward, as
force matching needs).

**Initialisation**: raw parameters equal to zero give uniform weights, evenly spaced locations
``μ_k = (k + ½)/K`` and default slopes / sharpnesses chosen to make the mixture as close to the identity as
this family allows (no member is exactly the identity): ``max |y(u) - u|`` is about ``1e-3`` on intervals and
``1e-4`` on circles with ``K = 8`` (measured; see ``tests/flows/test_smooth.py``).

Parameters per coordinate (``n_params = 4K``, or ``3K`` with ``learn_alpha=False``):
``[logits (K), raw slopes (K), raw locations (K), raw sharpnesses (K)]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from .transformers import Domain, Transformer

# defaults for raw parameters = 0, per beta: (interval sharpness, interval slope, circle sharpness, circle slope);
# chosen by scanning max |y(u) - u| of the K = 8 mixture at evenly spaced locations
_DEFAULTS = {1: (0.75, 0.2, 1.25, 1.25), 2: (0.25, 0.2, 0.45, 1.25)}


class _Mix(NamedTuple):
    """Mixture parameters ``(..., d, K)`` of one domain kind; ``sig0``/``span``: interval window (else None)."""

    pi: Tensor
    slope: Tensor
    mu: Tensor
    alpha: Tensor
    sig0: Tensor | None
    span: Tensor | None


class RootFindingError(RuntimeError):
    """The inverse did not converge to the requested tolerance within ``max_iter`` iterations."""


def _log_bounded(raw: Tensor, low: float, high: float, default: float) -> Tensor:
    """``low * (high / low) ** sigmoid(raw + c)`` with ``c`` such that ``raw = 0`` gives ``default``."""
    span = math.log(high / low)
    frac = math.log(default / low) / span
    return low * torch.exp(span * torch.sigmoid(raw + math.log(frac / (1.0 - frac))))


class SmoothMixture(Transformer):
    """C^∞ mixture-of-smooth-sigmoids transformer on intervals and circles (see the module docstring).

    Args:
        domains: one :class:`Domain` (interval or circle) for every coordinate, or one per coordinate.
        n_components: number of mixture components ``K``.
        beta: ramp exponent ``β`` (1 or 2), fixed.
        eps: weight ``ε`` of the identity in the final mixture; ``dy/du ≥ ε``.
        learn_alpha: sharpness ``α_k`` from the parameters (else fixed at its default).
        slope_bounds: ``(s_min, s_max)`` of interval slopes; circle slopes lie in ``[1, s_max]``.
        alpha_bounds: range of ``α``.
        tol: tolerance of the inverse on the error in the unit coordinate ``u`` (a fraction of the domain
            length); default ``1e-10`` in float64, ``1e-6`` in float32, ``1e-3`` otherwise.
        max_iter: Newton/bisection iterations before :class:`RootFindingError`.

    ``forward(x, params)``: ``x`` ``(..., d)``, ``params`` ``(..., d, n_params)`` -> ``(y, log dy/dx)``.
    """

    def __init__(
        self,
        domains: Domain | Sequence[Domain],
        n_components: int = 8,
        beta: int = 1,
        eps: float = 0.01,
        learn_alpha: bool = True,
        slope_bounds: tuple[float, float] = (0.05, 100.0),
        alpha_bounds: tuple[float, float] = (0.2, 5.0),
        tol: float | None = None,
        max_iter: int = 100,
    ):
        super().__init__()
        if n_components < 1:
            raise ValueError(f"n_components must be positive, got {n_components}")
        if beta not in (1, 2):
            raise ValueError(f"beta must be 1 or 2, got {beta}")
        if not 0 < eps < 1:
            raise ValueError(f"eps must be in (0, 1), got {eps}")
        defaults = _DEFAULTS[beta]
        s_min, s_max = slope_bounds
        a_min, a_max = alpha_bounds
        if not (0 < s_min < defaults[1] and defaults[3] < s_max):
            raise ValueError(f"slope_bounds must satisfy 0 < s_min < {defaults[1]} and s_max > {defaults[3]}")
        if not (0 < a_min < min(defaults[0], defaults[2]) and max(defaults[0], defaults[2]) < a_max <= 10):
            raise ValueError(f"alpha_bounds must contain {defaults[0]} and {defaults[2]} and stay in (0, 10]")
        if tol is not None and not tol > 0:
            raise ValueError(f"tol must be positive, got {tol}")
        if max_iter < 1:
            raise ValueError(f"max_iter must be at least 1, got {max_iter}")
        self.n_components, self.beta, self.eps, self.learn_alpha = int(n_components), int(beta), float(eps), learn_alpha
        self.slope_bounds, self.alpha_bounds = (float(s_min), float(s_max)), (float(a_min), float(a_max))
        self.tol, self.max_iter = tol, int(max_iter)
        self.n_params = (4 if learn_alpha else 3) * self.n_components

        if isinstance(domains, Domain):
            per_coord = None
        else:
            per_coord = list(domains)
            if not per_coord or not all(isinstance(d, Domain) for d in per_coord):
                raise ValueError("domains must be a Domain or a non-empty sequence of Domain objects")
        self.domain = domains if per_coord is None else None
        self.domains = per_coord if per_coord is not None else domains
        listed = per_coord or [domains]
        if per_coord is None and domains.kind == "real":
            raise ValueError("SmoothMixture acts on interval or circle domains, not on the real line")
        self._real = [i for i, d in enumerate(listed) if d.kind == "real"] if per_coord is not None else []
        kinds = {d.kind for d in listed if d.kind != "real"}
        self._kind = next(iter(kinds)) if len(kinds) == 1 else ("mixed" if kinds else "none")
        bounds = {(d.low, d.high) for d in listed if d.kind != "real"}
        if per_coord is None or (len(kinds) == 1 and len(bounds) == 1 and not self._real):
            self._scalar: tuple[float, float] | None = next(iter(bounds))
        else:
            self._scalar = None
        # per-coordinate bounds (float64; cast to the input's dtype when used); real coordinates get [0, 1]
        low = [d.low if d.kind != "real" else 0.0 for d in listed]
        high = [d.high if d.kind != "real" else 1.0 for d in listed]
        self.register_buffer("_low", torch.tensor(low, dtype=torch.float64), persistent=False)
        self.register_buffer("_high", torch.tensor(high, dtype=torch.float64), persistent=False)
        self.register_buffer("_circle", torch.tensor([d.kind == "circle" for d in listed]), persistent=False)
        locs = (torch.arange(self.n_components, dtype=torch.float64) + 0.5) / self.n_components
        self.register_buffer("_loc0", locs, persistent=False)

    def extra_repr(self) -> str:
        return (
            f"domains={self.domains}, n_components={self.n_components}, beta={self.beta}, eps={self.eps}, "
            f"learn_alpha={self.learn_alpha}"
        )

    def restrict(self, index: Sequence[int] | Tensor) -> SmoothMixture:
        """The same transformer on the coordinates ``index`` only (used by coupling layers)."""
        if self.domain is not None:
            return self
        index = torch.as_tensor(index, dtype=torch.long).tolist()
        sub = SmoothMixture(
            [self.domains[i] for i in index],
            self.n_components,
            self.beta,
            self.eps,
            self.learn_alpha,
            self.slope_bounds,
            self.alpha_bounds,
            self.tol,
            self.max_iter,
        )
        return sub.to(self._low.device)

    # ---- building blocks ---------------------------------------------------------------------------------
    def _sigmoid(self, delta: Tensor, alpha: Tensor) -> tuple[Tensor, Tensor]:
        """Centred smooth sigmoid ``g(δ) = σ(½ + δ) - ½`` and ``dg/dδ``.

        With ``z = ½ + δ``: ``α (1/(1-z)^β - 1/z^β) = 2αδ / (¼ - δ²)^β`` for β = 1, 2, and ``σ - ½ = ½ tanh(h/2)``;
        working with ``δ`` keeps full relative precision for small slopes (no cancellation around ``σ = ½``).
        ``g = ±½`` exactly where ``σ`` or ``1 - σ`` is below the dtype's smallest normal number.
        """
        beta = self.beta
        cut = -math.log(torch.finfo(delta.dtype).tiny)
        z_cut = (alpha / cut) ** (1.0 / beta)  # σ(z_cut) ≈ exp(α - cut): zero for the dtype
        inside = delta.abs() < 0.5 - z_cut
        d = torch.where(inside, delta, 0.0)  # a safe argument keeps every derivative finite outside
        q = (0.5 - d) * (0.5 + d)  # ¼ - δ² = z (1 - z)
        h = 2 * alpha * d / q.pow(beta)
        dh = 2 * alpha * (q + 2 * beta * d * d) / q.pow(beta + 1)
        g = 0.5 * torch.tanh(0.5 * h)
        dg = torch.sigmoid(h) * torch.sigmoid(-h) * dh
        return torch.where(inside, g, 0.5 * torch.sign(delta)), torch.where(inside, dg, 0.0)

    def _components(self, params: Tensor, circle: bool) -> _Mix:
        """Mixture parameters of one domain kind, each ``(..., d, K)``; interval windows precomputed."""
        k = self.n_components
        alpha0, slope0 = _DEFAULTS[self.beta][2:] if circle else _DEFAULTS[self.beta][:2]
        pi = torch.softmax(params[..., :k], dim=-1)
        raw_s, raw_mu = params[..., k : 2 * k], params[..., 2 * k : 3 * k]
        loc0 = self._loc0.to(params)
        if circle:
            slope = _log_bounded(raw_s, 1.0, self.slope_bounds[1], slope0)
            mu = torch.remainder(loc0 + raw_mu, 1.0)  # each component is invariant under μ -> μ + 1
        else:
            slope = _log_bounded(raw_s, self.slope_bounds[0], self.slope_bounds[1], slope0)
            mu = torch.sigmoid(torch.logit(loc0) + raw_mu)
        if self.learn_alpha:
            alpha = _log_bounded(params[..., 3 * k :], self.alpha_bounds[0], self.alpha_bounds[1], alpha0)
        else:
            alpha = torch.full_like(slope, alpha0)
        if circle:
            return _Mix(pi, slope, mu, alpha, None, None)
        # the same expression as in _unit_kind at u = 0 and u = 1, so that y(0) = 0 and y(1) = 1 exactly
        sig0, _ = self._sigmoid(slope * (0.0 - mu), alpha)
        sig1, _ = self._sigmoid(slope * (1.0 - mu), alpha)
        return _Mix(pi, slope, mu, alpha, sig0, sig1 - sig0)

    def _prepare(self, params: Tensor) -> tuple[_Mix | None, _Mix | None]:
        """Components for the interval and the circle coordinates (``None`` where there are none)."""
        interval = self._components(params, False) if self._kind in ("interval", "mixed") else None
        circle = self._components(params, True) if self._kind in ("circle", "mixed") else None
        return interval, circle

    def _unit_kind(self, u: Tensor, m: _Mix) -> tuple[Tensor, Tensor]:
        """Lifted map ``y(u)`` and ``dy/du`` on unit coordinates, all coordinates of one kind."""
        uu = u.unsqueeze(-1)
        if m.sig0 is None:  # circle
            shifted = uu - m.mu
            n = torch.floor(shifted)
            sig, dsig = self._sigmoid(m.slope * (shifted - n - 0.5), m.alpha)
            yk, dyk = m.mu + n + 0.5 + sig, m.slope * dsig
        else:
            sig, dsig = self._sigmoid(m.slope * (uu - m.mu), m.alpha)
            yk, dyk = (sig - m.sig0) / m.span, m.slope * dsig / m.span
        norm = m.pi.sum(-1)  # dividing by Σπ (≈ 1) makes y(1) = 1 exactly on intervals
        mix, dmix = (m.pi * yk).sum(-1) / norm, (m.pi * dyk).sum(-1) / norm
        return u + (1.0 - self.eps) * (mix - u), self.eps + (1.0 - self.eps) * dmix

    def _unit(self, u: Tensor, mix: tuple[_Mix | None, _Mix | None]) -> tuple[Tensor, Tensor]:
        interval, circle = mix
        if circle is None:
            return self._unit_kind(u, interval)
        if interval is None:
            return self._unit_kind(u, circle)
        y_i, d_i = self._unit_kind(u, interval)
        y_c, d_c = self._unit_kind(u, circle)
        return torch.where(self._circle, y_c, y_i), torch.where(self._circle, d_c, d_i)

    # ---- domain handling ---------------------------------------------------------------------------------
    def _bounds(self, x: Tensor) -> tuple[float | Tensor, float | Tensor]:
        if self._scalar is not None:
            return self._scalar
        return self._low.to(x), self._high.to(x)

    def _validate(self, x: Tensor, params: Tensor, name: str) -> None:
        if params.shape[-1] != self.n_params or params.shape[:-1] != x.shape:
            raise ValueError(
                f"params must have shape {tuple(x.shape) + (self.n_params,)} (..., d, n_params), "
                f"got {tuple(params.shape)}"
            )
        if self.domain is None and x.shape[-1] != len(self.domains):
            raise ValueError(
                f"this transformer has {len(self.domains)} coordinates; {name} must have shape (..., "
                f"{len(self.domains)}), got {tuple(x.shape)}"
            )
        if self._real:
            raise ValueError(
                f"SmoothMixture cannot transform real-line coordinates {self._real}; restrict it to interval and "
                "circle coordinates (e.g. with a coupling mask)"
            )
        if x.numel() == 0:
            return
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains non-finite values (NaN or inf)")
        if self._kind in ("interval", "mixed"):
            low, high = self._bounds(x)
            slack = 64 * torch.finfo(x.dtype).eps * (high - low)
            outside = (x < low - slack) | (x > high + slack)
            if self._kind == "mixed":
                outside = outside & ~self._circle
            if bool(outside.any()):
                raise ValueError(f"{name} has values outside the interval domain(s) {self.domains}")

    def _to_unit(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Unit coordinate (circles wrapped into [0, 1)) and the whole periods removed, in units of x."""
        low, high = self._bounds(x)
        u = (x - low) / (high - low)
        if self._kind == "interval":
            return u.clamp(0.0, 1.0), torch.zeros_like(x)
        wrapped = torch.remainder(u, 1.0)
        offset = (u - wrapped) * (high - low)
        if self._kind == "circle":
            return wrapped, offset
        circle = self._circle
        return torch.where(circle, wrapped, u.clamp(0.0, 1.0)), torch.where(circle, offset, 0.0)

    def _from_unit(self, y: Tensor, like: Tensor) -> Tensor:
        """Map unit coordinates back; ``low (1 - y) + high y`` keeps interval end points exact."""
        low, high = self._bounds(like)
        return low * (1.0 - y) + high * y

    def _lifted(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """``y = τ(x)`` without re-wrapping circle outputs, and ``log dy/dx`` (x assumed valid)."""
        u, offset = self._to_unit(x)
        y, dy = self._unit(u, self._prepare(params))
        return self._from_unit(y, x) + offset, torch.log(dy)

    # ---- public API --------------------------------------------------------------------------------------
    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """``y = τ(x)`` and the analytic ``log dy/dx``, elementwise; ``x`` ``(..., d)``, ``params`` ``(..., d, P)``."""
        self._validate(x, params, "x")
        y, log_dy = self._lifted(x, params)
        if self._kind != "interval":  # circle outputs: back into [low, high) plus the input's periods
            y = y - self._circle_excess(y, x)
        return y, log_dy

    def _circle_excess(self, y: Tensor, x: Tensor) -> Tensor:
        """Whole periods by which a lifted circle output leaves the input's period cell ``[low, high) + offset``."""
        low, high = self._bounds(x)
        period = high - low
        _, offset = self._to_unit(x)
        excess = torch.floor((y - offset - low) / period) * period
        if self._kind == "mixed":
            excess = torch.where(self._circle, excess, 0.0)
        return excess

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """``x = τ⁻¹(y)`` by bracketed Newton and ``log dx/dy = -log τ'(x)``; differentiable to second order."""
        self._validate(y, params, "y")
        return _SmoothInverse.apply(self, y, params)

    # ---- root finding ------------------------------------------------------------------------------------
    def _tolerance(self, dtype: torch.dtype) -> float:
        if self.tol is not None:
            return self.tol
        return {torch.float64: 1e-10, torch.float32: 1e-6}.get(dtype, 1e-3)

    @torch.no_grad()
    def _solve(self, y: Tensor, params: Tensor) -> Tensor:
        """Root ``x`` of ``τ(x) = y`` (no graph); raises :class:`RootFindingError` if not converged."""
        t, offset = self._to_unit(y)
        mix = self._prepare(params)
        if self._kind != "interval":
            # circle: the lifted map sends [0, 1] onto [c, c + 1] with c = y(0); lift the target into it
            c, _ = self._unit(torch.zeros_like(t), mix)
            lifted = c + torch.remainder(t - c, 1.0)
            t = lifted if self._kind == "circle" else torch.where(self._circle, lifted, t)
        else:
            c = torch.zeros_like(t)
        tol = self._tolerance(y.dtype)
        floor = 32 * torch.finfo(y.dtype).eps * (1.0 + t.abs())  # residual at the rounding level of the dtype
        lo, hi = torch.zeros_like(t), torch.ones_like(t)
        step, step_before = torch.ones_like(t), torch.ones_like(t)
        u = (t - c).clamp(0.0, 1.0)  # exact for a pure rotation / the identity
        for it in range(self.max_iter + 1):
            f, df = self._unit(u, mix)
            r = f - t
            done = (r.abs() <= tol * df) | (r.abs() <= floor)
            newton_step = r / df
            newton = u - newton_step
            if bool(done.all()):
                u = torch.where((newton >= lo) & (newton <= hi), newton, u)  # final polishing step
                break
            if it == self.max_iter:
                err = (r.abs() / df)[~done]
                raise RootFindingError(
                    f"SmoothMixture inverse did not converge in {self.max_iter} iterations: {int((~done).sum())} "
                    f"element(s) left, max residual {float(r.abs()[~done].max()):.3e}, max estimated error "
                    f"{float(err.max()):.3e} (tol {tol:.1e}, in units of the domain length)"
                )
            lo = torch.where(r < 0, u, lo)
            hi = torch.where(r > 0, u, hi)
            # Newton unless it leaves the bracket or does not at least halve the step of two iterations ago
            # (rtsafe, Numerical Recipes §9.4): then bisect
            bisect = (newton < lo) | (newton > hi) | (2 * newton_step.abs() > step_before.abs())
            step_before = step
            step = torch.where(bisect, 0.5 * (hi - lo), newton_step)
            u = torch.where(done, u, torch.where(bisect, 0.5 * (lo + hi), newton))  # converged ones stay put
        if self._kind != "interval":  # a root at u = 1 is the point u = 0 of the next period
            at_end = u >= 1.0
            if self._kind == "mixed":
                at_end = at_end & self._circle
            u = torch.where(at_end, u - 1.0, u)
        return self._from_unit(u, y) + offset


def _alias(t: Tensor, create_graph: bool) -> Tensor:
    """A differentiable stand-in for ``t``: a view keeps the outer graph (double backward), else a fresh leaf."""
    if create_graph and t.requires_grad:
        return t.view_as(t)
    return t.detach().requires_grad_(True)


class _SmoothInverse(torch.autograd.Function):
    """``(x, -ℓ) = (τ⁻¹(y; θ), -log τ'(x; θ))`` with inverse-function-theorem gradients.

    With ``w = (ḡ_x - ḡ_ℓ ∂ₓℓ) / τ'`` for output cotangents ``ḡ_x`` (of ``x``) and ``ḡ_ℓ`` (of ``-ℓ``)::

        ḡ_y = w,    ḡ_θ = -(w ∂_θτ + ḡ_ℓ ∂_θℓ)

    i.e. ``dx/dy = 1/τ'``, ``dx/dθ = -∂_θτ/τ'``, ``d(-ℓ)/dy = -∂ₓℓ/τ'``, ``d(-ℓ)/dθ = -∂_θℓ - ∂ₓℓ dx/dθ``.
    The partial derivatives are autograd products at the root ``x``, which is saved as an output: in double
    backward ``x`` carries its own dependence on ``(y, θ)`` through this function again.
    """

    @staticmethod
    def forward(ctx, transformer: SmoothMixture, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:  # noqa: D102
        x = transformer._solve(y, params)
        with torch.no_grad():
            _, log_dy = transformer._lifted(x, params)
        ctx.transformer = transformer
        ctx.save_for_backward(params, x)
        return x, -log_dy

    @staticmethod
    def backward(ctx, grad_x: Tensor, grad_neg_ell: Tensor) -> tuple[None, Tensor | None, Tensor | None]:  # noqa: D102
        params, x = ctx.saved_tensors
        transformer: SmoothMixture = ctx.transformer
        create_graph = torch.is_grad_enabled()
        need_y, need_params = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        with torch.enable_grad():
            x_a, p_a = _alias(x, create_graph), _alias(params, create_graph)
            f, ell = transformer._lifted(x_a, p_a)
            (dell_dx,) = torch.autograd.grad(ell.sum(), x_a, retain_graph=True, create_graph=create_graph)
            w = (grad_x - grad_neg_ell * dell_dx) / torch.exp(ell)
            grad_params = None
            if need_params:
                (grad_params,) = torch.autograd.grad(
                    (f, ell), p_a, grad_outputs=(-w, -grad_neg_ell), create_graph=create_graph
                )
        return None, (w if need_y else None), grad_params
