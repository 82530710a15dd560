"""OpenMMEnergy against direct OpenMM Context evaluations, in-process and through the worker pool; the pool's
error handling (start-up failures, errors inside a worker, dead workers, timeouts) and clean exits."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import require

openmm = require("openmm")
from openmm import unit  # noqa: E402

from bgflow_sci.energies import OpenMMEnergy  # noqa: E402
from bgflow_sci.energies.openmm import MOLAR_GAS_CONSTANT  # noqa: E402
from bgflow_sci.workflows.systems import load_system  # noqa: E402

T = 300.0
KT = MOLAR_GAS_CONSTANT * T
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", params=["vacuum", "obc2"])
def alanine(request):
    _, system, positions = load_system("alanine_dipeptide").build_openmm_system(request.param)
    return system, positions


@pytest.fixture(scope="module")
def vacuum():
    _, system, positions = load_system("alanine_dipeptide").build_openmm_system("vacuum")
    return system, positions


@pytest.fixture(scope="module")
def pool(alanine):
    with OpenMMEnergy(alanine[0], T, n_workers=2, chunk_size=3) as energy:
        yield energy


def perturbed(positions: np.ndarray, n: int, scale: float = 0.01, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.as_tensor(positions.reshape(1, -1) + scale * rng.standard_normal((n, positions.size)))


def direct(system, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Independent reference: one fresh Reference-platform Context, energies in kT and forces in kT/nm."""
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    energies, forces = [], []
    for row in x.double().numpy():
        context.setPositions(row.reshape(-1, 3) * unit.nanometer)
        state = context.getState(getEnergy=True, getForces=True)
        energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / KT)
        forces.append(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer) / KT)
    return np.array(energies), np.stack(forces).reshape(len(x), -1)


def test_serial_matches_openmm(alanine):
    system, positions = alanine
    x = perturbed(positions, 7)
    u_ref, f_ref = direct(system, x)
    energy = OpenMMEnergy(system, T, n_workers=1)
    u, f = energy.energy_and_force(x)
    assert u.dtype == torch.float64 and f.shape == x.shape
    np.testing.assert_allclose(u.numpy(), u_ref, rtol=1e-8)
    np.testing.assert_allclose(f.numpy(), f_ref, rtol=1e-8, atol=1e-8 * np.abs(f_ref).max())
    np.testing.assert_allclose(energy.energy(x).numpy(), u_ref, rtol=1e-8)
    assert energy.reset_invalid_count() == 0


def test_pool_matches_openmm(alanine, pool):
    system, positions = alanine
    x = perturbed(positions, 10, seed=1)  # 4 chunks of <= 3 over 2 workers
    u_ref, f_ref = direct(system, x)
    u, f = pool.energy_and_force(x)
    np.testing.assert_allclose(u.numpy(), u_ref, rtol=1e-8)
    np.testing.assert_allclose(f.numpy(), f_ref, rtol=1e-8, atol=1e-8 * np.abs(f_ref).max())
    np.testing.assert_allclose(pool.force(x).numpy(), f_ref, rtol=1e-8, atol=1e-8 * np.abs(f_ref).max())
    assert pool.energy(x[:0]).shape == (0,)


def test_autograd_force_is_minus_gradient(alanine, pool):
    system, positions = alanine
    x = perturbed(positions, 4, seed=2).requires_grad_(True)
    u = pool.energy(x)
    (grad,) = torch.autograd.grad((u * torch.arange(1.0, 5.0, dtype=u.dtype)).sum(), x)
    f = pool.force(x.detach())
    np.testing.assert_allclose(grad.numpy(), -(f * torch.arange(1.0, 5.0, dtype=u.dtype)[:, None]).numpy(), rtol=1e-12)
    # the force is the gradient of the energy: central differences along a random direction
    v = torch.randn_like(x, dtype=torch.float64)
    v /= v.norm(dim=1, keepdim=True)
    eps = 1e-5
    slope = (pool.energy(x.detach() + eps * v) - pool.energy(x.detach() - eps * v)) / (2 * eps)
    np.testing.assert_allclose(slope.numpy(), -(f * v).sum(1).numpy(), rtol=1e-5, atol=1e-3)


