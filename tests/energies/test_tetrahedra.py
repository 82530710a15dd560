"""Tetrahedra in a field: the SO(3) quadrature reference, the energy's invariances and bad input, and a double-Möbius
Boltzmann generator whose reweighted log Z and orientational ΔF match the quadrature / exact-sampling references."""

from __future__ import annotations

import math

import pytest
import torch

from bgflow_sci import BoltzmannGenerator
from bgflow_sci import quaternions as Q
from bgflow_sci import reweighting as rw
from bgflow_sci.distributions import UniformS3
from bgflow_sci.energies import as_energy
from bgflow_sci.energies.tetrahedra import TetrahedraInField, orientational_log_z
from bgflow_sci.flows import DoubleMobius, QuaternionRotation, Sequential
from bgflow_sci.training import ReverseKL, Trainer


def _vertex_up(energy: TetrahedraInField, q: torch.Tensor) -> torch.Tensor:
    """Orientations with a vertex within ~26° of +z."""
    dirs = Q.rotate(q[:, None, :].expand(-1, 4, 4), energy.directions.to(q).expand(q.shape[0], 4, 3))
    return dirs[..., 2].max(-1).values > 0.9


def test_quadrature_is_converged_and_matches_uniform_sampling():
    energy = TetrahedraInField(1).double()
    log_z = orientational_log_z(energy)
    assert abs(log_z - orientational_log_z(energy, 80, 48, 80)) < 1e-8
    q = Q.random_unit(1_000_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w = torch.exp(-energy.field_energy(q))
    mc, err = math.log(2 * math.pi**2) + math.log(float(w.mean())), float(w.std() / w.mean()) / len(w) ** 0.5
    assert abs(mc - log_z) < 4 * err, (mc, log_z, err)
    assert float(w.max() / w.min()) > 1e3  # a strongly orienting field


def test_energy_invariances_and_bad_input():
    energy = TetrahedraInField(3, edge=0.6).double()
    g = torch.Generator().manual_seed(1)
    centres = 2.0 * torch.randn(5, 9, generator=g, dtype=torch.float64)
    q = Q.random_unit(5, 3, generator=g, dtype=torch.float64).reshape(5, 12)
    x = torch.cat([centres, q], 1)
    u = energy.energy(x)
    assert torch.isfinite(u).all()
    flip = torch.cat([torch.ones(9), torch.tensor([1.0] * 4 + [-1.0] * 4 + [1.0] * 4)]).double()
    torch.testing.assert_close(energy.energy(x * flip), u)
    f = energy.force(x)
    assert f.shape == x.shape and torch.isfinite(f).all()
    bad = x.clone()
    bad[0, 3:6] = bad[0, 0:3]  # two tetrahedra on top of each other with the same orientation
    bad[0, 13:17] = bad[0, 9:13]
    bad[1, 9:13] = 0.0  # a zero quaternion
    u_bad = energy.energy(bad)
    assert torch.isinf(u_bad[:2]).all() and (u_bad[:2] > 0).all() and torch.isfinite(u_bad[2:]).all()
    with pytest.raises(ValueError, match="norm"):
        energy.energy(torch.cat([centres, 3.0 * q], 1))


def test_double_mobius_generator_reweights_to_the_quadrature_reference():
    """Reverse KL on the one-body field, then log Z and ΔF(vertex up) by reweighting: unbiased within errors.

    Measured (2026-12-03): the stack does *not* beat uniform proposals here (ESS 0.20 both, KL stays at the uniform
    value -2.98 vs -log Z = -4.21): the field's modes come in the tetrahedron's 12-fold symmetric copies, and a flow
    that collapses onto a few of them is worse in reverse KL than uniform, which a double-Möbius stack (one
    concentration point ±w per layer) cannot escape.  What is asserted is the exactness of the reweighting."""
    torch.manual_seed(0)
    energy = TetrahedraInField(1).double()
    target = as_energy(lambda q: energy.field_energy(q.reshape(-1, 4)), dim=4)
    layers = []
    for _ in range(3):
        layers += [QuaternionRotation(1, init_scale=0.5), DoubleMobius(1, init_scale=0.3)]
    bg = BoltzmannGenerator(UniformS3(1), Sequential(*layers), target).double()
    trainer = Trainer(bg, {"kl": ReverseKL(bg, batch_size=256)}, lr=1e-2, schedule="cosine", total_steps=100)
    trainer.train(100)
    with torch.no_grad():
        x, log_w = bg.sample_with_log_weights(100_000)
    assert rw.ess(log_w) > 0.05
    log_z = rw.log_z(log_w, generator=torch.Generator().manual_seed(3))
    reference = orientational_log_z(energy)
    assert abs(log_z.value - reference) < 4 * log_z.error + 1e-3, (log_z, reference)
    # orientational free energy of "a vertex up" against exact sampling (uniform draws weighted by exp(-u))
    up = _vertex_up(energy, x.reshape(-1, 4))
    df = rw.free_energy_difference(log_w, ~up, up, generator=torch.Generator().manual_seed(4))
    q_ref = Q.random_unit(1_000_000, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    log_w_ref = -energy.field_energy(q_ref)
    up_ref = _vertex_up(energy, q_ref)
    df_ref = rw.free_energy_difference(log_w_ref, ~up_ref, up_ref, n_bootstrap=50,
                                       generator=torch.Generator().manual_seed(6))  # fmt: skip
    assert abs(df.value - df_ref.value) < 4 * math.hypot(df.error, df_ref.error), (df, df_ref)
