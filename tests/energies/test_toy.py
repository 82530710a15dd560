"""Toy energies: the Energy protocol on each of them, and their exact references."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy import integrate, optimize, stats

from bgflow_sci.energies import (
    DW4,
    LJ13,
    DoubleWell2D,
    DoubleWellParticles,
    Energy,
    GaussianMixture,
    GaussianMixture40,
    LennardJonesCluster,
    ManyWell,
    ManyWell32,
    MuellerBrown,
)
from bgflow_sci.energies.quadrature import finite_support, inverse_cdf_sampler, log_integral_1d
from tests.conftest import tolerance


def _lattice_cluster(n: int, batch: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Jittered cubic lattice with spacing 1.1: LJ configurations with moderate energies."""
    pts = torch.stack(torch.meshgrid(*[torch.arange(3.0)] * 3, indexing="ij"), dim=-1).reshape(-1, 3)[:n] * 1.1
    x = pts[None] + 0.05 * torch.randn(batch, n, 3)
    return x.reshape(batch, -1).to(device=device, dtype=dtype)


# name -> (factory, sampler of typical configurations (batch, dtype, device))
CASES: dict[str, tuple[Callable[[], Energy], Callable[..., torch.Tensor]]] = {
    "double_well": (DoubleWell2D, lambda b, dt, dev: 1.5 * torch.randn(b, 2).to(dev, dt)),
    "mueller_brown": (
        MuellerBrown,
        lambda b, dt, dev: (torch.rand(b, 2) * torch.tensor([2.5, 2.5]) + torch.tensor([-1.5, -0.5])).to(dev, dt),
    ),
    "gmm40": (GaussianMixture40, lambda b, dt, dev: (90 * torch.rand(b, 2) - 45).to(dev, dt)),
    "many_well": (ManyWell32, lambda b, dt, dev: 1.5 * torch.randn(b, 32).to(dev, dt)),
    "dw4": (DW4, lambda b, dt, dev: 2.0 * torch.randn(b, 8).to(dev, dt)),
    "lj13": (LJ13, lambda b, dt, dev: _lattice_cluster(13, b, dt, dev)),
}


@pytest.fixture(params=list(CASES), ids=list(CASES))
def case(request, device):
    factory, configs = CASES[request.param]
    return factory().to(device), configs


# ---- the Energy protocol on every toy energy ------------------------------------------------------
def test_shape_dtype_finite(case, dtype, device):
    energy, configs = case
    x = configs(7, dtype, device)
    u = energy.energy(x)
    assert u.shape == (7,) and u.dtype == dtype and u.device.type == device.type
    assert torch.isfinite(u).all()


def test_force_is_minus_autograd_gradient(case, dtype, device):
    energy, configs = case
    x = configs(5, dtype, device).requires_grad_(True)
    (grad,) = torch.autograd.grad(energy.energy(x).sum(), x)
    f = energy.force(x.detach())
    assert f.shape == x.shape
    torch.testing.assert_close(f, -grad, **tolerance(dtype))


def test_force_matches_finite_differences(case, device):
    energy, configs = case
    x = configs(3, torch.float64, device)
    h = 1e-6
    eye = torch.eye(energy.dim, dtype=torch.float64, device=device)
    up = energy.energy((x[:, None, :] + h * eye).reshape(-1, energy.dim)).reshape(3, energy.dim)
    down = energy.energy((x[:, None, :] - h * eye).reshape(-1, energy.dim)).reshape(3, energy.dim)
    fd = -(up - down) / (2 * h)
    f = energy.force(x)
    torch.testing.assert_close(f, fd, rtol=1e-5, atol=1e-5 * (1.0 + f.abs().max().item()))


def test_nan_row_gives_inf_energy_and_zero_force(case, dtype, device):
    energy, configs = case
    x = configs(4, dtype, device)
    clean_u, clean_f = energy.energy(x), energy.force(x)
    x_bad = x.clone()
    x_bad[1, 0] = float("nan")
    energy.reset_invalid_count()
    u, f = energy.energy(x_bad), energy.force(x_bad)
    assert u[1] == math.inf and not torch.isnan(u).any()
    assert (f[1] == 0).all() and torch.isfinite(f).all()
    keep = torch.tensor([0, 2, 3], device=device)
    torch.testing.assert_close(u[keep], clean_u[keep], **tolerance(dtype))
    torch.testing.assert_close(f[keep], clean_f[keep], **tolerance(dtype))
    assert energy.reset_invalid_count() >= 1


