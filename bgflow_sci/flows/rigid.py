"""Flows of many rigid bodies in a periodic box: positions on a torus, orientations on ``(S^3)^n``.

State ``x`` ``(batch, 7 n)``: positions ``r`` ``(3 n)`` (nm, any image), then unit quaternions ``q`` ``(4 n)`` (the
layout of :class:`~bgflow_sci.energies.RigidBodyEnergy`).  Body 0 is the reference: its position is never changed,
and every other position is read relative to it and to its site ``c_i`` (``centres``, e.g. the crystal's lattice
positions relative to body 0) as angles on the circle,

    θ_i = wrap(2π (r_i - r_0 - c_i) / L) ∈ [-π, π),    r_i = r_0 + c_i + L θ_i / 2π + (the image, kept),

so a flow of the angles is a flow of the relative positions (``dr_i = L dθ_i / 2π``: the log-det of the positions
equals that of the angles), translation is removed, and each body sits near ``θ = 0``, far from the cut at ``±π``.

Two coupling blocks alternate (``update``: the bodies a block changes):

* :class:`PositionCoupling`: a circular rational-quadratic spline of each updated body's three angles, conditioned
  on the angles of the other bodies and on the orientations of all bodies;
* :class:`OrientationCoupling`: ``n_maps`` double-Möbius maps (:func:`~bgflow_sci.flows.sphere.double_mobius`) of
  each updated body's quaternion, conditioned on all positions and on the other bodies' orientations.  The maps
  alternate direction: the inverse map ``f_w^{-1}`` contracts isotropically around ``±ŵ`` (by ``(1 - |w|²) / (1 +
  |w|²)`` per tangent direction at ``ŵ``: one map narrows a libration around a site's orientation, as cooling
  does), the forward map ``f_w`` expands there and contracts towards the great 2-sphere ``⊥ w``.

Conditioners see orientations only through the sign-invariant ``q qᵀ``
(:func:`~bgflow_sci.flows.sphere.quadratic_features`) and the double-Möbius maps are odd, so the whole flow
satisfies ``f(r, ..., -q_k, ...) = (r', ..., -q'_k, ...)`` for every body: with a prior symmetric under
``q_k -> -q_k`` its density is a density on ``SO(3)^n`` (``p_SO3 = 2^n p``).  Conditioners are MLPs over all bodies
in their fixed order (the bodies of a crystal are told apart by their lattice sites), zero-initialised: every block
starts as the identity, except that the double-Möbius parameters start at ``N(0, 0.01²)`` (a double Möbius map is
even in ``w``: exactly at ``w = 0`` every gradient vanishes), which moves orientations by ``~1e-4``.  Log-dets are
with respect to Lebesgue measure on positions and the ``S^3`` volume on quaternions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .. import quaternions as quat
from .._checks import check_batch
from .base import Flow, Sequential
from .nets import MLP
from .sphere import double_mobius, double_mobius_inverse, quadratic_features
from .splines import RationalQuadraticSpline
from .transformers import Domain


class RigidBodyGeometry(nn.Module):
    """Box ``L`` ``(3,)`` (nm) and sites ``c`` ``(n, 3)`` (nm, relative to body 0, ``c_0 = 0``) of ``n`` bodies;
    converts states to angles and back (module docstring)."""

    def __init__(self, box: Sequence[float] | Tensor, centres: Tensor):
        super().__init__()
        box = torch.as_tensor(box, dtype=torch.float64).reshape(-1)
        centres = torch.as_tensor(centres, dtype=torch.float64)
        if box.shape != (3,) or not bool((box > 0).all()):
            raise ValueError(f"box must be three positive edge lengths (nm), got {box.tolist()}")
        if centres.dim() != 2 or centres.shape[1] != 3 or len(centres) < 2:
            raise ValueError(f"centres must be (n_bodies >= 2, 3) nm, got {tuple(centres.shape)}")
        self.n_bodies = len(centres)
        self.register_buffer("box", box)
        self.register_buffer("centres", centres - centres[:1])

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(positions (batch, n, 3), quaternions (batch, n, 4))`` of states ``(batch, 7 n)``."""
        n = self.n_bodies
        check_batch(x, 7 * n, "rigid-body state")
        q = quat.normalize(x[:, 3 * n :].reshape(len(x), n, 4), name="rigid-body state quaternions")
        return x[:, : 3 * n].reshape(len(x), n, 3), q

    @staticmethod
    def join(r: Tensor, q: Tensor) -> Tensor:
        return torch.cat([r.reshape(len(r), -1), q.reshape(len(q), -1)], dim=1)

    def angles(self, r: Tensor) -> tuple[Tensor, Tensor]:
        """``(θ (batch, n, 3) in [-π, π), image (batch, n, 3) nm)`` with ``r = r_0 + c + L θ / 2π + image``."""
        box = self.box.to(r)
        rel = r - r[:, :1] - self.centres.to(r)
        image = box * torch.round(rel / box)
        return 2 * math.pi * (rel - image) / box, image

    def positions(self, r0: Tensor, theta: Tensor, image: Tensor) -> Tensor:
        """Positions ``(batch, n, 3)`` from body 0's position ``r0`` ``(batch, 1, 3)``, angles and images."""
        box = self.box.to(theta)
        return r0 + self.centres.to(theta) + box * theta / (2 * math.pi) + image


