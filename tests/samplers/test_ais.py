"""AIS estimates exact partition functions (cheap versions; full precision in benchmarks/log_z.py)."""

from __future__ import annotations

import pytest
import torch

from bgflow_sci.distributions import Normal
from bgflow_sci.energies import GaussianMixture40, InterpolatedEnergy, ManyWell
from bgflow_sci.samplers import HMC, MALA, AnnealedImportanceSampler, InterpolatedPotential, default_betas

from ._targets import CorrelatedGaussian


def _check(result, exact, max_error):
    est = result.log_z
    assert est.error < max_error, est  # the check below is not vacuous
    assert abs(est.value - exact) < 3 * est.error + 0.02, (est, exact)


def test_ais_gmm40(device):
    target = GaussianMixture40().to(device)
    prior = Normal(2, 0.0, 30.0).double().to(device)
    ais = AnnealedImportanceSampler(target, prior, n_steps=100, kernel=MALA, step_size=1.0, adapt_rate=0.5)
    result = ais.run(1500, seed=0, progress=False, dtype=torch.float64)
    assert result.samples.shape == (1500, 2) and result.log_weights.shape == (1500,)
    assert result.samples.device.type == device.type
    assert result.acceptance.shape == (100,) and result.ess > 0.2
    _check(result, target.log_z(), 0.05)
    # the samples cover the modes: most components hold a resampled point
    idx = torch.multinomial(torch.softmax(result.log_weights, 0), 1500, replacement=True)
    nearest = torch.cdist(result.samples[idx], target.means).argmin(1)
    assert nearest.unique().numel() >= 35


def test_ais_many_well_4d(device):
    target = ManyWell(n_copies=2).to(device)
    prior = Normal(4, 0.0, torch.tensor([2.0, 1.0, 2.0, 1.0])).double().to(device)
    kernel = lambda p, s: HMC(p, s, n_leapfrog=5)  # noqa: E731
    ais = AnnealedImportanceSampler(target, prior, n_steps=400, kernel=kernel, step_size=0.3, adapt_rate=0.5)
    result = ais.run(1000, seed=1, progress=False, dtype=torch.float64)
    _check(result, target.log_z(), 0.05)


def test_ais_between_gaussians_float32(device):
    """Geometric path between two Gaussians: log Z of the unnormalised target is log(2π √det Σ)."""
    target = CorrelatedGaussian().to(device)
    ais = AnnealedImportanceSampler(target, Normal(2).to(device), n_steps=50, step_size=0.3)
    result = ais.run(2000, seed=2, progress=False)
    assert result.samples.dtype == torch.float32
    cov = torch.tensor([[2.0, 0.9], [0.9, 1.0]], dtype=torch.float64)
    exact = float(torch.log(2 * torch.pi * torch.linalg.det(cov).sqrt()))
    _check(result, exact, 0.03)


class _Counting(CorrelatedGaussian):
    calls = 0

    def _energy(self, x):
        self.calls += 1
        return super()._energy(x)


def test_interpolated_potential_rescales_without_evaluations(device):
    prior, target = Normal(2).double().to(device), _Counting().to(device)
    pot = InterpolatedPotential(prior, target, beta=0.3)
    assert isinstance(pot.path, InterpolatedEnergy) and pot.path.end is target  # the energy of the SNF blocks
    x = torch.randn(7, 2, dtype=torch.float64).to(device)
    state = pot.evaluate(x)
    calls = target.calls
    moved = pot.set_beta(0.8, state)
    assert target.calls == calls and pot.beta == 0.8
    fresh = pot.evaluate(x)
    torch.testing.assert_close(moved.energy, fresh.energy)
    torch.testing.assert_close(moved.force, fresh.force)
    torch.testing.assert_close(fresh.energy, 0.2 * prior.energy(x) + 0.8 * target.energy(x))
    u, f = pot.path.energy_and_force(x)  # the same mixture as the one energy's
    torch.testing.assert_close(fresh.energy, u)
    torch.testing.assert_close(fresh.force, f)
    torch.testing.assert_close(pot.components(fresh), torch.stack([prior.energy(x), target.energy(x)], -1))
    for beta in (0.0, 1.0):  # the end points still keep both components (for the AIS weights)
        state = pot.set_beta(beta, fresh)
        torch.testing.assert_close(state.energy, (target if beta else prior).energy(x))


def test_bad_schedules():
    target, prior = CorrelatedGaussian(), Normal(2)
    for betas in ([0.0, 0.5, 0.4, 1.0], [0.1, 1.0], [0.0, 0.9], [0.0]):
        with pytest.raises(ValueError, match="betas"):
            AnnealedImportanceSampler(target, prior, betas=torch.tensor(betas))
    with pytest.raises(ValueError, match="n_steps"):
        default_betas(0)
    with pytest.raises(ValueError, match="step_size"):
        AnnealedImportanceSampler(target, prior, step_size=-1.0)
