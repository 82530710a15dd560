"""Many-rigid-body flows (periodic positions + (S^3)^n) in float64: identity at start, invertibility, body 0 fixed,
q_k -> -q_k equivariance, log-det against the numerical Jacobian in a chart of positions and tangent spaces."""

from __future__ import annotations

import math

import pytest
import torch

from bgflow_sci.flows import OrientationCoupling, PositionCoupling, RigidBodyGeometry, rigid_body_flow

N = 5
BOX = (1.0, 1.2, 0.9)


def _centres() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.rand(N, 3, generator=g, dtype=torch.float64) * torch.tensor(BOX, dtype=torch.float64)


def _states(batch: int, seed: int = 0, spread: float = 0.08) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c = _centres()
    shift = 5 * torch.randn(batch, 1, 3, generator=g, dtype=torch.float64)  # anywhere in space
    images = torch.randint(-1, 2, (batch, N, 3), generator=g) * torch.tensor(BOX, dtype=torch.float64)
    r = shift + c + spread * torch.randn(batch, N, 3, generator=g, dtype=torch.float64) + images
    q = torch.randn(batch, N, 4, generator=g, dtype=torch.float64)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.cat([r.reshape(batch, -1), q.reshape(batch, -1)], dim=1)


def _flow(seed: int = 0, scale: float = 0.1):
    torch.manual_seed(seed)
    flow = rigid_body_flow(BOX, _centres(), n_blocks=2, n_bins=6, n_maps=2, hidden=(16,)).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn_like(p))
    return flow


def test_starts_near_identity_with_nonzero_gradients():
    flow = rigid_body_flow(BOX, _centres(), hidden=(8,)).double()
    x = _states(7)
    y, logdet = flow(x)
    torch.testing.assert_close(y[:, : 3 * N], x[:, : 3 * N], atol=1e-12, rtol=0)  # positions: exactly
    torch.testing.assert_close(y, x, atol=5e-3, rtol=0)  # orientations: O(init_scale²)
    assert logdet.abs().max() < 5e-2
    # a double Möbius map is even in w: started exactly at w = 0 it could never learn; here it does
    (y[:, 3 * N :] * torch.randn_like(y[:, 3 * N :])).sum().backward()
    for layer in flow:
        grads = [p.grad for p in layer.parameters() if p.grad is not None]
        if type(layer).__name__ == "OrientationCoupling":
            assert grads and all(torch.isfinite(g).all() for g in grads)
            assert max(g.abs().max() for g in grads) > 0


def test_invertible_body_zero_fixed_and_sign_equivariant():
    flow = _flow()
    x = _states(32)
    y, logdet = flow(x)
    assert (y - x).abs().max() > 1e-3  # not the identity
    back, logdet_inv = flow.inverse(y)
    torch.testing.assert_close(back, x, atol=1e-10, rtol=0)
    torch.testing.assert_close(logdet + logdet_inv, torch.zeros_like(logdet), atol=1e-10, rtol=0)
    torch.testing.assert_close(y[:, :3], x[:, :3], atol=0, rtol=0)
    for body in range(N):
        flipped = x.clone()
        flipped[:, 3 * N + 4 * body : 3 * N + 4 * body + 4] *= -1
        y_f, logdet_f = flow(flipped)
        expected = y.clone()
        expected[:, 3 * N + 4 * body : 3 * N + 4 * body + 4] *= -1
        torch.testing.assert_close(y_f, expected, atol=1e-12, rtol=0)
        torch.testing.assert_close(logdet_f, logdet, atol=1e-12, rtol=0)


def _tangent_basis(p: torch.Tensor) -> torch.Tensor:
    _, _, vh = torch.linalg.svd(p[None])
    return vh[1:]


@pytest.mark.parametrize("seed", [0, 1])
def test_logdet_against_numerical_jacobian(seed):
    flow = _flow(seed)
    x = _states(3, seed=seed)
    _, logdet = flow(x)
    for i in range(len(x)):
        xi = x[i]
        q = xi[3 * N :].reshape(N, 4)
        bases = [_tangent_basis(q[k]) for k in range(N)]

        def chart(t, xi=xi, q=q, bases=bases):  # positions of bodies 1..N-1 and tangent coordinates of every body
            r = torch.cat([xi[:3], xi[3 : 3 * N] + t[: 3 * (N - 1)]])
            moved = torch.stack([q[k] + t[3 * (N - 1) + 3 * k : 3 * (N - 1) + 3 * k + 3] @ bases[k] for k in range(N)])
            moved = moved / moved.norm(dim=-1, keepdim=True)
            return flow(torch.cat([r, moved.reshape(-1)])[None])[0][0]

        t0 = torch.zeros(3 * (N - 1) + 3 * N, dtype=torch.float64)
        y = chart(t0)
        jac = torch.autograd.functional.jacobian(chart, t0)  # (7N, 6N-3)
        y_q = y[3 * N :].reshape(N, 4)
        out = torch.block_diag(torch.eye(3 * (N - 1), dtype=torch.float64), *[_tangent_basis(y_q[k]) for k in range(N)])
        jac = torch.cat([jac[3 : 3 * N], jac[3 * N :]])  # drop body 0's position (fixed)
        assert torch.linalg.slogdet(out @ jac)[1].item() == pytest.approx(logdet[i].item(), abs=1e-8)


def test_positions_keep_their_periodic_image_and_angles_round_trip():
    geometry = RigidBodyGeometry(BOX, _centres()).double()
    x = _states(16, spread=0.3)
    r = x[:, : 3 * N].reshape(16, N, 3)
    theta, image = geometry.angles(r)
    assert theta.min() >= -math.pi and theta.max() < math.pi
    torch.testing.assert_close(geometry.positions(r[:, :1], theta, image), r, atol=1e-12, rtol=0)


def test_bad_input_is_named():
    geometry = RigidBodyGeometry(BOX, _centres())
    with pytest.raises(ValueError, match="body 0"):
        PositionCoupling(geometry, [0, 1])
    with pytest.raises(ValueError, match="update must list bodies"):
        OrientationCoupling(geometry, [N])
    with pytest.raises(ValueError, match="box"):
        RigidBodyGeometry((1.0, -1.0, 1.0), _centres())
    flow = _flow()
    x = _states(2)
    with pytest.raises(ValueError, match="norm"):
        flow(torch.cat([x[:, : 3 * N], 1.5 * x[:, 3 * N :]], dim=1))
    with pytest.raises(ValueError):
        flow(x[:, :-1])
