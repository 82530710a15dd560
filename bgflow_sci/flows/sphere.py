"""Flows on ``(S^3)^n``: unit-quaternion orientations of ``n_bodies`` rigid bodies, equivariant under ``q -> -q``.

Inputs and outputs are flat ``(batch, 4 * n_bodies)`` unit quaternions (body-major, scalar part first, see
:mod:`bgflow_sci.quaternions`).  Log-determinants are with respect to the volume measure of ``S^3`` (the
3-dimensional Jacobian in the tangent spaces), so ``log q_Y(y) = log q_X(x) - logdet`` holds for densities on
``S^3``.  Every map here satisfies ``f(-q) = -f(q)``; over a prior with ``p(q) = p(-q)`` the density stays
symmetric and ``p_SO3(R) = 2 p(q)`` is a proper density of rotations.

**Double Möbius map** (Köhler et al., ICML 2023), parameter ``w ∈ R^4`` with ``|w| < 1`` per body:
``M_w(p) = -(p - 2 proj(p, w - p))`` with ``proj(a, b) = (a·b / b·b) b`` (a Möbius automorphism of the sphere), and
``f_w(p) = (M_w(p) + M_{-w}(p)) / |M_w(p) + M_{-w}(p)|``, with

``log|J| = log[(1 - |w|²)(1 + |w|²)³] - 2 log[(1 + |w|²)² - 4 (w·p)²]``.

``f_w = f_{-w}``: the map is even in ``w``, so its derivative with respect to ``w`` vanishes at ``w = 0`` and a
layer started exactly at the identity never leaves it (every gradient is zero there, also for Adam).  The layers
here therefore start *near* the identity: ``init_scale`` (default 0.01) draws the free parameters, or the last
layer's bias of a conditioner, from ``N(0, init_scale²)``, which moves points by ``O(init_scale²)``.

``f_w`` maps the great circle through ``±w/|w|`` and ``p`` to itself.  In that plane, with ``e1 = w/|w|`` and ``p``
the complex number ``e^{iθ}``, the map is ``f² = (p² - s) / (1 - s p²)`` with ``s = |w|²`` (a disc automorphism of
``p²``), so the inverse is closed form: ``p² = (f² + s) / (1 + s f²)``, and ``p`` is the square root on the same side
as ``f`` (``Re(p f*) > 0``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import quaternions as quat
from .._checks import check_batch, check_context
from .base import Flow
from .nets import MLP

_EPS = 1e-12


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(-1)


def double_mobius(p: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """``(f_w(p), log|J|)`` for unit ``p`` ``(..., 4)`` and ``|w| < 1`` ``(..., 4)`` (broadcast); log-det ``(...,)``
    with respect to the ``S^3`` volume."""

    def mobius(v: Tensor) -> Tensor:
        d = v - p
        return 2.0 * (_dot(p, d) / _dot(d, d).clamp_min(_EPS))[..., None] * d - p

    m = mobius(w) + mobius(-w)
    y = m / torch.linalg.vector_norm(m, dim=-1, keepdim=True).clamp_min(_EPS)
    s = _dot(w, w)
    wp = _dot(w, p)
    logdet = torch.log((1 - s) * (1 + s) ** 3) - 2.0 * torch.log((1 + s) ** 2 - 4.0 * wp * wp)
    return y, logdet


def double_mobius_inverse(y: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """``(p, log|J|)`` with ``f_w(p) = y`` in closed form; the log-det is that of the inverse (``-log|J_f(p)|``)."""
    s = _dot(w, w)
    r = torch.sqrt(s.clamp_min(_EPS * _EPS))
    e1 = w / r[..., None]
    a = _dot(y, e1)  # y = a e1 + b e2, b >= 0
    rest = y - a[..., None] * e1
    b = torch.linalg.vector_norm(rest, dim=-1)
    e2 = rest / b.clamp_min(_EPS)[..., None]
    # v = y², u = (v + s) / (1 + s v) in complex arithmetic on (a + i b)
    vr, vi = a * a - b * b, 2 * a * b
    nr, ni = vr + s, vi
    dr, di = 1 + s * vr, s * vi
    den = dr * dr + di * di
    ur, ui = (nr * dr + ni * di) / den, (ni * dr - nr * di) / den
    # square root of u (|u| = 1) by its half angle (atan2: finite gradients everywhere), then the root on y's side;
    # w = 0 gives u = y² and p = y exactly
    half = 0.5 * torch.atan2(ui, ur)
    pr, pi = torch.cos(half), torch.sin(half)
    flip = (pr * a + pi * b) < 0
    pr, pi = torch.where(flip, -pr, pr), torch.where(flip, -pi, pi)
    p = pr[..., None] * e1 + pi[..., None] * e2
    p = p / torch.linalg.vector_norm(p, dim=-1, keepdim=True)
    _, logdet = double_mobius(p, w)
    return p, -logdet


class DoubleMobius(Flow):
    """Antipodally equivariant double-Möbius map of every body's quaternion (module docstring).

    Each body ``k`` has its own ``w_k = 0.99 · v_k / sqrt(1 + |v_k|²)`` (so ``|w_k| < 0.99``), where ``v`` is a free
    parameter ``(n_bodies, 4)`` (``context_dim = 0``) or the output of an MLP of the context (``context_dim > 0``;
    zero last-layer weights); the parameter, or that layer's bias, starts at ``N(0, init_scale²)``: near the
    identity, off its saddle at ``w = 0`` (module docstring).  Conditioning on other bodies' quaternions must use
    sign-invariant features (e.g. :func:`quadratic_features`), which the caller builds into ``context``.
    ``(batch, 4 n_bodies) -> (batch, 4 n_bodies)``; both directions closed form and batched.
    """

    def __init__(
        self, n_bodies: int, context_dim: int = 0, hidden: tuple[int, ...] = (64, 64), init_scale: float = 0.01
    ):
        super().__init__()
        if n_bodies < 1:
            raise ValueError(f"n_bodies must be positive, got {n_bodies}")
        self.n_bodies, self.dim, self.context_dim = int(n_bodies), 4 * int(n_bodies), int(context_dim)
        if self.context_dim:
            self.net = MLP(self.context_dim, self.dim, hidden)
            with torch.no_grad():  # near the identity, off the w = 0 saddle (module docstring)
                self.net[-1].bias.normal_(0.0, init_scale)
            self.v = None
        else:
            self.net = None
            self.v = nn.Parameter(init_scale * torch.randn(self.n_bodies, 4))

    def parameters_w(self, batch: int, context: Tensor | None, like: Tensor) -> Tensor:
        """``w`` ``(batch, n_bodies, 4)`` (``|w| < 0.99``)."""
        if self.net is not None:
            v = self.net(context.to(like)).reshape(batch, self.n_bodies, 4)
        else:
            v = self.v.to(like).expand(batch, self.n_bodies, 4)
        return 0.99 * v / torch.sqrt(1.0 + _dot(v, v))[..., None]

    def _split(self, x: Tensor, context: Tensor | None, name: str) -> tuple[Tensor, Tensor]:
        check_batch(x, self.dim, name)
        context = check_context(context, x.shape[0], self.context_dim)
        q = quat.normalize(x.reshape(x.shape[0], self.n_bodies, 4), name=f"DoubleMobius {name}")
        return q, self.parameters_w(x.shape[0], context, q)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(y, log|det dy/dx|)`` on ``(S^3)^n``; log-det ``(batch,)`` w.r.t. the sphere volume."""
        q, w = self._split(x, context, "x")
        y, logdet = double_mobius(q, w)
        return y.reshape(x.shape), logdet.sum(-1)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(x, log|det dx/dy|)``, closed form."""
        q, w = self._split(y, context, "y")
        x, logdet = double_mobius_inverse(q, w)
        return x.reshape(y.shape), logdet.sum(-1)


class QuaternionRotation(Flow):
    """Left multiplication of every body's quaternion by a learned unit quaternion, ``q_k -> a_k q_k`` (a rotation
    of ``S^3``: log-det 0, equivariant under ``q -> -q``).  ``a_k = normalize(1 + u_k)`` from a free parameter
    ``u`` ``(n_bodies, 4)`` (zero at start: the identity).  Between double-Möbius layers it moves their fixed great
    circles, so a stack reaches every orientation."""

    def __init__(self, n_bodies: int, init_scale: float = 0.0):
        super().__init__()
        self.n_bodies, self.dim = int(n_bodies), 4 * int(n_bodies)
        self.u = nn.Parameter(init_scale * torch.randn(self.n_bodies, 4))

    def rotation(self, like: Tensor) -> Tensor:
        """The unit quaternions ``a`` ``(n_bodies, 4)``."""
        a = self.u.to(like) + like.new_tensor([1.0, 0.0, 0.0, 0.0])
        return a / torch.linalg.vector_norm(a, dim=-1, keepdim=True)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(a q, 0)``."""
        check_batch(x, self.dim)
        q = quat.normalize(x.reshape(x.shape[0], self.n_bodies, 4), name="QuaternionRotation x")
        return quat.multiply(self.rotation(q), q).reshape(x.shape), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(a* q, 0)``."""
        check_batch(y, self.dim)
        q = quat.normalize(y.reshape(y.shape[0], self.n_bodies, 4), name="QuaternionRotation y")
        return quat.multiply(quat.conjugate(self.rotation(q)), q).reshape(y.shape), y.new_zeros(y.shape[0])


def quadratic_features(x: Tensor, n_bodies: int) -> Tensor:
    """Sign-invariant features of quaternions ``(batch, 4 n_bodies)``: the 10 independent entries of ``q qᵀ`` per
    body, ``(batch, 10 n_bodies)`` — unchanged under ``q_k -> -q_k`` for any body, for conditioners."""
    q = x.reshape(x.shape[0], n_bodies, 4)
    i, j = torch.triu_indices(4, 4)
    return (q[..., i] * q[..., j]).reshape(x.shape[0], 10 * n_bodies)
