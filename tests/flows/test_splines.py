"""Rational-quadratic splines: agreement with zuko, domains (interval, circle, real tails), identity, inverses.

Runtime: about 2 s on one CPU core.
"""

from __future__ import annotations

import math

import pytest
import torch

from bgflow_sci.flows import RationalQuadraticSpline, neural_spline_flow, rational_quadratic_spline
from bgflow_sci.flows.transformers import Domain
from tests.conftest import require, tolerance

F64 = torch.float64
MIXED = [Domain.real(), Domain.interval(0.0, 1.0), Domain.circle(), Domain.real()]


def zuko_spline(n: int, bins: int, bound: float):
    zt = require("zuko.transforms")
    g = torch.Generator().manual_seed(1)
    w, h, d = (2 * torch.randn(n, k, dtype=F64, generator=g) for k in (bins, bins, bins - 1))
    return zt.MonotonicRQSTransform(w, h, d, bound=bound)


def test_pure_spline_matches_zuko_on_the_bounded_interval():
    bins, bound, n = 7, 3.0, 2000
    t = zuko_spline(n, bins, bound)
    widths, heights = t.horizontal.diff() / (2 * bound), t.vertical.diff() / (2 * bound)
    x = (2 * torch.rand(n, dtype=F64) - 1) * bound
    y_ref, ladj_ref = t.call_and_ladj(x)
    y, ladj = rational_quadratic_spline(x, widths, heights, t.derivatives, -bound, bound, -bound, bound)
    torch.testing.assert_close(y, y_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(ladj, ladj_ref, atol=1e-6, rtol=0)
    x_back, ladj_inv = rational_quadratic_spline(y, widths, heights, t.derivatives, -bound, bound, -bound, bound, True)
    torch.testing.assert_close(x_back, t.inv(y), atol=1e-6, rtol=0)
    torch.testing.assert_close(x_back, x, atol=1e-10, rtol=0)
    torch.testing.assert_close(ladj_inv, -ladj_ref, atol=1e-6, rtol=0)


def test_real_line_transformer_with_linear_tails_matches_zuko():
    """Same knots through our parametrisation (no minimum widths/slopes): raw = log(softmax target) etc."""
    bins, bound, n = 6, 2.0, 3000
    t = zuko_spline(n, bins, bound)
    spline = RationalQuadraticSpline(Domain.real(), bins, bound, 0.0, 0.0, 0.0).double()
    raw_d = torch.log(torch.expm1(t.derivatives[:, 1:-1])) - math.log(math.expm1(1.0))
    params = torch.cat([t.horizontal.diff().log(), t.vertical.diff().log(), raw_d], dim=-1)[:, None]
    x = 2.5 * bound * (2 * torch.rand(n, 1, dtype=F64) - 1)  # 60% inside the spline region, 40% on the tails
    y_ref, ladj_ref = t.call_and_ladj(x[:, 0])
    y, ladj = spline(x, params)
    torch.testing.assert_close(y[:, 0], y_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(ladj[:, 0], ladj_ref, atol=1e-6, rtol=0)
    x_back, ladj_inv = spline.inverse(y, params)
    torch.testing.assert_close(x_back[:, 0], t.inv(y_ref), atol=1e-6, rtol=0)
    torch.testing.assert_close(ladj_inv, -ladj, atol=1e-9, rtol=0)


def inputs(domain: Domain, shape: tuple[int, ...], dtype=F64) -> torch.Tensor:
    if domain.kind == "interval":
        return domain.low + (domain.high - domain.low) * torch.rand(shape, dtype=dtype)
    if domain.kind == "circle":  # three periods: wrapping with offsets
        return domain.low + 3 * (domain.high - domain.low) * (torch.rand(shape, dtype=dtype) - 1 / 3)
    return 4 * torch.randn(shape, dtype=dtype)  # real: some inputs beyond the bound 5


DOMAINS = [Domain.real(), Domain.interval(-1.0, 3.0), Domain.circle(), Domain.circle(0.0, 1.0)]


@pytest.mark.parametrize("domain", DOMAINS, ids=lambda d: f"{d.kind}[{d.low:.2g},{d.high:.2g}]")
def test_round_trip_logdet_and_autograd_derivative(domain):
    spline = RationalQuadraticSpline(domain, n_bins=6).double()
    x = inputs(domain, (500, 3))
    params = 2 * torch.randn(500, 3, spline.n_params, dtype=F64)
    y, ld = spline(x, params)
    x_back, ld_inv = spline.inverse(y, params)
    assert (x_back - x).abs().max() < 1e-6
    torch.testing.assert_close(ld_inv, -ld, atol=1e-8, rtol=0)
    xg = x.clone().requires_grad_(True)
    (dy,) = torch.autograd.grad(spline(xg, params)[0].sum(), xg)
    torch.testing.assert_close(ld, dy.log(), atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("domain", DOMAINS + [MIXED], ids=["real", "interval", "circle", "unit_circle", "mixed"])
def test_zero_parameters_give_the_identity(domain, dtype):
    spline = RationalQuadraticSpline(domain).to(dtype)
    d = len(domain) if isinstance(domain, list) else 3
    x = torch.cat([inputs(dom, (50, 1), dtype) for dom in (domain if isinstance(domain, list) else [domain] * d)], -1)
    for fn in (spline, spline.inverse):
        y, ld = fn(x, torch.zeros(50, d, spline.n_params, dtype=dtype))
        torch.testing.assert_close(y, x, **tolerance(dtype))
        torch.testing.assert_close(ld, torch.zeros_like(ld), **tolerance(dtype))


def test_circle_spline_is_a_circle_diffeomorphism():
    circle = Domain.circle()
    spline = RationalQuadraticSpline(circle, n_bins=5).double()
    params = 2 * torch.randn(1, 1, spline.n_params, dtype=F64).expand(400, 1, -1)
    x = inputs(circle, (400, 1))
    y, ld = spline(x, params)
    for k in (-2, 1, 3):
        yk, ldk = spline(x + 2 * math.pi * k, params)
        torch.testing.assert_close(yk, y + 2 * math.pi * k, atol=1e-10, rtol=0)
        torch.testing.assert_close(ldk, ld, atol=1e-10, rtol=0)
    # ends fixed and the derivative continuous across the seam
    ends = torch.tensor([[-math.pi], [math.pi - 1e-12], [-math.pi + 1e-12]], dtype=F64)
    y_ends, ld_ends = spline(ends, params[:3])
    torch.testing.assert_close(y_ends[:, 0], torch.tensor([-math.pi, math.pi, -math.pi], dtype=F64), atol=1e-9, rtol=0)
    torch.testing.assert_close(ld_ends[1], ld_ends[2], atol=1e-6, rtol=0)  # 1e-12 apart: f'' * 1e-12
    # wrapped inputs land in the fundamental domain
    inside = x.clamp(-math.pi, math.pi - 1e-9)
    assert ((spline(inside, params)[0] >= -math.pi) & (spline(inside, params)[0] <= math.pi)).all()


def test_mixed_domains_match_single_domain_splines_and_interval_stays_inside():
    mixed = RationalQuadraticSpline(MIXED, n_bins=4).double()
    x = torch.cat([inputs(d, (300, 1)) for d in MIXED], dim=-1)
    params = 2 * torch.randn(300, 4, mixed.n_params, dtype=F64)
    y, ld = mixed(x, params)
    for i, d in enumerate(MIXED):
        single = RationalQuadraticSpline(d, n_bins=4).double()
        assert single.n_params <= mixed.n_params
        # a single-domain spline reads its derivatives from the same leading slots (interval uses all of them)
        y_i, ld_i = single(x[:, i : i + 1], params[:, i : i + 1, : single.n_params])
        torch.testing.assert_close(y[:, i : i + 1], y_i, atol=1e-12, rtol=0)
        torch.testing.assert_close(ld[:, i : i + 1], ld_i, atol=1e-12, rtol=0)
    assert ((y[:, 1] >= 0) & (y[:, 1] <= 1)).all()
    restricted = mixed.restrict([1, 2])
    torch.testing.assert_close(restricted(x[:, 1:3], params[:, 1:3, : restricted.n_params])[0], y[:, 1:3])


def test_bad_inputs_raise_clear_errors():
    spline = RationalQuadraticSpline(MIXED)
    params = torch.zeros(2, 4, spline.n_params)
    x = torch.tensor([[0.0, 0.5, 0.0, 0.0], [0.0, 1.5, 0.0, 0.0]])
    with pytest.raises(ValueError, match="outside the interval"):
        spline(x, params)
    with pytest.raises(ValueError, match="non-finite"):
        spline(torch.tensor([[0.0, 0.5, float("nan"), 0.0]] * 2), params)
    with pytest.raises(ValueError, match=r"params must have shape"):
        spline(torch.zeros(2, 4), params[..., :-1])
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        spline(torch.zeros(2, 3), params[:, :3])
    with pytest.raises(ValueError, match="n_bins"):
        RationalQuadraticSpline(n_bins=0)
    empty_y, empty_ld = spline(torch.zeros(0, 4), torch.zeros(0, 4, spline.n_params))
    assert empty_y.shape == (0, 4) and empty_ld.shape == (0, 4)


def test_spline_flow_keeps_intervals_and_periodicity():
    torch.manual_seed(2)
    flow = neural_spline_flow(4, 4, domains=MIXED, n_bins=5, hidden=(16,)).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.2 * torch.randn_like(p))
    x = torch.cat([inputs(d, (400, 1)) for d in MIXED], dim=-1)
    y, ld = flow(x)
    assert ((y[:, 1] >= 0) & (y[:, 1] <= 1)).all()
    assert (y - x).abs().max() > 0.1  # the flow is not the identity
    shift = torch.tensor([0.0, 0.0, 2 * math.pi, 0.0], dtype=F64)
    y2, ld2 = flow(x + shift)
    torch.testing.assert_close(y2, y + shift, atol=1e-9, rtol=0)
    torch.testing.assert_close(ld2, ld, atol=1e-9, rtol=0)
    x_back, ld_inv = flow.inverse(y)
    assert (x_back - x).abs().max() < 1e-6
    torch.testing.assert_close(ld_inv, -ld, atol=1e-9, rtol=0)
