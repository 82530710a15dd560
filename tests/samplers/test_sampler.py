"""Sampler mechanics: trajectories, bit-for-bit resume, NaN guard, bad input."""

from __future__ import annotations

import io

import pytest
import torch

from bgflow_sci.energies import Energy
from bgflow_sci.samplers import (
    HMC,
    MALA,
    OverdampedLangevin,
    ParallelTempering,
    RandomWalkMetropolis,
    Sampler,
    UnderdampedLangevin,
)

from ._targets import CorrelatedGaussian


class Quadratic(Energy):
    def __init__(self, dim: int = 3):
        super().__init__(dim)

    def _energy(self, x):
        return 0.5 * (x**2).sum(-1)


class NaNBeyondOne(Energy):
    """A target undefined (NaN) for ``x_0 > 1``: proposals there must be rejected, never poison a chain."""

    def __init__(self):
        super().__init__(2)

    def _energy(self, x):
        u = 0.5 * (x**2).sum(-1)
        return torch.where(x[:, 0] > 1.0, torch.full_like(u, float("nan")), u)


FACTORIES = {
    "mala": lambda e: MALA(e, 0.2),
    "hmc": lambda e: HMC(e, 0.2, n_leapfrog=3, per_chain=False),
    "rwm": lambda e: RandomWalkMetropolis(e, 0.5),
    "ula": lambda e: OverdampedLangevin(e, 0.05),
    "baoab": lambda e: UnderdampedLangevin(e, 0.2, friction=0.5),
    "pt": lambda e: ParallelTempering(e, [1.0, 2.0, 4.0], kernel=lambda p: MALA(p, 0.2)),
}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_resume_bit_for_bit(name, dtype, device):
    energy = CorrelatedGaussian().to(device)
    x0 = torch.randn(12, 2, dtype=dtype).to(device)
    first = Sampler(FACTORIES[name](energy), x0, seed=11)
    first.run(15, burn_in=10, progress=False)  # adapts, then freezes the step sizes
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    expected = first.run(25, thin=5, progress=False)

    buffer.seek(0)
    resumed = Sampler(FACTORIES[name](energy), torch.zeros_like(x0), seed=999)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    got = resumed.run(25, thin=5, progress=False)
    assert torch.equal(got.samples, expected.samples)
    assert torch.equal(got.energies, expected.energies)
    assert torch.equal(resumed.kernel.step_size, first.kernel.step_size)
    assert resumed.n_steps_done == first.n_steps_done == 50


def test_diverging_chain_is_reset_without_touching_others(device):
    energy = Quadratic()
    x0 = torch.randn(6, 3, generator=torch.Generator().manual_seed(0)).to(device)
    bad_steps = torch.tensor([50.0, 0.1, 0.1, 0.1, 0.1, 0.1], device=device)  # chain 0: x' ≈ -49 x, overflows
    good_steps = torch.full((6,), 0.1, device=device)
    with pytest.warns(RuntimeWarning, match=r"chain\(s\) \(e.g. \[0\]\).*reset to their last valid state"):
        bad = Sampler(OverdampedLangevin(energy, bad_steps), x0, seed=3).run(60, progress=False)
    good = Sampler(OverdampedLangevin(energy, good_steps), x0, seed=3).run(60, progress=False)
    assert torch.isfinite(bad.samples).all() and torch.isfinite(bad.energies).all()
    assert bad.diagnostics["n_reset"][0] > 0 and (bad.diagnostics["n_reset"][1:] == 0).all()
    assert torch.equal(bad.samples[:, 1:], good.samples[:, 1:])  # same noise, untouched chains


def test_undefined_energy_proposals_are_rejected(device):
    x0 = torch.zeros(64, 2, device=device)
    with pytest.warns(RuntimeWarning, match="non-finite energies and were rejected"):
        samples, energies, diag = Sampler(MALA(NaNBeyondOne(), 0.5, adapt=False), x0, seed=0).run(50, progress=False)
    assert torch.isfinite(energies).all() and (samples[..., 0] <= 1.0).all()
    assert diag["n_invalid"].sum() > 0 and diag["n_reset"].sum() == 0


def test_trajectory_shapes_thin_and_empty_batch(device):
    energy = Quadratic(4)
    samples, energies, diag = Sampler(MALA(energy, 0.1), torch.zeros(5, 4, device=device), seed=0).run(
        23, thin=5, burn_in=3, progress=False
    )
    assert samples.shape == (4, 5, 4) and energies.shape == (4, 5) and samples.device.type == device.type
    assert diag["acceptance"].shape == (5,) and diag["iat"].shape == (4,)
    empty, e_empty, _ = Sampler(MALA(energy, 0.1), torch.zeros(0, 4, device=device), seed=0).run(4, progress=False)
    assert empty.shape == (4, 0, 4) and e_empty.shape == (4, 0)


def test_bad_input(device):
    energy = Quadratic(2)
    for step in (0.0, -0.1, float("nan"), float("inf"), torch.tensor([0.1, -0.1])):
        with pytest.raises(ValueError, match="step_size"):
            MALA(energy, step)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        Sampler(MALA(energy, torch.tensor([0.1, 0.2])), torch.zeros(3, 2, device=device))
    with pytest.raises(ValueError, match=r"\(batch, 2\)"):
        Sampler(MALA(energy, 0.1), torch.zeros(3, 5, device=device))
    with pytest.raises(ValueError, match="non-finite energy"):
        Sampler(MALA(energy, 0.1), torch.tensor([[0.0, float("nan")]], device=device))
    with pytest.raises(TypeError, match="energy"):
        MALA(object(), 0.1)
    sampler = Sampler(MALA(energy, 0.1), torch.zeros(3, 2, device=device))
    for kwargs in ({"n_steps": -1}, {"n_steps": 5, "thin": 0}, {"n_steps": 5, "burn_in": -2}):
        with pytest.raises(ValueError):
            sampler.run(progress=False, **kwargs)
    with pytest.raises(ValueError, match="n_leapfrog"):
        HMC(energy, 0.1, n_leapfrog=0)
    with pytest.raises(ValueError, match="friction"):
        UnderdampedLangevin(energy, 0.1, friction=0.0)
    with pytest.raises(ValueError, match="target_acceptance"):
        MALA(energy, 0.1, target_acceptance=1.5)