def test_float32_in_float32_out(alanine):
    system, positions = alanine
    x = perturbed(positions, 3)
    energy = OpenMMEnergy(system, T)
    u32 = energy.energy(x.float())
    assert u32.dtype == torch.float32
    np.testing.assert_allclose(u32.double().numpy(), energy.energy(x.float().double()).numpy(), rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("workers", [1, 2])
def test_invalid_configurations(alanine, pool, workers):
    system, positions = alanine
    energy = OpenMMEnergy(system, T, n_workers=1) if workers == 1 else pool
    energy.reset_invalid_count()
    x = perturbed(positions, 5, seed=3)
    x[1, 4] = float("nan")
    x[2, 7] = float("inf")
    x[3, 3:6] = x[3, 0:3]  # two atoms on top of each other: Coulomb/LJ explode
    u, f = energy.energy_and_force(x)
    assert torch.isinf(u[1:4]).all() and (u[1:4] > 0).all()
    assert torch.isfinite(u[[0, 4]]).all()
    assert (f[1:4] == 0).all() and torch.isfinite(f).all()
    assert energy.reset_invalid_count() == 3
    u2 = energy.energy(x)
    assert torch.equal(torch.isinf(u2), torch.isinf(u)) and energy.reset_invalid_count() == 3
    # autograd through invalid rows gives zero gradient there, not NaN
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(torch.where(torch.isfinite(u2), energy.energy(xg), 0).sum(), xg)
    assert torch.isfinite(g).all() and (g[1:4] == 0).all()
    # the bad batch leaves the evaluator (and the pool's workers) as they were: the valid rows are still exact
    np.testing.assert_allclose(energy.energy(x[[0, 4]]).numpy(), direct(system, x[[0, 4]])[0], rtol=1e-8)
    assert not energy.closed


def test_energy_threshold(alanine):
    system, positions = alanine
    x = perturbed(positions, 2)
    u = OpenMMEnergy(system, T).energy(x)
    capped = OpenMMEnergy(system, T, max_energy=float(u.min()) + 1e-6)
    assert torch.equal(torch.isinf(capped.energy(x)), u > u.min())
    assert capped.reset_invalid_count() == 1


def test_bad_input(alanine):
    system, _ = alanine
    energy = OpenMMEnergy(system, T)
    with pytest.raises(ValueError, match=r"\(batch, 66\)"):
        energy.energy(torch.zeros(2, 65))
    with pytest.raises(ValueError, match="temperature"):
        OpenMMEnergy(system, -1.0)
    with pytest.raises(ValueError, match="chunk_size"):
        OpenMMEnergy(system, T, chunk_size=0)


def _broken_system() -> openmm.System:
    """A System whose Context cannot be created (unparsable custom expression): fails inside each worker."""
    system = openmm.System()
    system.addParticle(1.0)
    force = openmm.CustomExternalForce("x +* 2")
    force.addParticle(0, [])
    system.addForce(force)
    return system


def test_worker_error_is_reraised_with_traceback():
    with pytest.raises(RuntimeError, match=r"worker 0 \(pid \d+\) failed to start") as info:
        OpenMMEnergy(_broken_system(), T, n_workers=2)
    assert "Traceback" in str(info.value) and "Context" in str(info.value) and "Parse error" in str(info.value)
    with pytest.raises(Exception, match="(?i)parse|unexpected|syntax|token"):
        OpenMMEnergy(_broken_system(), T, n_workers=1)


def _alive(pids) -> set[int]:
    """The ones of ``pids`` that are live child processes of this process."""
    return {p.pid for p in multiprocessing.active_children()} & set(pids)


def test_pool_workers_are_separate_processes_and_close_stops_them(vacuum):
    system, positions = vacuum
    energy = OpenMMEnergy(system, T, n_workers=3)
    pids = energy.worker_pids
    assert len(set(pids)) == 3 and os.getpid() not in pids and _alive(pids) == set(pids)
    assert torch.isfinite(energy.energy(perturbed(positions, 5))).all()
    energy.close()
    assert energy.closed and energy.worker_pids == () and not _alive(pids)
    with pytest.raises(RuntimeError, match="closed"):
        energy.energy(perturbed(positions, 1))
    energy.close()  # idempotent
    in_process = OpenMMEnergy(system, T)
    assert in_process.worker_pids == () and not in_process.closed


def test_dead_worker_raises_and_closes(vacuum):
    system, positions = vacuum
    energy = OpenMMEnergy(system, T, n_workers=2, timeout=30.0)
    pids = energy.worker_pids
    os.kill(pids[1], signal.SIGKILL)
    deadline = time.monotonic() + 20.0  # the pool notices the death asynchronously: wait for it (a loaded machine
    while pids[1] in _alive(pids) and time.monotonic() < deadline:  # could otherwise run every chunk on worker 0)
        time.sleep(0.05)
    time.sleep(0.5)
    with pytest.raises(RuntimeError, match="worker process died"):
        energy.energy(perturbed(positions, 4))
    assert energy.closed and not _alive(pids)
    with pytest.raises(RuntimeError, match="closed"):
        energy.energy(perturbed(positions, 1))


def test_error_inside_a_worker_is_reraised_with_its_message_and_the_pool_survives(vacuum):
    system, positions = vacuum
    x = perturbed(positions, 6, seed=4)
    u_ref, f_ref = direct(system, x)
    with OpenMMEnergy(system, T, n_workers=2, chunk_size=2) as energy:
        pids = energy.worker_pids
        # a chunk that does not fit the System: an error about the chunk, not about one configuration
        with pytest.raises(
            RuntimeError,
            match=r"(?s)OpenMM worker raised ValueError: positions must be \(n, 22, 3\).*"
            r"worker traceback:.*Traceback.*_openmm_worker.py",
        ):
            energy._evaluate(np.zeros((4, 5, 3)))
        assert not energy.closed and energy.worker_pids == pids
        u, f = energy.energy_and_force(x)  # the same workers answer the next batch correctly
        np.testing.assert_allclose(u.numpy(), u_ref, rtol=1e-8)
        np.testing.assert_allclose(f.numpy(), f_ref, rtol=1e-8, atol=1e-8 * np.abs(f_ref).max())
    assert energy.closed and not _alive(pids)
    # in-process, the same error is raised directly
    with pytest.raises(ValueError, match=r"positions must be \(n, 22, 3\)"):
        OpenMMEnergy(system, T)._evaluate(np.zeros((4, 5, 3)))


def test_timeout_raises_and_closes(vacuum):
    system, positions = vacuum
    energy = OpenMMEnergy(system, T, n_workers=2)
    pids = energy.worker_pids
    energy._pool.timeout = 1e-4  # no chunk of 400 configurations comes back that fast
    with pytest.raises(RuntimeError, match="timeout"):
        energy.energy(perturbed(positions, 800))
    assert energy.closed and not _alive(pids)


def _run(script: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def test_script_exits_without_close():
    out = _run(
        """
        import torch
        from bgflow_sci.energies import OpenMMEnergy
        from bgflow_sci.workflows.systems import load_system
        _, system, pos = load_system("alanine_dipeptide").build_openmm_system("vacuum")
        energy = OpenMMEnergy(system, 300.0, n_workers=2)
        print("energy", float(energy.energy(torch.as_tensor(pos.reshape(1, -1)))[0]))
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("energy ")


def test_script_that_fails_with_a_live_pool_exits():
    """An exception in the main program while the pool is alive (and another pool garbage collected) still exits."""
    out = _run(
        """
        import gc, torch
        from bgflow_sci.energies import OpenMMEnergy
        from bgflow_sci.workflows.systems import load_system
        _, system, pos = load_system("alanine_dipeptide").build_openmm_system("vacuum")
        dropped = OpenMMEnergy(system, 300.0, n_workers=2)
        del dropped
        gc.collect()
        energy = OpenMMEnergy(system, 300.0, n_workers=2)
        energy.energy(torch.as_tensor(pos.reshape(1, -1)))
        raise SystemExit("stopping with a live pool")
        """
    )
    assert out.returncode == 1 and "stopping with a live pool" in out.stderr, out.stderr
