"""Flows on (S^3)^n in float64: invertibility, q -> -q equivariance, log-dets against the numerical Jacobian in the
tangent spaces, and a random stack over UniformS3 that integrates to one with log q(q) = log q(-q)."""

from __future__ import annotations

import pytest
import torch

from bgflow_sci import quaternions as Q
from bgflow_sci.bg import DensityModel
from bgflow_sci.distributions import UniformS3
from bgflow_sci.flows import DoubleMobius, QuaternionRotation, Sequential, quadratic_features

N_BODIES = 3


def _randomised(flow, scale=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return flow.double()


def _stack(seed=0, n_layers=4, context_dim=0):
    layers = []
    for _ in range(n_layers):
        layers += [DoubleMobius(N_BODIES, context_dim=context_dim, hidden=(16,)), QuaternionRotation(N_BODIES)]
    return _randomised(Sequential(*layers), seed=seed)


def _tangent_basis(p: torch.Tensor) -> torch.Tensor:
    """(3, 4) orthonormal basis of the tangent space of S^3 at unit p (4,)."""
    _, _, vh = torch.linalg.svd(p[None])  # rows 1..3 of vh span the orthogonal complement of p
    return vh[1:]


def _tangent_logdet(flow, x_row: torch.Tensor, context=None) -> torch.Tensor:
    """log|det| of the flow's (3n × 3n) Jacobian between tangent spaces, by autograd of a chart."""
    q = x_row.reshape(N_BODIES, 4)
    bases = [_tangent_basis(q[k]) for k in range(N_BODIES)]

    def chart(t):  # t: (3n,) tangent coordinates -> the flow's output, one body after the other
        moved = torch.stack([q[k] + t[3 * k : 3 * k + 3] @ bases[k] for k in range(N_BODIES)])
        moved = moved / moved.norm(dim=-1, keepdim=True)
        return flow(moved.reshape(1, -1), context)[0][0]

    y = chart(torch.zeros(3 * N_BODIES, dtype=torch.float64)).reshape(N_BODIES, 4)
    jac = torch.autograd.functional.jacobian(chart, torch.zeros(3 * N_BODIES, dtype=torch.float64))  # (4n, 3n)
    out_basis = torch.block_diag(*[_tangent_basis(y[k]) for k in range(N_BODIES)])  # (3n, 4n)
    return torch.linalg.slogdet(out_basis @ jac)[1]


@pytest.mark.parametrize("context_dim", [0, 5])
def test_invertible_equivariant_and_logdet_in_tangent_space(context_dim):
    torch.manual_seed(1)
    flow = _stack(context_dim=context_dim)
    x = UniformS3(N_BODIES).double().sample(64)
    context = torch.randn(64, context_dim, dtype=torch.float64) if context_dim else None
    y, logdet = flow(x, context)
    assert (y.reshape(64, N_BODIES, 4).norm(dim=-1) - 1).abs().max() < 1e-12
    x_back, logdet_inv = flow.inverse(y, context)
    torch.testing.assert_close(x_back, x, atol=1e-10, rtol=0)
    torch.testing.assert_close(logdet_inv, -logdet, atol=1e-10, rtol=0)
    # f(-q) = -f(q), body by body (flip the sign of one body only)
    flip = torch.ones(N_BODIES, 4, dtype=torch.float64)
    flip[1] = -1
    y_flip, logdet_flip = flow(x * flip.reshape(1, -1), context)
    torch.testing.assert_close(y_flip, y * flip.reshape(1, -1), atol=1e-12, rtol=0)
    torch.testing.assert_close(logdet_flip, logdet, atol=1e-12, rtol=0)
    for i in range(4):
        ctx = None if context is None else context[i : i + 1]
        torch.testing.assert_close(_tangent_logdet(flow, x[i], ctx), logdet[i], atol=1e-9, rtol=0)
    assert logdet.abs().max() > 0.1  # the randomised stack is far from the identity


def test_random_stack_integrates_to_one_and_is_symmetric():
    """E_uniform[q(x) / u(x)] = 1 (Monte Carlo over uniform quaternions), and log q(q) = log q(-q)."""
    torch.manual_seed(0)
    prior = UniformS3(N_BODIES).double()
    model = DensityModel(prior, _stack(seed=1))
    x = prior.sample(1_000_000)  # measured: 1.0004 ± 0.0032
    with torch.no_grad():
        log_ratio = model.log_prob(x) - prior.log_prob(x)
    ratio = torch.exp(log_ratio)
    mean, err = float(ratio.mean()), float(ratio.std() / len(ratio) ** 0.5)
    assert abs(mean - 1) < 0.01 and err < 0.005, (mean, err)
    assert float(log_ratio.std()) > 0.3  # a non-trivial density
    with torch.no_grad():
        torch.testing.assert_close(model.log_prob(-x[:1000]), model.log_prob(x[:1000]), atol=1e-10, rtol=0)
    samples = model.sample(2000)
    assert (samples.reshape(-1, N_BODIES, 4).norm(dim=-1) - 1).abs().max() < 1e-10


def test_closed_form_inverse_handles_w_zero_and_y_on_the_axis():
    flow = DoubleMobius(1, init_scale=0.0).double()  # exactly w = 0
    q = Q.random_unit(5, dtype=torch.float64)
    y, logdet = flow(q)
    back, _ = flow.inverse(q)
    torch.testing.assert_close(back, q, atol=1e-12, rtol=0)
    torch.testing.assert_close(y, q) and torch.testing.assert_close(logdet, torch.zeros(5, dtype=torch.float64))
    with torch.no_grad():
        flow.v.copy_(torch.tensor([[0.5, -0.2, 0.1, 0.7]]))
    w_dir = flow.parameters_w(1, None, q)[0, 0]
    axis = torch.stack([w_dir / w_dir.norm(), -w_dir / w_dir.norm()])  # fixed points of the map
    y, _ = flow(axis)
    torch.testing.assert_close(y, axis, atol=1e-12, rtol=0)
    torch.testing.assert_close(flow.inverse(axis)[0], axis, atol=1e-12, rtol=0)


def test_bad_quaternions():
    flow, prior = DoubleMobius(2).double(), UniformS3(2).double()
    x = prior.sample(3)
    x[1, 4:] = 0.0  # a zero quaternion: -inf density, never a silent number
    assert torch.isinf(prior.log_prob(x)[1]) and torch.isfinite(prior.log_prob(x)[[0, 2]]).all()
    with pytest.raises(ValueError, match="norm 2"):
        flow(2.0 * prior.sample(2))
    with pytest.raises(ValueError, match=r"\(batch, 8\)"):
        flow(torch.randn(2, 7, dtype=torch.float64))


def test_quadratic_features_are_sign_invariant():
    x = UniformS3(N_BODIES).double().sample(10)
    flip = torch.tensor([1.0] * 4 + [-1.0] * 4 + [1.0] * 4, dtype=torch.float64)
    torch.testing.assert_close(quadratic_features(x * flip, N_BODIES), quadratic_features(x, N_BODIES))
    assert quadratic_features(x, N_BODIES).shape == (10, 10 * N_BODIES)


def test_so3_density_is_twice_the_s3_density():
    prior = UniformS3(2).double()
    x = prior.sample(4)
    torch.testing.assert_close(prior.log_prob_so3(x), prior.log_prob(x) + 2 * torch.log(torch.tensor(2.0)).double())
    torch.testing.assert_close(prior.log_prob_so3(x), torch.full((4,), -2 * Q.LOG_VOLUME_SO3, dtype=torch.float64))
