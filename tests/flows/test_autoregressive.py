"""Masked autoregressive layers: triangular Jacobian in the order, pass counts per mode, round trips, MADE masks.

Runtime: about 2 s on one CPU core.
"""

from __future__ import annotations

import pytest
import torch

from bgflow_sci.flows import MADE, Affine, MaskedAutoregressive, RationalQuadraticSpline
from bgflow_sci.flows.transformers import Domain

F64 = torch.float64
DIM = 5
ORDER = [3, 0, 4, 1, 2]  # coordinate i has rank ORDER[i]
DOMAINS = [Domain.real(), Domain.circle(), Domain.interval(-1.0, 2.0), Domain.real(), Domain.circle(0.0, 1.0)]


def transformers():
    return {"affine": Affine(), "spline": RationalQuadraticSpline(n_bins=6), "mixed": RationalQuadraticSpline(DOMAINS)}


def make(kind: str, mode: str, context_dim: int = 0) -> MaskedAutoregressive:
    flow = MaskedAutoregressive(DIM, transformers()[kind], (24, 24), context_dim, ORDER, mode).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return flow


def draw(kind: str, n: int) -> torch.Tensor:
    x = torch.randn(n, DIM, dtype=F64)
    if kind == "mixed":
        x[:, 1] = 9 * torch.rand(n, dtype=F64) - 4.5  # circle of period 2π, over more than one period
        x[:, 2] = -1 + 3 * torch.rand(n, dtype=F64)
        x[:, 4] = torch.rand(n, dtype=F64)
    return x


@pytest.mark.parametrize("mode", ["maf", "iaf"])
@pytest.mark.parametrize("kind", ["affine", "spline", "mixed"])
def test_jacobian_is_triangular_in_the_order_and_logdet_matches(kind, mode):
    flow = make(kind, mode, context_dim=2)
    x, c = draw(kind, 3), torch.randn(3, 2, dtype=F64)
    y, logdet = flow(x, c)
    rank = torch.tensor(ORDER)
    later = rank[None, :] > rank[:, None]  # later[i, j]: coordinate j comes after coordinate i
    # rows are independent: the Jacobian of the batch sum holds every sample's Jacobian
    jacs = torch.autograd.functional.jacobian(lambda v: flow(v, c)[0].sum(0), x, vectorize=True)
    for i in range(3):
        jac = jacs[:, i, :]
        assert (jac[later] == 0).all(), "output depends on a later coordinate"
        assert (jac[~later & ~torch.eye(DIM, dtype=torch.bool)].abs() > 0).any(), "no autoregressive dependence"
        torch.testing.assert_close(logdet[i], jac.diagonal().log().sum(), atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(logdet[i], torch.linalg.slogdet(jac)[1], atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("mode", ["maf", "iaf"])
@pytest.mark.parametrize("kind", ["affine", "spline", "mixed"])
def test_round_trip_float64(kind, mode):
    flow = make(kind, mode, context_dim=2)
    x, c = draw(kind, 200), torch.randn(200, 2, dtype=F64)
    y, logdet = flow(x, c)
    x_back, logdet_inv = flow.inverse(y, c)
    assert (x_back - x).abs().max() < 1e-6
    torch.testing.assert_close(logdet_inv, -logdet, atol=1e-8, rtol=0)
    if kind == "mixed":
        assert ((y[:, 2] >= -1) & (y[:, 2] <= 2) & (y[:, 4] >= 0) & (y[:, 4] <= 1)).all()


@pytest.mark.parametrize("mode", ["maf", "iaf"])
def test_one_pass_direction(mode):
    """MAF: inverse (density) is one conditioner pass, forward dim passes; IAF: the other way round."""
    flow = make("spline", mode)
    calls = []
    flow.net.register_forward_hook(lambda *_: calls.append(1))
    x = torch.randn(4, DIM, dtype=F64)
    y, _ = flow(x)
    n_forward = len(calls)
    flow.inverse(y)
    n_inverse = len(calls) - n_forward
    assert (n_forward, n_inverse) == ((DIM, 1) if mode == "maf" else (1, DIM))


def test_identity_at_initialisation_and_context_changes_the_map():
    flow = MaskedAutoregressive(DIM, RationalQuadraticSpline(DOMAINS), context_dim=2)
    x = draw("mixed", 10).float()
    y, logdet = flow(x, torch.randn(10, 2))
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(logdet, torch.zeros(10))
    flow = make("affine", "maf", context_dim=2)
    x = torch.randn(1, DIM, dtype=F64).expand(2, DIM)
    y, _ = flow(x, torch.randn(2, 2, dtype=F64))
    assert not torch.allclose(y[0], y[1])


def test_made_masks_connect_outputs_only_to_earlier_inputs():
    in_deg = torch.tensor([2, 1, 3, 0])  # last input: context (degree 0)
    out_deg = torch.tensor([1, 2, 3, 1, 2, 3])
    net = MADE(in_deg, out_deg, (7, 5), zero_init=False).double()
    jac = torch.autograd.functional.jacobian(net, torch.randn(4, dtype=F64))
    allowed = in_deg[None, :] < out_deg[:, None]
    assert (jac[~allowed] == 0).all()
    assert (jac[allowed] != 0).all()


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="mode"):
        MaskedAutoregressive(3, Affine(), mode="nice")
    with pytest.raises(ValueError, match="permutation"):
        MaskedAutoregressive(3, Affine(), order=[0, 0, 1])
    with pytest.raises(ValueError, match="domains"):
        MaskedAutoregressive(3, RationalQuadraticSpline(DOMAINS))
    flow = MaskedAutoregressive(3, Affine(), context_dim=2)
    with pytest.raises(ValueError, match="needs a context"):
        flow(torch.randn(4, 3))