def test_empty_batch_and_wrong_shape(case, dtype, device):
    energy, _ = case
    empty = torch.empty(0, energy.dim, dtype=dtype, device=device)
    assert energy.energy(empty).shape == (0,)
    assert energy.force(empty).shape == (0, energy.dim)
    with pytest.raises(ValueError):
        energy.energy(torch.zeros(3, energy.dim + 1, dtype=dtype, device=device))
    with pytest.raises(ValueError):
        energy.energy(torch.zeros(energy.dim, dtype=dtype, device=device))


# ---- quadrature helpers -----------------------------------------------------------------------------
def test_log_integral_of_gaussian():
    log_z = log_integral_1d(lambda x: 0.5 * (x - 1.0) ** 2 / 0.3**2, -9.0, 11.0, 2000)
    assert abs(log_z - 0.5 * math.log(2 * math.pi * 0.3**2)) < 1e-10
    low, high = finite_support(lambda x: x**4)
    assert low < -(50 ** (1 / 4)) < 50 ** (1 / 4) < high < 3.0
    sampler = inverse_cdf_sampler(lambda x: 0.5 * x**2, -12.0, 12.0, 20001)
    s = sampler(20000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert stats.kstest(s.numpy(), stats.norm.cdf).pvalue > 0.01


# ---- double well ------------------------------------------------------------------------------------
def test_double_well_log_z_matches_brute_force_grid():
    dw = DoubleWell2D()
    x1 = torch.linspace(-5.0, 5.0, 2001, dtype=torch.float64)
    x2 = torch.linspace(-12.0, 12.0, 1201, dtype=torch.float64)
    grid = torch.cartesian_prod(x1, x2)
    cell = (x1[1] - x1[0]) * (x2[1] - x2[0])
    brute = (torch.logsumexp(-dw.energy(grid), 0) + torch.log(cell)).item()
    assert abs(dw.log_z() - brute) < 1e-4
    # Z_x1 = 11784.50927 is the constant quoted for this well in FAB's code (Midgley et al. 2023)
    assert abs(dw.log_z_x1() - math.log(11784.50927)) < 1e-6


def test_double_well_marginal_and_free_energy_difference():
    dw = DoubleWell2D()
    grid = torch.linspace(-6.0, 6.0, 24001, dtype=torch.float64)
    f = dw.marginal_x1_free_energy(grid)
    assert f.shape == grid.shape and f.dtype == torch.float64
    assert abs(torch.trapezoid(torch.exp(-f), grid).item() - 1.0) < 1e-8

    def p(x: float) -> float:
        return math.exp(-dw.marginal_x1_free_energy(torch.tensor([x], dtype=torch.float64)).item())

    p_left = integrate.quad(p, -6.0, 0.0, epsabs=1e-13, limit=200)[0]
    p_right = integrate.quad(p, 0.0, 6.0, epsabs=1e-13, limit=200)[0]
    assert abs(p_left + p_right - 1.0) < 1e-8
    delta_f = dw.free_energy_difference_exact(0.0)
    assert abs(delta_f - (-math.log(p_right) + math.log(p_left))) < 1e-6
    assert delta_f < 0  # c < 0 tilts towards the right well
    with pytest.raises(ValueError):
        dw.free_energy_difference_exact(10.0)


def test_double_well_exact_samples(device):
    dw = DoubleWell2D()
    gen = torch.Generator().manual_seed(123)
    s = dw.sample_exact(20000, generator=gen, device=device, dtype=torch.float64)
    assert s.shape == (20000, 2) and s.dtype == torch.float64 and s.device.type == device.type
    # independent reference CDF of x1 on its own grid
    x = np.linspace(-6.0, 6.0, 60001)
    dens = np.exp(-(x**4 - 6 * x**2 - 0.5 * x) - dw.log_z_x1())
    cdf = integrate.cumulative_trapezoid(dens, x, initial=0.0)
    assert abs(cdf[-1] - 1.0) < 1e-8
    s = s.cpu().numpy()
    assert stats.kstest(s[:, 0], lambda q: np.interp(q, x, cdf)).pvalue > 0.01
    assert stats.kstest(s[:, 1], stats.norm.cdf).pvalue > 0.01
    p_right = 1.0 / (1.0 + math.exp(dw.free_energy_difference_exact()))
    assert abs((s[:, 0] > 0).mean() - p_right) < 0.015
    assert dw.sample_exact(3).dtype == torch.get_default_dtype()


# ---- many well --------------------------------------------------------------------------------------
def test_many_well_is_sum_of_double_wells(dtype, device):
    mw, dw = ManyWell32().to(device), DoubleWell2D().to(device)
    assert mw.dim == 32 and mw.n_copies == 16
    assert abs(mw.log_z() - 16 * dw.log_z()) < 1e-10
    x = 1.5 * torch.randn(6, 32, dtype=dtype, device=device)
    ref = dw.energy(x.reshape(-1, 2)).reshape(6, 16).sum(-1)
    torch.testing.assert_close(mw.energy(x), ref, **tolerance(dtype))
    assert ManyWell(n_copies=3).dim == 6


def test_many_well_exact_samples(device):
    mw = ManyWell(n_copies=16)
    s = mw.sample_exact(2000, generator=torch.Generator().manual_seed(5), device=device, dtype=torch.float64)
    assert s.shape == (2000, 32)
    x1, x2 = s[:, 0::2].cpu().numpy().ravel(), s[:, 1::2].cpu().numpy().ravel()
    p_right = 1.0 / (1.0 + math.exp(mw.well.free_energy_difference_exact()))
    assert abs((x1 > 0).mean() - p_right) < 0.01
    assert abs(x2.std() - 1.0) < 0.02 and abs(x2.mean()) < 0.02


# ---- Gaussian mixtures ------------------------------------------------------------------------------
def test_gaussian_mixture_matches_scipy(dtype, device):
    means = torch.tensor([[0.0, 1.0, -1.0], [2.0, 0.5, 0.0], [-1.0, -2.0, 3.0]], dtype=torch.float64)
    scales = torch.tensor([[1.0, 0.5, 2.0], [0.3, 0.3, 0.3], [1.5, 1.0, 0.7]], dtype=torch.float64)
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    gmm = GaussianMixture(means, scales, weights).to(device)
    x = 2 * torch.randn(10, 3, dtype=torch.float64)
    ref = np.log(
        sum(
            w * stats.multivariate_normal(m.numpy(), np.diag(s.numpy() ** 2)).pdf(x.numpy())
            for m, s, w in zip(means, scales, weights.tolist())
        )
    )
    u = gmm.energy(x.to(device, dtype))
    torch.testing.assert_close(u.cpu().double(), torch.as_tensor(-ref), **tolerance(dtype))
    assert gmm.log_z() == 0.0
    with pytest.raises(ValueError):
        GaussianMixture(means, -scales)


def test_gmm40_parameters_follow_fab():
    gmm = GaussianMixture40()
    assert gmm.dim == 2 and gmm.n_components == 40
    torch.manual_seed(0)  # FAB draws its means from the global generator right after seeding with 0
    fab_means = (torch.rand((40, 2)) - 0.5) * 2 * 40
    torch.testing.assert_close(gmm.means, fab_means.double(), rtol=0, atol=0)
    torch.testing.assert_close(gmm.scales, torch.full((40, 2), math.log1p(math.e), dtype=torch.float64))
    assert (gmm.means.abs() <= 40).all()
    assert not torch.equal(GaussianMixture40(seed=1).means, gmm.means)


def test_gmm40_is_normalised_on_a_grid():
    gmm = GaussianMixture40()
    # step 0.5 ≈ 0.38 σ: the Riemann sum of a Gaussian is then exact to ~exp(-2π²σ²/h²) ≈ 1e-59
    t = torch.linspace(-50.0, 50.0, 201, dtype=torch.float64)
    grid = torch.cartesian_prod(t, t)
    log_z = (torch.logsumexp(-gmm.energy(grid), 0) + 2 * math.log(t[1] - t[0])).item()
    assert abs(log_z - gmm.log_z()) < 1e-3


def test_gmm40_exact_samples(device):
    gmm = GaussianMixture40().to(device)
    n = 100_000
    s = gmm.sample_exact(n, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(device)
    assert s.shape == (n, 2)
    mean, cov = gmm.mean(), gmm.covariance()
    se = (torch.diagonal(cov) / n).sqrt()
    assert ((s.mean(0) - mean).abs() < 5 * se).all()
    torch.testing.assert_close(torch.cov(s.T), cov, rtol=0.05, atol=0.05 * cov.abs().max().item())
    assert torch.isfinite(gmm.energy(s)).all()
    # fraction of samples nearest to each mean ≈ 1/40 (the components barely overlap)
    nearest = torch.cdist(s, gmm.means.to(s)).argmin(-1)
    frac = torch.bincount(nearest, minlength=40).double() / n
    assert (frac - 1 / 40).abs().max() < 0.01


# ---- Müller–Brown -----------------------------------------------------------------------------------
def test_mueller_brown_minima(device):
    mb = MuellerBrown().to(device)
    values = (-146.6995, -108.1667, -80.7678)

    def v(p: np.ndarray) -> float:
        return mb.potential(torch.as_tensor(p, dtype=torch.float64, device=device)[None]).item()

    ring = 0.01 * torch.tensor(
        [[math.cos(a), math.sin(a)] for a in np.linspace(0, 2 * math.pi, 8, endpoint=False)], dtype=torch.float64
    )
    for (px, py), ref_v in zip(mb.minima, values):
        p = torch.tensor([[px, py]], dtype=torch.float64, device=device)
        u0 = mb.energy(p)
        assert (mb.energy(p + ring.to(device)) > u0).all()
        opt = optimize.minimize(v, np.array([px, py]), method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-12})
        assert np.abs(opt.x - np.array([px, py])).max() < 1e-3
        assert abs(opt.fun - ref_v) < 1e-3
        torch.testing.assert_close(u0, mb.beta * mb.potential(p))
        # at the stored (rounded) minimum the reduced force is small compared with typical forces
        assert mb.force(p).norm() < 0.1


# ---- particle systems -------------------------------------------------------------------------------
def _random_orthogonal(d: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    q[:, 0] = -q[:, 0]  # include a reflection
    return q.to(device, dtype)


@pytest.mark.parametrize("name", ["dw4", "lj13"])
def test_particle_energy_invariances(name, dtype, device):
    factory, configs = CASES[name]
    energy = factory().to(device)
    n, d = energy.n_particles, energy.spatial_dim
    x = configs(5, dtype, device)
    u = energy.energy(x)
    pos = energy.positions(x)
    rot = _random_orthogonal(d, dtype, device)
    shift = torch.randn(5, 1, d, dtype=dtype, device=device) * 3
    perm = torch.randperm(n, device=device)
    tol = {"rtol": 1e-5, "atol": 1e-3} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-9}
    for moved in (pos @ rot.T, pos + shift, pos[:, perm]):
        torch.testing.assert_close(energy.energy(moved.reshape(5, -1)), u, **tol)


def test_double_well_particles_pair_potential():
    dw4 = DW4()
    assert dw4.dim == 8 and dw4.n_particles == 4 and dw4.spatial_dim == 2
    r_min = math.sqrt(4.0 / (2 * 0.9))  # stationary points of b r^2 + c r^4 away from r = 0
    d = torch.tensor([4.0, 4.0 + r_min, 4.0 - r_min], dtype=torch.float64)
    torch.testing.assert_close(dw4.pair_potential(d), torch.tensor([0.0, -16 / 3.6, -16 / 3.6], dtype=torch.float64))
    # two particles: energy is the single pair term
    two = DoubleWellParticles(n_particles=2, spatial_dim=3, tau=2.0)
    x = torch.tensor([[0.0, 0.0, 0.0, 3.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(two.energy(x), torch.tensor([(-4 * 1.0 + 0.9 * 1.0) / 2.0], dtype=torch.float64))


def test_lennard_jones_pair_minimum():
    lj = LennardJonesCluster(n_particles=2, spatial_dim=3, eps=2.0, rm=1.3, tau=0.5, oscillator_scale=0.0)
    r = torch.linspace(1.0, 2.0, 1001, dtype=torch.float64)
    phi = lj.pair_potential(r)
    assert abs(r[phi.argmin()].item() - 1.3) < 1e-3
    torch.testing.assert_close(lj.pair_potential(torch.tensor(1.3, dtype=torch.float64)), torch.tensor(-4.0).double())
    x = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.3, 0.0]], dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(lj.energy(x), torch.tensor([-4.0], dtype=torch.float64))
    assert lj.force(x).abs().max() < 1e-10
    # default units: pair at r_m gives -eps, the tether adds k/2 Σ |x_i - x̄|^2 = 0.5 (2 · 0.5^2)
    lj2 = LennardJonesCluster(n_particles=2, spatial_dim=3)
    x1 = torch.tensor([[0.0, 0.0, 0.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(lj2.energy(x1), torch.tensor([-1.0 + 0.25], dtype=torch.float64))
    assert LJ13().dim == 39


def test_lennard_jones_overlap_is_plus_inf(dtype, device):
    lj = LJ13().to(device)
    x = _lattice_cluster(13, 3, dtype, device)
    x[1, 3:6] = x[1, 0:3]  # particle 1 on top of particle 0
    u, f = lj.energy(x), lj.force(x)
    assert u[1] == math.inf and torch.isfinite(u[[0, 2]]).all()
    assert (f[1] == 0).all() and torch.isfinite(f).all()
