"""The native CPU kernels of TorchForceField (``forcefield.native``) against its torch modules and OpenMM.

The OpenMM agreement of the default (native) path is in test_torch_ff.py; here: native == torch to float64
rounding for every kernel (bonds, angles, torsions of every periodicity incl. the generic one, pairs with and without
cutoff, reaction field and switching, exceptions, OBC2 with and without cutoff), float32 close to float64, invalid
rows, chunk remainders, pickling, the fallback without a compiler and ``native=True`` errors.
"""

from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest
import torch

from tests.conftest import require

openmm = require("openmm")
app = require("openmm.app")
unit = require("openmm.unit")

from bgflow_sci.energies import TorchForceField  # noqa: E402
from bgflow_sci.energies.forcefield import native  # noqa: E402
from tests.energies.test_torch_ff import _alanine  # noqa: E402

T = 300.0

if native.load_kernels() is None:  # pragma: no cover - machines without a C++ compiler
    pytest.skip("native kernels cannot be built here (no working C++ compiler)", allow_module_level=True)


def _system(obc: bool = False, method=None, cutoff=None, switch=None, periodicities=None):
    system, x0 = _alanine(obc, method, cutoff)
    for force in system.getForces():
        if switch is not None and isinstance(force, openmm.NonbondedForce):
            force.setUseSwitchingFunction(True)
            force.setSwitchingDistance(switch)
        if periodicities is not None and isinstance(force, openmm.PeriodicTorsionForce):
            for k in range(force.getNumTorsions()):  # every periodicity 1..8 (7 and 8: the generic kernel)
                i, j, kk, ll, _, phase, fk = force.getTorsionParameters(k)
                force.setTorsionParameters(k, i, j, kk, ll, periodicities[k % len(periodicities)], phase, fk)
    return system, x0


CASES = {
    "vacuum": lambda: _system(),
    "periodicities_1_to_8": lambda: _system(periodicities=[1, 2, 3, 4, 5, 6, 7, 8]),
    "cutoff_rf": lambda: _system(method=app.CutoffNonPeriodic, cutoff=0.5),
    "cutoff_rf_switch": lambda: _system(method=app.CutoffNonPeriodic, cutoff=0.5, switch=0.4),
    "obc2": lambda: _system(obc=True),
    "obc2_cutoff": lambda: _system(obc=True, method=app.CutoffNonPeriodic, cutoff=0.5),
}


def _batch(x0, n, scale=0.02, seed=0, dtype=torch.float64):
    rng = np.random.default_rng(seed)
    xs = x0[None] + scale * rng.standard_normal((n,) + x0.shape)
    return torch.tensor(xs.reshape(n, -1), dtype=dtype)


