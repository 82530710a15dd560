"""Smooth mixture transformer (Köhler, Krämer, Noé 2021): formulas against an independent reference, C^∞
properties, bracketed inverse, inverse-function-theorem gradients (double backward), force matching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import bgflow_sci.flows as F
from bgflow_sci import DensityModel
from bgflow_sci.distributions import UniformBox
from bgflow_sci.flows import RootFindingError, SmoothMixture
from bgflow_sci.flows.transformers import Domain
from bgflow_sci.training import ForceMatching

INTERVAL, CIRCLE = Domain.interval(-1.0, 2.0), Domain.circle()
MIXED = [INTERVAL, CIRCLE]
F64 = torch.float64


def draw(n: int, domains=MIXED, dtype=F64, device="cpu") -> torch.Tensor:
    """Points inside each domain (circle coordinates over two periods, to exercise the wrapping)."""
    cols = []
    for d in domains:
        u = torch.rand(n, dtype=dtype, device=device)
        cols.append(d.low + (d.high - d.low) * (u if d.kind == "interval" else 2 * u - 0.5))
    return torch.stack(cols, dim=1)


def rand_params(t: SmoothMixture, n: int, d: int, scale: float = 1.5, dtype=F64, device="cpu") -> torch.Tensor:
    return scale * torch.randn(n, d, t.n_params, dtype=dtype, device=device)


# ---- independent reference: the module-docstring formulas with the ramp ρ itself, in numpy ------------------
def ref_sigma(z: np.ndarray, alpha: np.ndarray, beta: int) -> np.ndarray:
    def rho(v):
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            return np.where(v > 0, np.exp(alpha * (1 - 1 / np.where(v > 0, v, 1.0) ** beta)), 0.0)

    return rho(z) / (rho(z) + rho(1 - z))


def ref_forward(t: SmoothMixture, x: torch.Tensor, params: torch.Tensor) -> np.ndarray:
    out = np.empty(tuple(x.shape))
    for j, dom in enumerate(t.domains):
        pi, s, mu, alpha = (v.numpy() for v in t._components(params[:, j], dom.kind == "circle")[:4])
        u = ((x[:, j] - dom.low) / (dom.high - dom.low)).numpy()[:, None]
        if dom.kind == "interval":

            def sig(v, s=s, mu=mu, alpha=alpha):
                return ref_sigma(s * (v - mu) + 0.5, alpha, t.beta)

            yk = (sig(u) - sig(0.0)) / (sig(1.0) - sig(0.0))
        else:
            yk = mu + np.floor(u - mu) + ref_sigma(s * (np.mod(u - mu, 1.0) - 0.5) + 0.5, alpha, t.beta)
        y = (1 - t.eps) * (pi * yk).sum(-1) + t.eps * u[:, 0]
        if dom.kind == "circle":  # wrap into the period cell of the input
            y = y - np.floor(y - np.floor(u[:, 0]))
        out[:, j] = dom.low + (dom.high - dom.low) * y
    return out


@pytest.mark.parametrize("beta", [1, 2])
def test_forward_matches_reference_formulas(beta):
    t = SmoothMixture(MIXED, n_components=5, beta=beta).double()
    x, p = draw(200), rand_params(SmoothMixture(MIXED, 5), 200, 2, scale=2.0)
    y, _ = t(x, p)
    np.testing.assert_allclose(y.numpy(), ref_forward(t, x, p), atol=1e-12, rtol=0)


@pytest.mark.parametrize("beta", [1, 2])
@pytest.mark.parametrize("domain", [Domain.interval(0.0, 1.0), Domain.circle(0.0, 1.0)], ids=["interval", "circle"])
def test_zero_params_are_close_to_identity(domain, beta):
    t = SmoothMixture(domain, beta=beta).double()
    x = torch.linspace(0, 1, 4001, dtype=F64)[:-1, None]
    y, ld = t(x, torch.zeros(len(x), 1, t.n_params, dtype=F64))
    bound = 2e-3 if domain.kind == "interval" else 2e-4  # measured 9.4e-4 / 2.6e-4 (interval), 5e-5 / 9e-5 (circle)
    assert (y - x).abs().max() < bound
    assert ld.abs().max() < 0.01


def test_parameter_maps_respect_bounds():
    t = SmoothMixture(MIXED, n_components=4).double()
    for raw in (-60.0, 0.0, 60.0):
        p = torch.full((3, 2, t.n_params), raw, dtype=F64)
        for circle in (False, True):
            pi, s, mu, alpha = t._components(p[:, 0], circle)[:4]
            assert torch.allclose(pi.sum(-1), torch.ones(3, dtype=F64))
            assert ((s >= (1.0 if circle else 0.05) * (1 - 1e-12)) & (s <= 100.0 * (1 + 1e-12))).all()
            assert ((mu >= 0) & (mu <= 1)).all()
            assert ((alpha >= 0.2 * (1 - 1e-12)) & (alpha <= 5.0 * (1 + 1e-12))).all()
        y, ld = t(draw(3), p)
        assert torch.isfinite(y).all() and torch.isfinite(ld).all()


@pytest.mark.parametrize("beta", [1, 2])
def test_derivative_bounded_below_by_eps_and_matches_autograd(beta):
    t = SmoothMixture(MIXED, n_components=6, beta=beta, eps=0.02).double()
    x = draw(200).requires_grad_(True)
    p = rand_params(t, 200, 2, scale=3.0)
    y, ld = t(x, p)
    (dy,) = torch.autograd.grad(y.sum(), x)  # elementwise map: the gradient is the diagonal
    assert (dy >= 0.02 * (1 - 1e-12)).all()
    torch.testing.assert_close(ld, torch.log(dy), atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(ld.exp().min(), dy.min(), atol=1e-9, rtol=1e-9)


def derivatives(t: SmoothMixture, u0: float, p: torch.Tensor) -> list[float]:
    """First, second and third derivative of ``y(u)`` at ``u0`` by nested autograd of the forward map."""
    u = torch.tensor([[u0]], dtype=F64, requires_grad=True)
    out, ds = t(u, p)[0].sum(), []
    for order in range(3):
        (out,) = torch.autograd.grad(out, u, create_graph=order < 2)
        ds.append(out.item())
        out = out.sum()
    return ds


@pytest.mark.parametrize("domain", [Domain.interval(0.0, 1.0), Domain.circle(0.0, 1.0)], ids=["interval", "circle"])
def test_higher_derivatives_vanish_at_component_seams(domain):
    """One component (K = 1): σ is C^∞-flat where the interval window ends (z = 0) and at the circle seam
    (v = 0), so there y' = ε and y'' = y''' = 0 from both sides; elsewhere it is not flat."""
    t = SmoothMixture(domain, n_components=1, eps=0.05).double()
    p = torch.tensor([[[0.0, 2.0, 0.3, -0.5]]], dtype=F64)
    _, s, mu, _ = (v.item() for v in t._components(p[:, 0], domain.kind == "circle")[:4])
    seam = mu - 0.5 / s if domain.kind == "interval" else mu
    assert 0.05 < seam < 0.95
    for u0 in (seam - 1e-4, seam + 1e-4):
        d1, d2, d3 = derivatives(t, u0, p)
        assert abs(d1 - 0.05) < 1e-12 and abs(d2) < 1e-9 and abs(d3) < 1e-6
    centre = mu if domain.kind == "interval" else (mu + 0.5) % 1.0  # z = ½: the component is steepest
    d1, _, _ = derivatives(t, centre, p)
    _, d2, _ = derivatives(t, centre + 0.1 / s, p)
    assert d1 > 1.0 and abs(d2) > 1.0


def test_interval_end_points_are_exact():
    t = SmoothMixture(INTERVAL, n_components=4).double()
    ends = torch.tensor([[-1.0], [2.0]], dtype=F64)
    p = rand_params(t, 2, 1, scale=3.0)
    y, _ = t(ends, p)
    assert torch.equal(y, ends)
    x, _ = t.inverse(ends, p)
    assert torch.equal(x, ends)


def test_circle_periodicity_and_range():
    t = SmoothMixture(CIRCLE, n_components=4).double()
    x = draw(100, [CIRCLE])
    p = rand_params(t, 100, 1, scale=2.0)
    y, ld = t(x, p)
    y_shift, ld_shift = t(x + 2 * math.pi, p)
    torch.testing.assert_close(y_shift, y + 2 * math.pi, atol=1e-12, rtol=0)
    torch.testing.assert_close(ld_shift, ld, atol=1e-12, rtol=0)
    inside = (x >= -math.pi) & (x < math.pi)
    assert ((y[inside] >= -math.pi) & (y[inside] < math.pi)).all()
    # the inverse keeps the period too
    x_back, _ = t.inverse(y_shift, p)
    torch.testing.assert_close(x_back, x + 2 * math.pi, atol=1e-10, rtol=0)


@pytest.mark.parametrize("domains", [INTERVAL, CIRCLE, MIXED], ids=["interval", "circle", "mixed"])
def test_round_trip_float64(domains, device):
    t = SmoothMixture(domains, n_components=6).to(device=device, dtype=F64)
    doms = domains if isinstance(domains, list) else [domains]
    x = draw(200, doms, device=device)
    p = rand_params(t, 200, len(doms), scale=2.5, device=device)
    y, ld = t(x, p)
    x_back, neg_ld = t.inverse(y, p)
    torch.testing.assert_close(x_back, x, atol=1e-9, rtol=0)
    torch.testing.assert_close(neg_ld, -ld, atol=1e-9, rtol=0)
    y_new = draw(200, doms, device=device)
    torch.testing.assert_close(t(t.inverse(y_new, p)[0], p)[0], y_new, atol=1e-9, rtol=0)


def test_round_trip_float32(device):
    t = SmoothMixture(MIXED, n_components=6).to(device)
    y = draw(2000, dtype=torch.float32, device=device)
    p = rand_params(t, 2000, 2, scale=1.0, dtype=torch.float32, device=device)
    x, neg_ld = t.inverse(y, p)  # default tol 1e-6 in float32
    y_back, ld = t(x, p)
    torch.testing.assert_close(y_back, y, atol=2e-4, rtol=0)  # conditioning: up to max|τ'| * ulp(x)
    torch.testing.assert_close(neg_ld, -ld, atol=1e-5, rtol=0)


@pytest.mark.parametrize("domains", [INTERVAL, CIRCLE, MIXED], ids=["interval", "circle", "mixed"])
def test_inverse_gradcheck_and_gradgradcheck(domains):
    t = SmoothMixture(domains, n_components=2, tol=1e-14).double()
    doms = domains if isinstance(domains, list) else [domains]
    n = 1 if isinstance(domains, list) else 2
    x = draw(n, doms)
    p = rand_params(t, n, len(doms), scale=1.0)
    with torch.no_grad():
        y, _ = t(x, p)
    y.requires_grad_(True)
    p.requires_grad_(True)

    def inverse(y, p):
        return t.inverse(y, p)

    assert gradcheck(inverse, (y, p))
    assert gradgradcheck(inverse, (y, p), fast_mode=True)


def test_inverse_gradients_are_the_inverse_function_theorem():
    """dx/dy = 1 / τ'(x) and d(-ℓ)/dy = -ℓ'(x) / τ'(x), checked against forward-only autograd."""
    t = SmoothMixture(MIXED, n_components=4).double()
    p = rand_params(t, 50, 2)
    y = draw(50).requires_grad_(True)
    x, neg_ld = t.inverse(y, p)
    dx_dy = torch.autograd.grad(x.sum(), y, retain_graph=True)[0]
    dnl_dy = torch.autograd.grad(neg_ld.sum(), y)[0]
    xf = x.detach().requires_grad_(True)
    _, ld = t(xf, p)
    dld_dx = torch.autograd.grad(ld.sum(), xf)[0]
    torch.testing.assert_close(dx_dy, torch.exp(-ld.detach()), atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(dnl_dy, -dld_dx * torch.exp(-ld.detach()), atol=1e-8, rtol=1e-8)


def test_non_convergence_raises_with_the_residual():
    t = SmoothMixture(MIXED, n_components=4, max_iter=1).double()
    with pytest.raises(RootFindingError, match=r"max residual \d"):
        t.inverse(draw(20), rand_params(t, 20, 2, scale=3.0))


def test_bad_inputs_raise():
    t = SmoothMixture(MIXED, n_components=2).double()
    p = torch.zeros(1, 2, t.n_params, dtype=F64)
    for bad in ([[2.5, 0.0]], [[-1.1, 0.0]]):
        with pytest.raises(ValueError, match="outside the interval"):
            t(torch.tensor(bad, dtype=F64), p)
        with pytest.raises(ValueError, match="outside the interval"):
            t.inverse(torch.tensor(bad, dtype=F64), p)
    t(torch.tensor([[0.0, 10.0]], dtype=F64), p)  # circle coordinates may lie anywhere
    with pytest.raises(ValueError, match="non-finite"):
        t(torch.tensor([[float("nan"), 0.0]], dtype=F64), p)
    with pytest.raises(ValueError, match=r"params must have shape \(1, 2, 8\)"):
        t(torch.zeros(1, 2, dtype=F64), torch.zeros(1, 2, 7, dtype=F64))
    with pytest.raises(ValueError, match="not on the real line"):
        SmoothMixture(Domain.real())
    with pytest.raises(ValueError, match="real-line coordinates"):
        SmoothMixture([Domain.real(), INTERVAL])(torch.zeros(1, 2), torch.zeros(1, 2, 32))
    for kwargs in ({"beta": 3}, {"eps": 0.0}, {"n_components": 0}, {"max_iter": 0}, {"tol": -1.0}):
        with pytest.raises(ValueError):
            SmoothMixture(INTERVAL, **kwargs)


def test_restrict_and_empty_batch():
    t = SmoothMixture([Domain.real(), INTERVAL, CIRCLE, Domain.real()], n_components=2)
    sub = t.restrict([1, 2])
    assert sub.domains == [INTERVAL, CIRCLE] and sub.n_params == t.n_params
    y, ld = sub(torch.zeros(0, 2), torch.zeros(0, 2, sub.n_params))
    assert y.shape == (0, 2) and ld.shape == (0, 2)
    x, nld = sub.inverse(torch.zeros(0, 2), torch.zeros(0, 2, sub.n_params))
    assert x.shape == (0, 2) and nld.shape == (0, 2)


# ---- force matching through the smooth inverse --------------------------------------------------------------
def smooth_bg() -> DensityModel:
    torch.manual_seed(1)
    domains = [Domain.interval(0.0, 1.0), Domain.circle()]
    layers = [
        F.Coupling(2, SmoothMixture(domains, n_components=2, tol=1e-13), mask, hidden=(8,))
        for mask in ([False, True], [True, False])
    ]
    flow = F.Sequential(*layers).double()
    with torch.no_grad():
        for q in flow.parameters():
            q.add_(0.3 * torch.randn_like(q))
    prior = UniformBox(torch.tensor([0.0, -math.pi]), torch.tensor([1.0, math.pi])).double()
    return DensityModel(prior, flow)


def exact_forces(bg: DensityModel, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x = f(z)`` and ``∇ₓ log q(x) = -J⁻ᵀ ∇_z log|det J|`` (uniform prior), from the forward map only."""
    z = z.clone().requires_grad_(True)
    x, logdet = bg.flow(z)
    (grad_logdet,) = torch.autograd.grad(logdet.sum(), z)
    forces = []
    for i in range(len(z)):
        jac = torch.autograd.functional.jacobian(lambda v: bg.flow(v[None])[0][0], z[i].detach())
        forces.append(-torch.linalg.solve(jac.T, grad_logdet[i]))
    return x.detach(), torch.stack(forces)


def test_force_matching_is_zero_for_the_exact_forces():
    bg = smooth_bg()
    x, forces = exact_forces(bg, bg.prior.sample(8))
    loss = ForceMatching(bg, x, forces, batch_size=None)
    assert loss().item() < 1e-16
    assert forces.abs().max() > 0.1  # the target is not trivial
    shifted = ForceMatching(bg, x, forces + 0.5, batch_size=None)
    assert abs(shifted().item() - 0.5) < 1e-6  # |0.5|² summed over 2 coordinates


def test_force_matching_gradient_matches_finite_differences():
    bg = smooth_bg()
    x = bg.sample_with_log_prob(6)[0].detach()
    loss = ForceMatching(bg, x, torch.randn(6, 2, dtype=F64), batch_size=None)
    params = list(bg.flow.parameters())
    value = loss()
    grads = torch.autograd.grad(value, params)
    assert all(torch.isfinite(g).all() for g in grads)
    direction = [torch.randn_like(q) for q in params]
    h = 1e-6

    def shifted(sign: float) -> float:
        with torch.no_grad():
            for q, v in zip(params, direction):
                q.add_(sign * h * v)
        out = loss().item()
        with torch.no_grad():
            for q, v in zip(params, direction):
                q.sub_(sign * h * v)
        return out

    fd = (shifted(1.0) - shifted(-1.0)) / (2 * h)
    analytic = sum((g * v).sum() for g, v in zip(grads, direction)).item()
    assert abs(fd - analytic) < 1e-6 * max(1.0, abs(analytic))
    # one small gradient step lowers the loss
    with torch.no_grad():
        for q, g in zip(params, grads):
            q.sub_(1e-3 * g / max(g.norm() for g in grads))
    assert loss().item() < value.item()
