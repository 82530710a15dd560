"""Kernels leave their targets invariant: correlated Gaussian moments and the double well's exact x1 marginal."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import kstest

from bgflow_sci.energies import DoubleWell2D
from bgflow_sci.samplers import (
    HMC,
    MALA,
    OverdampedLangevin,
    RandomWalkMetropolis,
    Sampler,
    UnderdampedLangevin,
    baoab_step,
    leapfrog,
    metropolis_accept,
    overdamped_langevin_step,
)

from ._targets import COV, MEAN, CorrelatedGaussian, double_well_x1_cdf

N_CHAINS = 4000

KERNELS = {
    "rwm": lambda e: RandomWalkMetropolis(e, 0.8, adapt=False),
    "mala": lambda e: MALA(e, 0.3, adapt=False),
    "hmc": lambda e: HMC(e, 0.3, n_leapfrog=5, adapt=False),
    "ula": lambda e: OverdampedLangevin(e, 0.02),
    "baoab": lambda e: UnderdampedLangevin(e, 0.3, friction=1.0),
}


def _moments(x):
    x = x.double()
    return x.mean(0), torch.cov(x.T)


@pytest.mark.parametrize("name", list(KERNELS))
def test_gaussian_invariance(name, dtype, device):
    energy = CorrelatedGaussian().to(device)
    gen = torch.Generator().manual_seed(1)
    x0 = energy.sample(N_CHAINS, gen, dtype, device)
    sampler = Sampler(KERNELS[name](energy), x0, seed=2)
    samples, energies, diag = sampler.run(60, thin=20, progress=False)
    assert samples.shape == (3, N_CHAINS, 2) and samples.dtype == dtype and samples.device.type == device.type
    assert energies.shape == (3, N_CHAINS)
    mean, cov = _moments(samples[-1].cpu())
    ref_cov = COV.clone()
    if name == "ula":  # O(ε) bias of the unadjusted chain: Σ_ε = Σ (I - ε Σ⁻¹ / 2)⁻¹, +1.4 % here
        ref_cov = COV @ torch.linalg.inv(torch.eye(2, dtype=torch.float64) - 0.01 * torch.linalg.inv(COV))
    se_mean = (torch.diag(COV) / N_CHAINS).sqrt()
    assert (mean - MEAN).abs().le(4 * se_mean).all(), (mean, MEAN)
    torch.testing.assert_close(cov, ref_cov, atol=0.09, rtol=0.0)
    if diag["acceptance"] is not None:
        assert 0.3 < diag["mean_acceptance"] < 1.0


def test_unadjusted_bias_is_detected(device):
    """The moment check has power: ULA with a large step matches Σ_ε and not Σ."""
    energy = CorrelatedGaussian().to(device)
    gen = torch.Generator().manual_seed(3)
    eps = 0.3
    x0 = energy.sample(5 * N_CHAINS, gen, torch.float64, device)
    samples, _, _ = Sampler(OverdampedLangevin(energy, eps), x0, seed=4).run(100, thin=100, progress=False)
    _, cov = _moments(samples[-1].cpu())
    biased = COV @ torch.linalg.inv(torch.eye(2, dtype=torch.float64) - 0.5 * eps * torch.linalg.inv(COV))
    torch.testing.assert_close(cov, biased, atol=0.05, rtol=0.0)
    assert (cov - COV).abs().max() > 0.12


@pytest.mark.parametrize("name", ["rwm", "mala", "hmc"])
def test_double_well_exact_marginal(name, device):
    """Started from exact samples, a Metropolis-adjusted kernel keeps the exact x1 marginal (KS test, iid chains)."""
    well = DoubleWell2D().to(device)
    gen = torch.Generator().manual_seed(5)
    x0 = well.sample_exact(N_CHAINS, generator=gen, dtype=torch.float64).to(device)
    kernel = {
        "rwm": RandomWalkMetropolis(well, 0.5),
        "mala": MALA(well, 0.05),
        "hmc": HMC(well, 0.1, n_leapfrog=5),
    }[name]
    samples, _, diag = Sampler(kernel, x0, seed=6).run(100, thin=100, burn_in=50, progress=False)
    # chains are independent, so the final states are iid draws of the chain's law at that time
    p = kstest(samples[-1, :, 0].cpu().numpy(), double_well_x1_cdf(well)).pvalue
    assert p > 0.01, p
    assert diag["mean_acceptance"] > 0.2


def test_double_well_marginal_test_has_power(device):
    """The same KS test rejects an unadjusted Langevin chain with a large step."""
    well = DoubleWell2D().to(device)
    gen = torch.Generator().manual_seed(5)
    x0 = well.sample_exact(N_CHAINS, generator=gen, dtype=torch.float64).to(device)
    samples, _, _ = Sampler(OverdampedLangevin(well, 0.03), x0, seed=6).run(100, thin=100, progress=False)
    assert kstest(samples[-1, :, 0].cpu().numpy(), double_well_x1_cdf(well)).pvalue < 1e-4


def test_adaptation_reaches_target_then_freezes(device):
    energy = CorrelatedGaussian().to(device)
    x0 = energy.sample(500, torch.Generator().manual_seed(7), torch.float64, device)
    kernel = MALA(energy, 0.01, per_chain=False, target_acceptance=0.6)
    sampler = Sampler(kernel, x0, seed=8)
    _, _, diag = sampler.run(200, burn_in=300, progress=False)
    assert abs(diag["mean_acceptance"] - 0.6) < 0.06
    frozen = kernel.step_size.clone()
    assert torch.all(frozen == frozen[0]) and frozen[0] > 0.1
    sampler.run(20, burn_in=20, progress=False)  # later warm-ups do not adapt again
    assert torch.equal(kernel.step_size, frozen)


def test_per_chain_step_sizes(device):
    energy = CorrelatedGaussian().to(device)
    x0 = energy.sample(8, torch.Generator().manual_seed(9), torch.float32, device)
    steps = torch.linspace(0.05, 3.0, 8, device=device)
    kernel = RandomWalkMetropolis(energy, steps, adapt=False)
    _, _, diag = Sampler(kernel, x0, seed=0).run(400, progress=False)
    acc = diag["acceptance"]
    assert acc.shape == (8,) and acc[0] > 0.9 and acc[-1] < 0.5


# ---- single-step functions ---------------------------------------------------------------------------------------
def test_overdamped_step_returns_its_noise(device):
    x, f, noise = (torch.randn(5, 3).to(device) for _ in range(3))
    eps = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5], device=device)
    y, used = overdamped_langevin_step(x, f, eps, noise=noise)
    assert used is noise
    torch.testing.assert_close(y, x + eps[:, None] * f + (2 * eps[:, None]).sqrt() * noise)
    with pytest.raises(ValueError, match="shape"):
        overdamped_langevin_step(x, f, 0.1, noise=torch.randn(5, 2, device=device))


def test_leapfrog_is_reversible_and_conserves_energy(device):
    energy = CorrelatedGaussian().double().to(device)
    x = torch.randn(10, 2, dtype=torch.float64).to(device)
    p = torch.randn(10, 2, dtype=torch.float64).to(device)
    x1, p1, f1 = leapfrog(x, p, energy.force(x), energy.force, 0.05, 40)
    x2, p2, _ = leapfrog(x1, -p1, f1, energy.force, 0.05, 40)
    torch.testing.assert_close(x2, x)
    torch.testing.assert_close(-p2, p)
    h0 = energy.energy(x) + 0.5 * (p**2).sum(-1)
    h1 = energy.energy(x1) + 0.5 * (p1**2).sum(-1)
    assert (h1 - h0).abs().max() < 5e-3


def test_baoab_without_friction_is_velocity_verlet(device):
    energy = CorrelatedGaussian().double().to(device)
    x, v = torch.randn(4, 2, dtype=torch.float64).to(device), torch.randn(4, 2, dtype=torch.float64).to(device)
    xb, vb, _, _ = baoab_step(x, v, energy.force(x), energy.force, 0.1, friction=1e-12, noise=torch.zeros_like(x))
    xl, vl, _ = leapfrog(x, v, energy.force(x), energy.force, 0.1, 1)
    torch.testing.assert_close(xb, xl)
    torch.testing.assert_close(vb, vl)


def test_metropolis_accept_edge_cases(device):
    lr = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, 50.0], dtype=torch.float64, device=device)
    acc = metropolis_accept(lr, torch.Generator(device=device).manual_seed(0))
    assert acc.tolist() == [False, True, False, True, True]
    minus_one = torch.full((20000,), -1.0, device=device)
    rate = metropolis_accept(minus_one, torch.Generator(device=device).manual_seed(1)).float().mean().cpu()
    assert abs(rate - torch.exp(torch.tensor(-1.0))) < 0.015
