"""Stochastic flow layers: exact path weights (Wu, Köhler, Noé 2020) checked against known partition functions."""

from __future__ import annotations

import math

import pytest
import torch

from bgflow_sci import BoltzmannGenerator
from bgflow_sci import reweighting as rw
from bgflow_sci.distributions import Joint, Normal
from bgflow_sci.energies import Energy, InterpolatedEnergy, PhaseSpaceEnergy
from bgflow_sci.flows import ActNorm, Sequential
from bgflow_sci.flows.stochastic import (
    MetropolisMC,
    OverdampedLangevinBlock,
    PositionsOnly,
    UnderdampedLangevinBlock,
)
from bgflow_sci.training import ReverseKL


class Gaussian(Energy):
    """u = |x - m|² / (2 s²); log Z = (d/2) log(2π s²)."""

    def __init__(self, dim: int, m: float, s: float):
        super().__init__(dim)
        self.m, self.s = m, s

    def _energy(self, x):
        return ((x - self.m) ** 2).sum(-1) / (2 * self.s**2)

    def log_z(self) -> float:
        return 0.5 * self.dim * math.log(2 * math.pi * self.s**2)


def fixed_affine(dim: int, shift: float, log_scale: float) -> ActNorm:
    act = ActNorm(dim)
    with torch.no_grad():
        act.shift.fill_(shift)
        act.log_scale.fill_(log_scale)
    act.initialized.fill_(True)
    return act


def snf(prior: Normal, target: Energy, dim: int) -> Sequential:
    return Sequential(
        fixed_affine(dim, 0.5, 0.2),
        OverdampedLangevinBlock(InterpolatedEnergy(prior.energy, target, 0.5), dim, step_size=0.05, n_steps=5),
        MetropolisMC(InterpolatedEnergy(prior.energy, target, 1.0), dim, step_size=0.5, n_steps=10),
    )


def test_stochastic_flow_estimates_log_z_of_gaussian(dtype, device):
    torch.manual_seed(3)
    dim = 2
    prior, target = Normal(dim), Gaussian(dim, 1.0, 1.6)
    bg = BoltzmannGenerator(prior, snf(prior, target, dim), target).to(device, dtype)
    _, log_w = bg.sample_with_log_weights(20_000)
    est = rw.log_z(log_w, n_bootstrap=200)
    assert abs(est.value - target.log_z()) < 3 * est.error + 1e-3, (est, target.log_z())
    assert est.error < 0.03


def test_metropolis_block_targeting_the_prior_gives_equal_weights(device):
    """u_Z(z) - u_X(x) + ΔS = 0 exactly when the MC block samples the target = prior."""
    prior = Normal(3).to(device)
    block = MetropolisMC(prior.energy, 3, step_size=0.7, n_steps=15)

    class PriorEnergy(Energy):
        def _energy(self, x):
            return prior.energy(x)

    bg = BoltzmannGenerator(prior, block, PriorEnergy(3)).to(device)
    _, log_w = bg.sample_with_log_weights(2000)
    torch.testing.assert_close(log_w, torch.full_like(log_w, log_w[0].item()), atol=1e-4, rtol=0)
    assert 0.1 < block.last_acceptance < 0.9


def test_underdamped_langevin_in_phase_space_estimates_log_z(device):
    torch.manual_seed(4)
    d, mass = 2, 1.0
    target_q = Gaussian(d, -0.5, 1.4)
    target = PhaseSpaceEnergy(target_q, mass=mass)
    prior = Joint(Normal(d), Normal(d, std=1 / math.sqrt(mass)))
    lam = InterpolatedEnergy(Normal(d).energy, target_q, 1.0)
    flow = Sequential(
        PositionsOnly(fixed_affine(d, -0.3, 0.2), d),
        UnderdampedLangevinBlock(lam, d, step_size=0.1, n_steps=10, friction=2.0, mass=mass),
    )
    bg = BoltzmannGenerator(prior, flow, target).to(device)
    _, log_w = bg.sample_with_log_weights(20_000)
    est = rw.log_z(log_w)
    exact = target_q.log_z() + 0.5 * d * math.log(2 * math.pi / mass)
    assert est.error < 0.027, est  # measured 0.0089
    assert abs(est.value - exact) < 3 * est.error + 1e-3, (est, exact)


def test_gradients_reach_deterministic_layers_through_stochastic_blocks(device):
    torch.manual_seed(5)
    prior, target = Normal(2), Gaussian(2, 1.0, 1.2)
    act = ActNorm(2)
    act.initialized.fill_(True)
    flow = Sequential(
        act,
        OverdampedLangevinBlock(InterpolatedEnergy(prior.energy, target, 1.0), 2, step_size=0.05, n_steps=3),
        MetropolisMC(target, 2, step_size=0.3, n_steps=3),
    )
    bg = BoltzmannGenerator(prior, flow, target).to(device)
    loss = ReverseKL(bg, batch_size=256)()
    loss.backward()
    assert act.shift.grad is not None and torch.isfinite(act.shift.grad).all() and act.shift.grad.abs().sum() > 0


class WalledGaussian(Gaussian):
    """The Gaussian with an infinite wall at ``x_0 > 0.8`` (``+inf`` energy, zero force there)."""

    def _energy(self, x):
        return torch.where(x[:, 0] > 0.8, torch.inf, super()._energy(x))


@pytest.mark.parametrize("kind", ["overdamped", "underdamped"])
def test_langevin_blocks_never_move_into_infinite_energy(kind, device):
    torch.manual_seed(6)
    walled = WalledGaussian(2, 0.5, 1.0)
    if kind == "overdamped":
        block = OverdampedLangevinBlock(walled, 2, step_size=0.2, n_steps=20)
        y0 = torch.zeros(2000, 2, device=device)
    else:
        block = UnderdampedLangevinBlock(walled, 2, step_size=0.3, n_steps=20)
        y0 = torch.cat([torch.zeros(2000, 2), torch.randn(2000, 2)], 1).to(device)
    y, delta_s = block(y0)
    assert torch.isfinite(walled.energy(y[:, :2])).all() and torch.isfinite(delta_s).all()
    assert (y[:, 0] > 0.5).float().mean() > 0.05  # the chains did go up to the wall


def test_blocks_wrap_functions_and_distributions_as_energies():
    prior = Normal(2)
    for energy in (prior, prior.energy, lambda x: 0.5 * (x**2).sum(-1)):
        block = OverdampedLangevinBlock(energy, 2, step_size=0.05)
        assert isinstance(block.energy, Energy) and block.energy.dim == 2
        y, delta_s = block(torch.randn(5, 2))
        assert y.shape == (5, 2) and delta_s.shape == (5,)
    with pytest.raises(ValueError, match="dim"):
        MetropolisMC(Gaussian(3, 0.0, 1.0), 2)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        InterpolatedEnergy(lambda x: x.sum(-1), lambda x: x.sum(-1), 1.5)
    with pytest.raises(ValueError):
        OverdampedLangevinBlock(lambda x: x.sum(-1), 2, step_size=0.0)
    with pytest.raises(ValueError):
        MetropolisMC(lambda x: x.sum(-1), 2, n_steps=0)
    with pytest.raises(ValueError, match=r"\(batch, 2\)"):
        MetropolisMC(lambda x: (x**2).sum(-1), 2)(torch.zeros(4, 3))
