"""The quaternion toolkit against scipy's rotations and against its own identities (float64)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.spatial.transform import Rotation

from bgflow_sci import quaternions as Q


def _q(n=500, seed=0):
    return Q.random_unit(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_rotation_matrix_matches_scipy_and_the_sign_does_not_matter():
    q = _q()
    ref = Rotation.from_quat(q[:, [1, 2, 3, 0]].numpy()).as_matrix()  # scipy: scalar last
    torch.testing.assert_close(Q.rotation_matrix(q), torch.from_numpy(ref), atol=1e-12, rtol=0)
    torch.testing.assert_close(Q.rotation_matrix(-q), Q.rotation_matrix(q), atol=0, rtol=0)


def test_matrix_round_trip_is_robust_in_every_branch():
    q = torch.cat([_q(), torch.eye(4, dtype=torch.float64), torch.tensor([[0.0, 1.0, 1.0, 0.0]]).double() / 2**0.5])
    back = Q.from_rotation_matrix(Q.rotation_matrix(q))
    torch.testing.assert_close(back, Q.canonical(q), atol=1e-12, rtol=0)
    assert (back[:, 0] >= 0).all()
    # rotations by ~π (w ≈ 0), where the trace-led formula divides by ~0
    near_pi = Q.normalize(torch.tensor([[1e-9, 0.3, -0.5, 0.8]], dtype=torch.float64), tolerance=math.inf)
    torch.testing.assert_close(Q.from_rotation_matrix(Q.rotation_matrix(near_pi)), near_pi, atol=1e-9, rtol=0)


def test_product_rotate_and_conjugate():
    p, q = _q(seed=1), _q(seed=2)
    v = torch.randn(500, 3, dtype=torch.float64)
    torch.testing.assert_close(Q.rotation_matrix(Q.multiply(p, q)), Q.rotation_matrix(p) @ Q.rotation_matrix(q))
    torch.testing.assert_close(Q.rotate(q, v), (Q.rotation_matrix(q) @ v[..., None])[..., 0])
    torch.testing.assert_close(Q.multiply(q, Q.conjugate(q)), torch.tensor([1.0, 0, 0, 0]).double().expand(500, 4))
    # broadcasting one quaternion over many vectors
    torch.testing.assert_close(Q.rotate(q[:1], v), (Q.rotation_matrix(q[0]) @ v.T).T)


def test_uniform_sampling_and_volumes():
    q = _q(200_000, seed=3)
    # uniform on S^3: E[w²] = 1/4, and rotation angles have density (1 - cos θ)/π on [0, π]
    assert abs(float((q[:, 0] ** 2).mean()) - 0.25) < 3e-3
    angle = Q.geodesic_angle(q, torch.tensor([1.0, 0, 0, 0]).double())
    assert abs(float(angle.mean()) - (math.pi / 2 + 2 / math.pi)) < 5e-3
    assert Q.LOG_VOLUME_S3 == pytest.approx(math.log(2 * math.pi**2))
    assert Q.LOG_VOLUME_SO3 == pytest.approx(Q.LOG_VOLUME_S3 - math.log(2))


def test_normalize_accepts_rounding_rejects_garbage_and_flags_zeros():
    q = _q(4)
    torch.testing.assert_close(Q.normalize(q * (1 + 1e-5)), q)
    with pytest.raises(ValueError, match=r"index \(2,\) has norm 1.5"):
        Q.normalize(torch.cat([q[:2], 1.5 * q[2:3], q[3:]]))
    out = Q.normalize(torch.cat([q[:1], torch.zeros(1, 4, dtype=torch.float64)]))
    assert torch.isnan(out[1]).all() and torch.isfinite(out[0]).all()


def test_canonical_picks_one_of_the_pair():
    q = _q()
    torch.testing.assert_close(Q.canonical(q), Q.canonical(-q), atol=0, rtol=0)
    tie = torch.tensor([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -0.6, 0.8]], dtype=torch.float64)
    torch.testing.assert_close(Q.canonical(tie), -tie)
