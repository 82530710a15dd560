"""Elementwise, CircularShift, LULinear, Affine, and the Coupling refactor of AffineCoupling.

Runtime: under 1 s on one CPU core.
"""

from __future__ import annotations

import math

import pytest
import torch

from bgflow_sci.flows import (
    Affine,
    AffineCoupling,
    CircularShift,
    Coupling,
    Elementwise,
    LULinear,
    RationalQuadraticSpline,
)
from bgflow_sci.flows.transformers import Domain

F64 = torch.float64


def perturb(module: torch.nn.Module, scale: float = 0.3) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


def test_affine_coupling_is_the_realnvp_formula():
    """Conditioner output (shift | raw log-scale), log-scale = B tanh(raw / B): the pre-refactor layout."""
    layer = AffineCoupling(4, [True, False, True, False], hidden=(8,), scale_bound=2.0).double()
    perturb(layer)
    x = torch.randn(7, 4, dtype=F64)
    shift, raw = layer.net(x[:, [1, 3]]).chunk(2, dim=-1)
    log_scale = 2.0 * torch.tanh(raw / 2.0)
    y, logdet = layer(x)
    torch.testing.assert_close(y[:, [0, 2]], x[:, [0, 2]] * log_scale.exp() + shift)
    torch.testing.assert_close(y[:, [1, 3]], x[:, [1, 3]])
    torch.testing.assert_close(logdet, log_scale.sum(-1))
    assert isinstance(layer, Coupling) and set(layer.state_dict()) == {"transformed", "conditioning"} | {
        f"net.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")
    }


def test_coupling_conditioner_sees_circles_periodically():
    domains = [Domain.circle(), Domain.interval(0.0, 2.0), Domain.real()]
    layer = Coupling(3, RationalQuadraticSpline(domains, n_bins=4), [False, True, True], hidden=(8,)).double()
    perturb(layer)
    x = torch.stack([torch.rand(5, dtype=F64) * 6 - 3, 2 * torch.rand(5, dtype=F64), torch.randn(5, dtype=F64)], -1)
    y, ld = layer(x)
    y2, ld2 = layer(x + torch.tensor([2 * math.pi, 0.0, 0.0], dtype=F64))
    torch.testing.assert_close(y2[:, 1:], y[:, 1:], atol=1e-12, rtol=0)
    torch.testing.assert_close(ld2, ld, atol=1e-12, rtol=0)
    assert ((y[:, 1] >= 0) & (y[:, 1] <= 2)).all()


def test_elementwise_unconditional_and_contextual():
    spline = RationalQuadraticSpline(Domain.interval(-1.0, 1.0), n_bins=4)
    layer = Elementwise(3, spline).double()
    assert layer.params.shape == (3, spline.n_params)
    perturb(layer)
    x = 2 * torch.rand(6, 3, dtype=F64) - 1
    y, ld = layer(x)
    y_ref, ld_ref = spline(x, layer.params.expand(6, -1, -1))
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(ld, ld_ref.sum(-1))
    conditional = Elementwise(3, spline, context_dim=2, hidden=(8,)).double()
    perturb(conditional)
    y, _ = conditional(x[:1].expand(2, 3), torch.randn(2, 2, dtype=F64))
    assert not torch.allclose(y[0], y[1])


def test_circular_shift_rotates_and_wraps():
    layer = CircularShift(3, [0, 2], Domain.circle(0.0, 1.0), learnable=False, seed=4).double()
    assert (layer.shift > 0).all() and (layer.shift < 1).all() and not layer.shift.requires_grad
    x = torch.rand(50, 3, dtype=F64)
    y, ld = layer(x)
    assert ((y[:, [0, 2]] >= 0) & (y[:, [0, 2]] < 1)).all()
    torch.testing.assert_close(y[:, 1], x[:, 1])
    expected = torch.remainder(x[:, [0, 2]] + layer.shift, 1.0)
    torch.testing.assert_close(y[:, [0, 2]], expected)
    torch.testing.assert_close(layer(x + torch.tensor([3.0, 0.0, -1.0], dtype=F64))[0], y + torch.tensor([3.0, 0, -1]))
    assert (ld == 0).all()
    torch.testing.assert_close(layer.inverse(y)[0], x)
    with pytest.raises(ValueError, match="circular_dims"):
        CircularShift(3, [3])
    with pytest.raises(ValueError, match="circle"):
        CircularShift(3, [0], Domain.interval())


def test_lu_linear_matches_its_matrix_and_starts_as_identity():
    layer = LULinear(4, permutation=[1, 3, 0, 2]).double()
    x = torch.randn(9, 4, dtype=F64)
    torch.testing.assert_close(layer(x)[0], x @ torch.eye(4, dtype=F64)[[2, 0, 3, 1]].T)  # P alone at init
    perturb(layer)
    w = layer.weight()
    y, logdet = layer(x)
    torch.testing.assert_close(y, x @ w.T + layer.bias)
    torch.testing.assert_close(logdet, torch.linalg.slogdet(w)[1].expand(9))
    x_back, logdet_inv = layer.inverse(y)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(logdet_inv, -logdet)
    identity = LULinear(4)
    torch.testing.assert_close(identity(x.float())[0], x.float())


def test_affine_transformer_round_trip_and_identity():
    t = Affine(scale_bound=3.0)
    x, p = torch.randn(5, 2, dtype=F64), 10 * torch.randn(5, 2, 2, dtype=F64)
    y, ld = t(x, p)
    assert (ld.abs() < 3.0).all()
    torch.testing.assert_close(t.inverse(y, p)[0], x)
    torch.testing.assert_close(t(x, torch.zeros_like(p))[0], x)
