"""Parallel tempering crosses the double-well barrier and samples the exact x1 marginal in its lowest replica."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import kstest

from bgflow_sci.energies import DoubleWell2D
from bgflow_sci.samplers import MALA, ParallelTempering, RandomWalkMetropolis, Sampler, geometric_ladder

from ._targets import double_well_x1_cdf


def test_pt_double_well_from_one_well(device):
    well = DoubleWell2D()
    temps = geometric_ladder(1.0, 12.0, 5)
    n_chains = 400
    pt = ParallelTempering(well, temps, kernel=lambda p: MALA(p, 0.05))
    x0 = torch.tensor([[-1.7, 0.0]], dtype=torch.float64, device=device).repeat(5 * n_chains, 1)  # shallower well
    sampler = Sampler(pt, x0, seed=0)
    samples, _, diag = sampler.run(600, thin=20, burn_in=300, progress=False)
    lowest = pt.replicas(samples)[:, 0]  # (30, n_chains, 2)

    # columns are independent ensembles: their final lowest-temperature states are iid
    p = kstest(lowest[-1, :, 0].cpu().numpy(), double_well_x1_cdf(well)).pvalue
    assert p > 0.01, p
    # right-well population: per-column time averages are independent estimates
    exact = 1.0 / (1.0 + torch.exp(torch.tensor(well.free_energy_difference_exact())))
    per_column = (lowest[..., 0] > 0).double().mean(0).cpu()
    se = per_column.std() / n_chains**0.5
    assert se < 0.012, se  # measured 0.0039: the 4-sigma test below has power
    assert abs(per_column.mean() - exact) < 4 * se + 0.005, (per_column.mean(), exact, se)

    swap = diag["swap_acceptance"]
    assert swap.shape == (4,) and (swap > 0.2).all() and (swap <= 1).all()
    assert diag["round_trips"] > n_chains  # every column makes round trips between T=1 and T=12
    assert diag["acceptance"].shape == (5 * n_chains,)
    assert (pt.swap_attempts == 300 * n_chains).all()  # even and odd pairs alternate over 600 steps


def test_pt_without_swaps_stays_stuck(device):
    """Control: the same local kernel at T=1 alone does not cross the barrier in this run."""
    well = DoubleWell2D()
    x0 = torch.tensor([[-1.7, 0.0]], dtype=torch.float64, device=device).repeat(400, 1)
    samples, _, _ = Sampler(MALA(well, 0.05), x0, seed=0).run(600, thin=20, burn_in=300, progress=False)
    assert (samples[..., 0] > 0).double().mean() < 0.2  # exact: 0.84


def test_round_trip_counting(device):
    """A replica ladder with an energy-free target swaps always: walkers sweep deterministically."""
    flat = DoubleWell2D(a=1e-12, b=0.0, c=0.0)
    pt = ParallelTempering(flat, [1.0, 2.0, 3.0], kernel=lambda p: RandomWalkMetropolis(p, 1e-6, adapt=False))
    sampler = Sampler(pt, torch.zeros(3, 2, dtype=torch.float64, device=device), seed=0)
    _, _, diag = sampler.run(24, progress=False)
    torch.testing.assert_close(diag["swap_acceptance"], torch.ones(2, dtype=torch.float64, device=device))
    # deterministic even–odd sweeps with always-accepted swaps: each walker goes 0 -> 2 -> 0 every 6 rounds
    assert diag["round_trips"] >= 8


def test_bad_ladders(device):
    well = DoubleWell2D()
    for temps in ([1.0], [1.0, 1.0, 2.0], [2.0, 1.0], [0.0, 1.0], [-1.0, 1.0], [1.0, float("inf")]):
        with pytest.raises(ValueError, match="temperature"):
            ParallelTempering(well, temps)
    pt = ParallelTempering(well, [1.0, 2.0], kernel=lambda p: MALA(p, 0.1))
    with pytest.raises(ValueError, match="n_replicas"):
        Sampler(pt, torch.zeros(3, 2, device=device))
    with pytest.raises(ValueError, match="step_size"):
        ParallelTempering(well, [1.0, 2.0], kernel=MALA)
    assert isinstance(ParallelTempering(well, [1.0, 2.0], kernel=MALA, step_size=0.1), ParallelTempering)
    with pytest.raises(ValueError, match="swap_every"):
        ParallelTempering(well, [1.0, 2.0], swap_every=0)
