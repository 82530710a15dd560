"""Learned free-energy perturbation between two Gaussians, where everything is exact: ``u_A = x²/2``,
``u_B = x²/(2 s²)`` in d dimensions, ``f_B - f_A = -d log s``; the optimal map is ``x -> s x`` (ESS 1)."""

from __future__ import annotations

import math

import pytest
import torch

from bgflow_sci.energies import FunctionEnergy
from bgflow_sci.flows import Affine, Elementwise
from bgflow_sci.reweighting import ess, log_z
from bgflow_sci.training import FreeEnergyPerturbation, Trainer

D, S = 3, 0.5


def _setup(n: int = 4000, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g, dtype=torch.float64)
    u_a = 0.5 * (x**2).sum(-1)
    target = FunctionEnergy(lambda y: 0.5 * (y**2).sum(-1) / S**2, D)
    return x, u_a, target


def test_identity_log_weights_are_exact_and_unbiased_on_average():
    x, u_a, target = _setup()
    flow = Elementwise(D, Affine()).double()  # starts as the identity
    loss = FreeEnergyPerturbation(flow, target, x, source_energy=u_a)
    log_w = loss.log_weights(x, u_a)
    torch.testing.assert_close(log_w, u_a - target.energy(x))
    # plain FEP towards a narrower state: ESS well below one, -log mean w near f_B - f_A = -D log S
    assert ess(log_w) < 0.5
    assert -log_z(log_w).value == pytest.approx(-D * math.log(S), abs=0.1)


def test_training_finds_the_exact_map():
    torch.manual_seed(0)
    x, u_a, target = _setup()
    flow = Elementwise(D, Affine()).double()
    loss = FreeEnergyPerturbation(flow, target, x, source_energy=u_a, batch_size=256)
    Trainer(flow, {"fep": loss}, lr=5e-2, schedule="cosine", total_steps=400, progress=False).train(400)
    log_w = loss.log_weights(x, u_a)
    assert ess(log_w) > 0.99
    y, _ = flow(torch.eye(D, dtype=torch.float64) + 0.0)
    shift, _ = flow(torch.zeros(1, D, dtype=torch.float64))
    torch.testing.assert_close(torch.diagonal(y - shift), torch.full((D,), S, dtype=torch.float64), atol=0.02, rtol=0)
    assert -log_z(log_w).value == pytest.approx(-D * math.log(S), abs=0.01)
    assert "ess" in loss.log_values()


def test_non_finite_targets_drop_out_and_bad_shapes_are_named():
    x, u_a, _ = _setup(64)
    wall = FunctionEnergy(lambda y: torch.where(y[:, 0] > 1.0, torch.inf, 0.5 * (y**2).sum(-1)), D)
    flow = Elementwise(D, Affine()).double()
    loss = FreeEnergyPerturbation(flow, wall, x, source_energy=u_a, batch_size=64)
    assert torch.isfinite(loss())
    assert loss.n_dropped > 0
    assert torch.isinf(loss.log_weights(x, u_a)).any()
    with pytest.raises(ValueError, match="source_energy must have shape"):
        FreeEnergyPerturbation(flow, wall, x, source_energy=u_a[:-1])
    with pytest.raises(ValueError, match="data"):
        FreeEnergyPerturbation(flow, wall, x[:, :2])