@pytest.mark.parametrize("case", list(CASES))
def test_native_equals_torch_float64(case):
    system, x0 = CASES[case]()
    fast = TorchForceField.from_openmm(system, T, native=True, compile=False)
    slow = TorchForceField.from_openmm(system, T, native=False, compile=False)
    assert fast._all_native and len(fast._native.calls) >= 4
    x = _batch(x0, 37)  # not a multiple of the SIMD width: the scalar remainder loop runs too
    u, f = fast.energy_and_force(x)
    u0, f0 = slow.energy_and_force(x)
    torch.testing.assert_close(u, u0, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(f, f0, rtol=0, atol=1e-10 * float(f0.abs().max()))


@pytest.mark.parametrize("case", ["vacuum", "obc2"])
def test_native_float32_close_to_float64(case):
    system, x0 = CASES[case]()
    ff = TorchForceField.from_openmm(system, T, compile=False)
    x = _batch(x0, 600, scale=0.01)
    u64, f64 = ff.energy_and_force(x)
    u32, f32 = ff.energy_and_force(x.float())
    assert u32.dtype == torch.float32
    err_u = ((u32.double() - u64).abs() / u64.abs().clamp(min=1.0)).max()
    err_f = ((f32.double() - f64).abs().max(1).values / f64.abs().max(1).values).max()
    assert err_u < 1e-5 and err_f < 1e-5, (float(err_u), float(err_f))


def test_mixed_native_and_torch_terms():
    """A periodic box: native bonded terms, torch pair terms; the sum matches the all-torch path."""
    ff = app.ForceField("tip3p.xml")
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(ff, model="tip3p", boxSize=openmm.Vec3(1.6, 1.6, 1.6) * unit.nanometer)
    system = ff.createSystem(
        modeller.topology, nonbondedMethod=app.CutoffPeriodic, nonbondedCutoff=0.7 * unit.nanometer, rigidWater=False
    )
    x0 = np.asarray(modeller.positions.value_in_unit(unit.nanometer))
    fast = TorchForceField.from_openmm(system, T, compile=False)
    slow = TorchForceField.from_openmm(system, T, native=False, compile=False)
    assert fast._native and not fast._all_native
    x = _batch(x0, 3, scale=0.003)
    u, f = fast.energy_and_force(x)
    u0, f0 = slow.energy_and_force(x)
    torch.testing.assert_close(u, u0, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(f, f0, rtol=0, atol=1e-10 * float(f0.abs().max()))


def test_invalid_rows_and_autograd():
    system, x0 = _system(obc=True)
    ff = TorchForceField.from_openmm(system, T, compile=False)
    x = _batch(x0, 5)
    x[1, 0] = float("nan")
    x[3, 3:6] = x[3, 0:3]  # two atoms on top of each other
    u, f = ff.energy_and_force(x)
    assert torch.isinf(u[[1, 3]]).all() and (u[[1, 3]] > 0).all() and (f[[1, 3]] == 0).all()
    assert torch.isfinite(u[[0, 2, 4]]).all() and int(ff.n_invalid) == 2
    xg = x[[0, 2, 4]].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(ff.energy(xg).sum(), xg)
    torch.testing.assert_close(-grad, f[[0, 2, 4]], rtol=1e-12, atol=1e-9)


def test_pickle_and_deepcopy_keep_the_kernels():
    system, x0 = _system()
    ff = TorchForceField.from_openmm(system, T, compile=False)
    x = _batch(x0, 4)
    u = ff.energy(x)
    for other in (pickle.loads(pickle.dumps(ff)), copy.deepcopy(ff)):
        assert other._native and other._native.library is not None
        torch.testing.assert_close(other.energy(x), u, rtol=0, atol=0)


def test_without_compiler_falls_back_to_torch(monkeypatch, tmp_path):
    system, x0 = _system()
    monkeypatch.setattr(native, "_LIBRARY", None)
    monkeypatch.setattr(native, "_LOAD_ERROR", None)
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("BGFLOW_SCI_CACHE", str(tmp_path / "cache"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ff = TorchForceField.from_openmm(system, T, compile=False)
        TorchForceField.from_openmm(system, T, compile=False)  # warns once only
    assert sum("native force-field kernels unavailable" in str(w.message) for w in caught) == 1
    assert not ff._native and not ff._native.vector_covered and not ff._native.pair_covered
    with pytest.raises(RuntimeError, match="native=True"):
        TorchForceField.from_openmm(system, T, native=True)
    ref = TorchForceField.from_openmm(system, T, native=False, compile=False)
    x = _batch(x0, 3)
    torch.testing.assert_close(ff.energy(x), ref.energy(x))


def test_environment_switch_and_argument_check(monkeypatch):
    system, _ = _system()
    monkeypatch.setenv("BGFLOW_SCI_NATIVE", "0")
    assert not TorchForceField.from_openmm(system, T)._native
    monkeypatch.delenv("BGFLOW_SCI_NATIVE")
    assert TorchForceField.from_openmm(system, T)._native
    with pytest.raises(ValueError, match="native must be"):
        TorchForceField.from_openmm(system, T, native="yes")


def test_parallel_chunks_equal_serial():
    """With several torch threads the native chunks run in a thread pool: same numbers as one thread."""
    system, x0 = _system(obc=True)
    ff = TorchForceField.from_openmm(system, T, compile=False, chunk_size=64)
    x = _batch(x0, 300)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        u1, f1 = ff.energy_and_force(x)
        torch.set_num_threads(3)
        u3, f3 = ff.energy_and_force(x)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(u3, u1, rtol=0, atol=0)
    torch.testing.assert_close(f3, f1, rtol=0, atol=0)
