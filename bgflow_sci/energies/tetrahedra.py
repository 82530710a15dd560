"""Rigid regular tetrahedra in a harmonic trap and an orienting field: a small rigid-body test system.

State ``x = (r_1 … r_n, q_1 … q_n)``: flat ``(batch, 7 n)``, the centres (``3 n``, length unit σ) first, then the
unit quaternions (``4 n``).  The vertices of body ``i`` are ``v_ia = r_i + R(q_i) b_a`` with ``b_a`` a regular
tetrahedron of edge ``edge`` centred on the origin.  The reduced energy (kT) is

``u(x) = Σ_i k |r_i|² / 2  +  ε Σ_{i<j} Σ_{a,b} (σ / |v_ia - v_jb|)^12  +  Σ_i u_field(q_i)``,

``u_field(q) = -Σ_a [h_z (ẑ · R(q) b̂_a)³ + h_x (x̂ · R(q) b̂_a)³]``, ``b̂_a = b_a / |b_a|``.

The cubic field favours a vertex along ``+z`` and one along ``+x`` at once; with the tetrahedron's 12 proper symmetries
the orientational density has several separated modes.  Everything is invariant under ``q_i -> -q_i``.  For one body
the orientational partition function is a 3D integral over SO(3): :func:`orientational_log_z` evaluates it by
quadrature (Gauss–Legendre in ``cos β``, the periodic trapezoid rule in the Euler angles ``α, γ``), the reference for
reweighting tests.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .. import quaternions as quat
from .._checks import check_batch
from .base import Energy
from .rigid import tetrahedron


class TetrahedraInField(Energy):
    """``n_bodies`` rigid tetrahedra: trap ``k``, vertex repulsion ``epsilon``/``sigma``, field ``h_z``, ``h_x``
    (module docstring); ``dim = 7 n_bodies``.  Zero-norm or non-finite quaternions and overlapping vertices give
    ``+inf`` (counted in ``n_invalid``); quaternions off unit norm by more than the tolerance of
    :func:`~bgflow_sci.quaternions.normalize` raise ``ValueError``."""

    def __init__(
        self,
        n_bodies: int = 1,
        edge: float = 1.0,
        trap: float = 1.0,
        epsilon: float = 1.0,
        sigma: float = 0.5,
        h_z: float = 3.0,
        h_x: float = 2.0,
    ):
        super().__init__(7 * n_bodies)
        self.n_bodies = int(n_bodies)
        self.trap, self.epsilon, self.sigma, self.h_z, self.h_x = trap, epsilon, sigma, h_z, h_x
        body = tetrahedron(edge).body
        self.register_buffer("body", body, persistent=False)
        self.register_buffer("directions", body / body.norm(dim=-1, keepdim=True), persistent=False)

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(centres (batch, n, 3), unit quaternions (batch, n, 4))`` of flat ``x``."""
        check_batch(x, self.dim)
        n = self.n_bodies
        centres = x[:, : 3 * n].reshape(-1, n, 3)
        q = quat.normalize(x[:, 3 * n :].reshape(-1, n, 4), name="TetrahedraInField quaternions")
        return centres, q

    def field_energy(self, q: Tensor) -> Tensor:
        """``u_field`` ``(...,)`` of unit quaternions ``(..., 4)``."""
        dirs = quat.rotate(
            q[..., None, :].expand(*q.shape[:-1], 4, 4), self.directions.to(q).expand(*q.shape[:-1], 4, 3)
        )
        return -(self.h_z * dirs[..., 2] ** 3 + self.h_x * dirs[..., 0] ** 3).sum(-1)

    def _energy(self, x: Tensor) -> Tensor:
        centres, q = self.split(x)
        u = 0.5 * self.trap * (centres**2).sum((-1, -2)) + self.field_energy(q).sum(-1)
        if self.n_bodies > 1:
            n = self.n_bodies
            vertices = centres[:, :, None, :] + quat.rotate(
                q[:, :, None, :].expand(-1, n, 4, 4), self.body.to(x).expand(x.shape[0], n, 4, 3)
            )
            i, j = torch.triu_indices(n, n, offset=1)
            d2 = ((vertices[:, i, :, None, :] - vertices[:, j, None, :, :]) ** 2).sum(-1)  # (batch, pairs, 4, 4)
            u = u + self.epsilon * ((self.sigma**2 / d2) ** 6).sum((-1, -2, -3))
        return torch.where(torch.isfinite(u), u, torch.full_like(u, math.inf))


def orientational_log_z(energy: TetrahedraInField, n_alpha: int = 96, n_beta: int = 64, n_gamma: int = 96) -> float:
    """``log ∫_{S^3} exp(-u_field(q)) dq`` (w.r.t. the volume of S³, 2π²) for one body, by quadrature.

    With ZYZ Euler angles the normalised Haar measure is ``sin β dα dβ dγ / (8π²)``; ``cos β`` gets Gauss–Legendre
    nodes, ``α`` and ``γ`` the periodic trapezoid rule (spectrally accurate for this smooth integrand), and
    ``∫_{S^3} f = 2π² ⟨f⟩_uniform``.  Converged to ~1e-10 at the default orders for fields of a few kT.
    """
    x_b, w_b = np.polynomial.legendre.leggauss(n_beta)
    alpha = 2 * np.pi * np.arange(n_alpha) / n_alpha
    gamma = 2 * np.pi * np.arange(n_gamma) / n_gamma
    a, cb, g = np.meshgrid(alpha, x_b, gamma, indexing="ij")
    weights = np.broadcast_to(w_b[None, :, None], a.shape) / 2.0 / (n_alpha * n_gamma)  # sums to 1
    beta = np.arccos(cb)
    # ZYZ Euler angles -> quaternion: q = qz(α) qy(β) qz(γ)
    qa = np.stack([np.cos(a / 2), 0 * a, 0 * a, np.sin(a / 2)], -1)
    qb = np.stack([np.cos(beta / 2), 0 * a, np.sin(beta / 2), 0 * a], -1)
    qg = np.stack([np.cos(g / 2), 0 * a, 0 * a, np.sin(g / 2)], -1)
    q = quat.multiply(quat.multiply(torch.from_numpy(qa), torch.from_numpy(qb)), torch.from_numpy(qg))
    with torch.no_grad():
        u = energy.field_energy(q.reshape(-1, 4).to(torch.float64)).numpy().reshape(a.shape)
    log_mean = float(np.log(np.sum(weights * np.exp(-(u - u.min())))) - u.min())
    return quat.LOG_VOLUME_S3 + log_mean
