"""Uniform orientations: the uniform density on ``S^3`` for each of ``n_bodies`` unit quaternions."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import quaternions as quat
from .._checks import check_batch
from .base import Distribution


class UniformS3(Distribution):
    """``n_bodies`` independent uniform unit quaternions, flattened to ``(batch, 4 * n_bodies)`` (body-major).

    ``log_prob = -n_bodies · log(2π²)`` with respect to the volume measure of ``(S^3)^n``; as a density of rotations
    (each body on SO(3) with its volume π²) it is ``-n_bodies · log(π²)`` (:meth:`log_prob_so3`).  Symmetric under
    ``q -> -q`` per body, so flows that are equivariant under that sign flip keep a proper SO(3) density.

    Input quaternions must be unit within :data:`~bgflow_sci.quaternions.UNIT_TOLERANCE` (else ``ValueError``
    naming the body); zero or non-finite quaternions give ``-inf``.
    """

    def __init__(self, n_bodies: int):
        super().__init__()
        if n_bodies < 1:
            raise ValueError(f"n_bodies must be positive, got {n_bodies}")
        self.n_bodies = int(n_bodies)
        self.dim = 4 * self.n_bodies
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # dtype and device of the samples

    def sample(self, n: int, context: Tensor | None = None) -> Tensor:
        """``(n, 4 * n_bodies)`` uniform unit quaternions."""
        q = quat.random_unit(n, self.n_bodies, dtype=self._anchor.dtype, device=self._anchor.device)
        return q.reshape(n, self.dim)

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``(batch,)``: ``-n_bodies log(2π²)``, ``-inf`` where a quaternion is zero or not finite."""
        check_batch(x, self.dim)
        q = quat.normalize(x.reshape(x.shape[0], self.n_bodies, 4), name="UniformS3.log_prob")
        ok = torch.isfinite(q).all(-1).all(-1)
        value = torch.full_like(x[:, 0], -self.n_bodies * quat.LOG_VOLUME_S3)
        return torch.where(ok, value, torch.full_like(value, -torch.inf))

    def log_prob_so3(self, x: Tensor) -> Tensor:
        """``(batch,)`` log density of the rotations of ``x`` with respect to the volume of ``SO(3)^n``:
        ``log_prob + n_bodies log 2``."""
        return self.log_prob(x) + self.n_bodies * torch.log(torch.tensor(2.0, dtype=torch.float64)).item()