def _update_mask(update: Sequence[int] | Tensor, n_bodies: int, positions: bool) -> Tensor:
    mask = torch.zeros(n_bodies, dtype=torch.bool)
    index = torch.as_tensor(update, dtype=torch.long).reshape(-1)
    if len(index) == 0 or int(index.min()) < 0 or int(index.max()) >= n_bodies:
        raise ValueError(f"update must list bodies in [0, {n_bodies}), got {index.tolist()}")
    mask[index] = True
    if positions and bool(mask[0]):
        raise ValueError("body 0 is the positional reference; a PositionCoupling cannot update it")
    return mask


class PositionCoupling(Flow):
    """Circular spline of the angles of bodies ``update`` (not body 0), conditioned on the other bodies' angles
    (``cos θ``, ``sin θ``) and all orientations (``q qᵀ``); ``(batch, 7 n) -> (batch, 7 n)``."""

    def __init__(
        self, geometry: RigidBodyGeometry, update: Sequence[int], n_bins: int = 8, hidden: Sequence[int] = (128, 128)
    ):
        super().__init__()
        self.geometry, n = geometry, geometry.n_bodies
        self.dim = 7 * n
        self.register_buffer("mask", _update_mask(update, n, positions=True), persistent=False)
        self.n_update = int(self.mask.sum())
        self.spline = RationalQuadraticSpline(Domain.circle(), n_bins=n_bins)
        self.net = MLP(6 * n + 10 * n, 3 * self.n_update * self.spline.n_params, hidden)

    def _params(self, theta: Tensor, q: Tensor) -> Tensor:
        keep = (~self.mask).to(theta)[None, :, None]
        features = torch.cat([torch.cos(theta) * keep, torch.sin(theta) * keep], dim=-1).flatten(1)
        features = torch.cat([features, quadratic_features(q.flatten(1), self.geometry.n_bodies)], dim=1)
        return self.net(features).reshape(len(theta), self.n_update, 3, self.spline.n_params)

    def _transform(self, x: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        r, q = self.geometry.split(x)
        theta, image = self.geometry.angles(r)
        params = self._params(theta, q)
        t = theta[:, self.mask]
        t_new, logd = (self.spline.inverse if inverse else self.spline.forward)(t, params)
        theta = theta.clone()
        theta[:, self.mask] = t_new
        r_new = self.geometry.positions(r[:, :1], theta, image)
        r_new = torch.where(self.mask[None, :, None], r_new, r)
        return self.geometry.join(r_new, q), logd.flatten(1).sum(1)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(y, log|det dy/dx|)`` (Lebesgue measure on positions)."""
        return self._transform(x, inverse=False)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(x, log|det dx/dy|)``."""
        return self._transform(y, inverse=True)


class OrientationCoupling(Flow):
    """``n_maps`` double-Möbius maps (alternately ``f_w^{-1}`` and ``f_w``, module docstring) of the quaternions of
    bodies ``update``, with ``w`` from an MLP of all angles
    (``cos θ``, ``sin θ``) and the other bodies' ``q qᵀ``; odd in every body's quaternion;
    ``(batch, 7 n) -> (batch, 7 n)``, log-det w.r.t. the ``S^3`` volume."""

    def __init__(
        self,
        geometry: RigidBodyGeometry,
        update: Sequence[int],
        n_maps: int = 3,
        hidden: Sequence[int] = (128, 128),
        init_scale: float = 0.01,
    ):
        super().__init__()
        if n_maps < 1:
            raise ValueError(f"n_maps must be positive, got {n_maps}")
        self.geometry, n = geometry, geometry.n_bodies
        self.dim, self.n_maps = 7 * n, int(n_maps)
        self.register_buffer("mask", _update_mask(update, n, positions=False), persistent=False)
        self.n_update = int(self.mask.sum())
        self.net = MLP(6 * n + 10 * n, 4 * self.n_update * self.n_maps, hidden)
        with torch.no_grad():  # near the identity: a double Möbius map is even in w, w = 0 is a saddle
            self.net[-1].bias.normal_(0.0, init_scale)

    def _w(self, theta: Tensor, q: Tensor) -> Tensor:
        """``w`` ``(n_maps, batch, n_update, 4)``, ``|w| < 0.99``."""
        keep = (~self.mask).to(q)[None, :, None]
        features = torch.cat([torch.cos(theta), torch.sin(theta)], dim=-1).flatten(1)
        features = torch.cat([features, quadratic_features((q * keep).flatten(1), self.geometry.n_bodies)], dim=1)
        v = self.net(features).reshape(len(q), self.n_update, self.n_maps, 4).movedim(2, 0)
        return 0.99 * v / torch.sqrt(1.0 + (v * v).sum(-1, keepdim=True))

    def _transform(self, x: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        r, q = self.geometry.split(x)
        theta, _ = self.geometry.angles(r)
        w = self._w(theta, q)
        p = q[:, self.mask]
        logdet = x.new_zeros(len(x))
        for k in reversed(range(self.n_maps)) if inverse else range(self.n_maps):
            contracting = k % 2 == 0  # even maps: the inverse double Möbius (contracts around ±ŵ)
            step = double_mobius if contracting == inverse else double_mobius_inverse
            p, ld = step(p, w[k])
            logdet = logdet + ld.sum(-1)
        q = q.clone()
        q[:, self.mask] = p
        return self.geometry.join(r, q), logdet

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(y, log|det dy/dx|)`` (``S^3`` volume)."""
        return self._transform(x, inverse=False)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(x, log|det dx/dy|)``, closed form."""
        return self._transform(y, inverse=True)


def rigid_body_flow(
    box: Sequence[float] | Tensor,
    centres: Tensor,
    n_blocks: int = 2,
    n_bins: int = 8,
    n_maps: int = 3,
    hidden: Sequence[int] = (128, 128),
) -> Sequential:
    """``n_blocks`` × (positions of the odd bodies, of the even bodies ≠ 0, orientations of the even bodies, of the
    odd bodies): a flow of ``(batch, 7 n)`` rigid-body states that starts near the identity (module docstring).
    ``centres`` ``(n, 3)`` nm: the bodies' sites (e.g. a crystal's molecule positions)."""
    geometry = RigidBodyGeometry(box, centres)
    n = geometry.n_bodies
    even, odd = list(range(2, n, 2)), list(range(1, n, 2))
    layers: list[Flow] = []
    for _ in range(n_blocks):
        layers.append(PositionCoupling(geometry, odd, n_bins, hidden))
        if even:
            layers.append(PositionCoupling(geometry, even, n_bins, hidden))
        layers.append(OrientationCoupling(geometry, [0, *even], n_maps, hidden))
        layers.append(OrientationCoupling(geometry, odd, n_maps, hidden))
    return Sequential(*layers)
