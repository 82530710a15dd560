"""Unit quaternions: the orientation toolkit of the rigid-body flows, distributions and energies.

Convention: a quaternion is the last axis of a tensor, ``q = (w, x, y, z)`` with the scalar part first, so shapes are
``(..., 4)``; a unit quaternion rotates a vector ``v`` as ``q v q*``.  Unit quaternions form the 3-sphere
``S^3 ⊂ R^4``, which double-covers the rotation group: ``q`` and ``-q`` are the same rotation.  Volumes:
``|S^3| = 2π²`` and ``|SO(3)| = π²`` (SO(3) seen as the real projective space ``RP^3 = S^3 / ±``), so a density
``p`` on ``S^3`` with ``p(q) = p(-q)`` is the density ``p_SO3(R) = 2 p(q)`` on SO(3) with respect to its volume.

Functions are batched over all leading axes, differentiable, and work in any floating dtype and on any device.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_VOLUME_S3 = math.log(2.0 * math.pi**2)  #: log of the volume of the unit 3-sphere, 2π²
LOG_VOLUME_SO3 = math.log(math.pi**2)  #: log of the volume of SO(3) = RP^3, π²
UNIT_TOLERANCE = 1e-3  #: largest accepted | |q| - 1 | before :func:`normalize` refuses a quaternion


def multiply(p: Tensor, q: Tensor) -> Tensor:
    """Hamilton product ``p q`` ``(..., 4)`` (rotation by ``q`` first, then by ``p``)."""
    pw, px, py, pz = p.unbind(-1)
    qw, qx, qy, qz = q.unbind(-1)
    return torch.stack(
        [
            pw * qw - px * qx - py * qy - pz * qz,
            pw * qx + px * qw + py * qz - pz * qy,
            pw * qy - px * qz + py * qw + pz * qx,
            pw * qz + px * qy - py * qx + pz * qw,
        ],
        dim=-1,
    )


def conjugate(q: Tensor) -> Tensor:
    """``q* = (w, -x, -y, -z)``: the inverse rotation of a unit quaternion."""
    return q * q.new_tensor([1.0, -1.0, -1.0, -1.0])


def normalize(q: Tensor, tolerance: float = UNIT_TOLERANCE, name: str = "quaternions") -> Tensor:
    """``q / |q|`` for quaternions that are unit within ``tolerance`` (rounding, float32 storage); raises
    ``ValueError`` naming the first offending index and its norm for anything further off (``tolerance=inf``
    accepts any non-zero quaternion).  Zero and non-finite quaternions are returned as NaN, for the caller to turn
    into ``-inf`` densities or ``+inf`` energies."""
    norm = torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    finite = torch.isfinite(norm) & (norm > 0)
    off = finite & ((norm - 1.0).abs() > tolerance)
    if bool(off.any()):
        index = tuple(int(i) for i in off.squeeze(-1).nonzero()[0])
        raise ValueError(
            f"{name}: quaternion at index {index} has norm {float(norm[index]):.6g}; unit quaternions are expected "
            f"(|norm - 1| <= {tolerance:g}; normalise them first or pass a larger tolerance)"
        )
    return torch.where(finite, q / norm.clamp_min(torch.finfo(q.dtype).tiny), torch.full_like(q, math.nan))


def canonical(q: Tensor) -> Tensor:
    """The representative of ``±q`` with ``w > 0`` (ties ``w = 0`` broken by the first non-zero of x, y, z)."""
    sign = torch.ones_like(q[..., 0])
    for k in range(3, -1, -1):  # the first non-zero component, scanning w, x, y, z, decides
        c = q[..., k]
        sign = torch.where(c != 0, torch.sign(c), sign)
    return q * sign[..., None]


def rotation_matrix(q: Tensor) -> Tensor:
    """Rotation matrices ``(..., 3, 3)`` of unit quaternions ``(..., 4)``; ``R v = q v q*``, the same for ``±q``."""
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        dim=-2,
    )


def from_rotation_matrix(matrix: Tensor) -> Tensor:
    """Canonical unit quaternions ``(..., 4)`` of rotation matrices ``(..., 3, 3)``.

    Numerically robust branch choice (Shepperd): of the four candidate formulas, each led by one of
    ``4w² = 1 + tr R``, ``4x² = 1 + 2 R_xx - tr R``, ..., use the one with the largest leading square, so the
    division is never by a small number.  The result is normalised and in :func:`canonical` sign.
    """
    m = matrix
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    squares = torch.stack(
        [1 + trace, 1 + 2 * m[..., 0, 0] - trace, 1 + 2 * m[..., 1, 1] - trace, 1 + 2 * m[..., 2, 2] - trace], -1
    )
    # the four candidate quaternions, each scaled by 4 times its leading component
    candidates = torch.stack(
        [
            torch.stack(
                [
                    squares[..., 0],
                    m[..., 2, 1] - m[..., 1, 2],
                    m[..., 0, 2] - m[..., 2, 0],
                    m[..., 1, 0] - m[..., 0, 1],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 2, 1] - m[..., 1, 2],
                    squares[..., 1],
                    m[..., 0, 1] + m[..., 1, 0],
                    m[..., 0, 2] + m[..., 2, 0],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 0, 2] - m[..., 2, 0],
                    m[..., 0, 1] + m[..., 1, 0],
                    squares[..., 2],
                    m[..., 1, 2] + m[..., 2, 1],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[..., 1, 0] - m[..., 0, 1],
                    m[..., 0, 2] + m[..., 2, 0],
                    m[..., 1, 2] + m[..., 2, 1],
                    squares[..., 3],
                ],
                -1,
            ),
        ],
        dim=-2,
    )  # (..., 4 candidates, 4)
    best = squares.argmax(-1)
    q = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    return canonical(q / torch.linalg.vector_norm(q, dim=-1, keepdim=True))


def rotate(q: Tensor, v: Tensor) -> Tensor:
    """Rotate vectors ``v`` ``(..., 3)`` by unit quaternions ``q`` ``(..., 4)`` (broadcast): ``q v q*``.

    Uses ``v' = v + 2 w (u × v) + 2 u × (u × v)`` with ``q = (w, u)``, no matrix.
    """
    w, u = q[..., :1], q[..., 1:]
    t = 2.0 * torch.linalg.cross(u.expand_as(v) if u.shape != v.shape else u, v, dim=-1)
    return v + w * t + torch.linalg.cross(u.expand_as(t) if u.shape != t.shape else u, t, dim=-1)


def random_unit(
    *shape: int, generator: torch.Generator | None = None, dtype: torch.dtype | None = None, device=None
) -> Tensor:
    """Uniform unit quaternions ``(*shape, 4)`` on ``S^3`` (normalised standard normals; uniform rotations too)."""
    g = torch.randn(*shape, 4, generator=generator, dtype=dtype, device=device)
    return g / torch.linalg.vector_norm(g, dim=-1, keepdim=True)


def geodesic_angle(p: Tensor, q: Tensor) -> Tensor:
    """Rotation angle ``(...,)`` in ``[0, π]`` between the rotations of unit quaternions ``p`` and ``q`` (``±``
    invariant): ``2 acos |p · q|``."""
    return 2.0 * torch.acos((p * q).sum(-1).abs().clamp(max=1.0))
