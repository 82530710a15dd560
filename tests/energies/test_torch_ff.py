"""TorchForceField against OpenMM's Reference platform (energies and forces per force group), plus edge cases.

Runtime: about 15 s on the shared 2-core CPU (most of it building the water box and OpenMM contexts).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import require

openmm = require("openmm")
app = require("openmm.app")
unit = require("openmm.unit")

from bgflow_sci.energies import TorchForceField  # noqa: E402

PDB = Path(__file__).resolve().parents[2] / "data" / "alanine_dipeptide" / "alanine_dipeptide.pdb"
TEMPERATURE = 300.0


def _alanine(obc: bool, method=None, cutoff=None):
    pdb = app.PDBFile(str(PDB))
    files = ("amber99sbildn.xml", "amber99_obc.xml") if obc else ("amber99sbildn.xml",)
    kwargs = {"nonbondedMethod": method or app.NoCutoff, "constraints": None}
    if cutoff is not None:
        kwargs["nonbondedCutoff"] = cutoff * unit.nanometer
    system = app.ForceField(*files).createSystem(pdb.topology, **kwargs)
    return system, np.asarray(pdb.positions.value_in_unit(unit.nanometer))


def _minimised(system, x0):
    ctx = openmm.Context(system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(x0)
    openmm.LocalEnergyMinimizer.minimize(ctx, 1.0, 200)
    return ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)


def _water_box(switch: bool = False):
    ff = app.ForceField("tip3p.xml")
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(ff, model="tip3p", boxSize=openmm.Vec3(1.9, 1.9, 1.9) * unit.nanometer)
    system = ff.createSystem(
        modeller.topology,
        nonbondedMethod=app.CutoffPeriodic,
        nonbondedCutoff=0.9 * unit.nanometer,
        constraints=None,
        rigidWater=False,
    )
    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            assert force.getUseDispersionCorrection()
            if switch:
                force.setUseSwitchingFunction(True)
                force.setSwitchingDistance(0.75)
    return system, np.asarray(modeller.positions.value_in_unit(unit.nanometer))


def _openmm_reference(system, xs):
    """Per-force-group and total (energy kT, force kT/nm) from the Reference platform; groups = force index."""
    kT = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin) * TEMPERATURE
    for k, force in enumerate(system.getForces()):
        force.setForceGroup(k)
    ctx = openmm.Context(system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference"))
    groups = {type(f).__name__: k for k, f in enumerate(system.getForces()) if type(f).__name__ != "CMMotionRemover"}
    out = {name: ([], []) for name in list(groups) + ["total"]}
    for x in xs:
        ctx.setPositions(x)
        for name, g in list(groups.items()) + [("total", -1)]:
            st = ctx.getState(getEnergy=True, getForces=True, groups=-1 if g < 0 else {g})
            out[name][0].append(st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / kT)
            f = st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer) / kT
            out[name][1].append(f.reshape(-1))
    return {k: (np.array(e), np.array(f)) for k, (e, f) in out.items()}


def _assert_matches(name, u, force, u_ref, f_ref):
    u, force = u.detach().cpu().double().numpy(), force.detach().cpu().double().numpy()
    err_u = np.abs(u - u_ref) / np.maximum(np.abs(u_ref), 1.0)
    assert err_u.max() < 1e-6, f"{name}: energy relative error {err_u.max():.2e} (ours {u}, OpenMM {u_ref})"
    err_f = np.abs(force - f_ref).max(axis=1) / np.maximum(np.abs(f_ref).max(axis=1), 1e-8)
    assert err_f.max() < 1e-5, f"{name}: force error max|dF|/max|F| = {err_f.max():.2e}"


CASES = {
    "vacuum": lambda: _alanine(False),
    "obc2": lambda: _alanine(True),
    "obc2_cutoff": lambda: _alanine(True, app.CutoffNonPeriodic, 0.7),
    "water_rf": lambda: _water_box(),
    "water_rf_switch": lambda: _water_box(switch=True),
}


@pytest.mark.parametrize("native", ["auto", False])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_openmm_reference(case, native, device):
    """Per force (``components``: the torch modules) and in total (``energy_and_force``: on the CPU with
    ``native="auto"`` through the native kernels for the terms they cover, the torch modules for the rest)."""
    system, x0 = CASES[case]()
    rng = np.random.default_rng(1)
    if case.startswith("water"):
        xs = x0[None] + 0.005 * rng.standard_normal((2,) + x0.shape)
    else:
        xm = _minimised(system, x0)
        xs = xm[None] + rng.choice([0.01, 0.02], size=(4, 1, 1)) * rng.standard_normal((4,) + x0.shape)
    ref = _openmm_reference(system, xs)
    ff = TorchForceField.from_openmm(system, TEMPERATURE, native=native).to(device)
    x = torch.tensor(xs.reshape(len(xs), -1), dtype=torch.float64, device=device)
    comps = ff.components(x)
    assert set(comps) == set(ref) - {"total"}
    for name, (u, force) in comps.items():
        _assert_matches(f"{case}/{name}", u, force, *ref[name])
    u, force = ff.energy_and_force(x)
    assert u.device == x.device and force.shape == x.shape
    _assert_matches(f"{case}/total", u, force, *ref["total"])
    _assert_matches(f"{case}/total via energy()", ff.energy(x), ff.force(x), *ref["total"])


@pytest.fixture(scope="module")
def obc():
    system, x0 = _alanine(True)
    return TorchForceField.from_openmm(system, TEMPERATURE), x0


def test_autograd_equals_analytic_force(obc, device):
    ff, x0 = obc
    ff = ff.to(device)
    x = torch.tensor(x0.reshape(1, -1), device=device) + 0.02 * torch.randn(5, 66, dtype=torch.float64, device=device)
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(ff.energy(x).sum(), x)
    torch.testing.assert_close(grad, -ff.force(x.detach()), rtol=1e-10, atol=1e-10)
    # a second, independent check: central finite differences of the energy along a random direction
    v = torch.randn_like(x)
    h = 1e-6
    with torch.no_grad():
        fd = (ff.energy(x + h * v) - ff.energy(x - h * v)) / (2 * h)
    torch.testing.assert_close(fd, (grad * v).sum(-1), rtol=1e-5, atol=1e-5)


def test_invalid_rows_give_inf_and_zero_force(obc, device):
    ff, x0 = obc
    ff = ff.to(device)
    x = torch.tensor(x0.reshape(1, -1), device=device).repeat(4, 1)
    x[1, 5] = torch.nan
    x[2, 3 * 21 : 3 * 22] = x[2, 0:3]  # two non-bonded atoms on top of each other
    x[3, 3 * 4 : 3 * 5] = x[3, 3 * 1 : 3 * 2]  # a bonded pair overlapping (opposite charges, excluded)
    ff.reset_invalid_count()
    u, force = ff.energy_and_force(x)
    assert torch.isfinite(u[0]) and torch.all(u[1:] == torch.inf)
    assert torch.all(force[1:] == 0) and torch.isfinite(force).all()
    assert ff.reset_invalid_count() == 3
    xg = x.clone().requires_grad_(True)
    e = ff.energy(xg)
    assert torch.all(e[1:] == torch.inf)
    (grad,) = torch.autograd.grad(torch.where(torch.isfinite(e), e, 0.0).sum(), xg)
    assert torch.isfinite(grad).all() and torch.all(grad[1:] == 0)


def test_float32_close_to_float64(obc, device):
    ff, x0 = obc
    ff = ff.to(device)
    x = torch.tensor(x0.reshape(1, -1), device=device) + 0.01 * torch.randn(8, 66, dtype=torch.float64, device=device)
    u64, f64 = ff.energy_and_force(x)
    u32, f32 = ff.energy_and_force(x.float())
    assert u32.dtype == torch.float32 and f32.dtype == torch.float32
    assert ((u32.double() - u64).abs() / u64.abs().clamp(min=1.0)).max() < 1e-4
    assert ((f32.double() - f64).abs().amax(-1) / f64.abs().amax(-1)).max() < 1e-4


def test_empty_batch_and_shape_errors(obc):
    ff, _ = obc
    u, force = ff.energy_and_force(torch.zeros(0, 66, dtype=torch.float64))
    assert u.shape == (0,) and force.shape == (0, 66)
    assert ff.energy(torch.zeros(0, 66)).shape == (0,)
    with pytest.raises(ValueError, match=r"\(batch, 66\)"):
        ff.energy(torch.zeros(3, 65))


def test_unsupported_forces_raise():
    system, _ = _alanine(False)
    system.addForce(openmm.CustomExternalForce("x^2"))
    with pytest.raises(ValueError, match="CustomExternalForce.*HarmonicBondForce.*GBSAOBCForce"):
        TorchForceField.from_openmm(system, TEMPERATURE)
    system, _ = _alanine(False)
    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            force.addGlobalParameter("lam", 1.0)  # PME, LJPME and Ewald are supported (forcefield.ewald)
            force.addParticleParameterOffset("lam", 0, 0.1, 0.0, 0.0)
    with pytest.raises(ValueError, match="parameter offsets"):
        TorchForceField.from_openmm(system, TEMPERATURE)


def test_compile_failure_falls_back_to_eager(obc, monkeypatch):
    system, x0 = _alanine(False)
    # native=False: the whole evaluation goes through torch (with the native kernels nothing is left to compile)
    ff = TorchForceField.from_openmm(system, TEMPERATURE, compile=True, native=False)
    eager = TorchForceField.from_openmm(system, TEMPERATURE, native=False)

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    x = torch.tensor(x0.reshape(1, -1)).repeat(2, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        u, force = ff.energy_and_force(x)
    assert any("torch.compile failed" in str(w.message) for w in caught)
    u_ref, f_ref = eager.energy_and_force(x)
    torch.testing.assert_close(u, u_ref)
    torch.testing.assert_close(force, f_ref)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_chunked_default_path_matches_openmm_and_single_rows(dtype, device):
    """The default path evaluates in chunks (auto size 256 for 22 atoms, and an explicit odd size): a batch spanning
    several chunks agrees row by row with one-row evaluations, with autograd of the energy and with OpenMM."""
    from bgflow_sci.energies.forcefield.model import auto_chunk_size

    system, x0 = _alanine(True)
    assert auto_chunk_size(22) == 256
    rng = np.random.default_rng(3)
    xs = _minimised(system, x0)[None] + 0.01 * rng.standard_normal((300,) + x0.shape)
    x = torch.tensor(xs.reshape(len(xs), -1), dtype=dtype, device=device)
    ff_auto = TorchForceField.from_openmm(system, TEMPERATURE).to(device)  # compile="auto": 300 rows stay eager
    ff_odd = TorchForceField.from_openmm(system, TEMPERATURE, compile=False, chunk_size=7).to(device)
    assert ff_auto._chunk() == 256 and not ff_auto._want_compiled(300)
    u, force = ff_auto.energy_and_force(x)
    u7, force7 = ff_odd.energy_and_force(x)
    rows = [0, 6, 7, 255, 256, 299]
    single = [ff_odd.energy_and_force(x[k : k + 1]) for k in rows]
    # float32: chunk remainders take the scalar (not the vectorised) loop of the native kernels, so the last bits
    # differ; forces are compared to 2e-6 of the largest force component (float32 rounding of cancelling sums)
    scale = float(force.abs().max())
    tol = {"rtol": 1e-12, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 2e-6 * scale}
    torch.testing.assert_close(u, u7, **tol)
    torch.testing.assert_close(force, force7, **tol)
    torch.testing.assert_close(u[rows], torch.cat([s[0] for s in single]), **tol)
    torch.testing.assert_close(force[rows], torch.cat([s[1] for s in single]), **tol)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(ff_auto.energy(xg).sum(), xg)
    torch.testing.assert_close(-grad, force, **tol)
    if dtype == torch.float64:
        ref = _openmm_reference(system, xs[rows])
        _assert_matches("chunked/total", u[rows], force[rows], *ref["total"])


def test_compile_policy(monkeypatch):
    monkeypatch.delenv("BGFLOW_SCI_COMPILE", raising=False)  # tests/conftest.py turns "auto" off for the suite
    system, _ = _alanine(False)
    ff = TorchForceField.from_openmm(system, TEMPERATURE)
    assert ff.compile == "auto" and not ff._want_compiled(1023) and ff._want_compiled(1024)
    monkeypatch.setenv("BGFLOW_SCI_COMPILE", "0")
    assert not ff._want_compiled(10**6)
    assert not TorchForceField.from_openmm(system, TEMPERATURE, compile=False)._want_compiled(10**6)
    with pytest.raises(ValueError, match="compile must be"):
        TorchForceField.from_openmm(system, TEMPERATURE, compile="yes")


def test_auto_compile_failure_warns_once_and_stays_eager(obc, monkeypatch):
    monkeypatch.delenv("BGFLOW_SCI_COMPILE", raising=False)
    system, x0 = _alanine(False)
    ff = TorchForceField.from_openmm(system, TEMPERATURE, native=False)
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    x = torch.tensor(x0.reshape(1, -1)).repeat(1100, 1) + 0.01 * torch.randn(1100, 66, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        u, force = ff.energy_and_force(x)
        ff.energy_and_force(x)
    assert sum("torch.compile failed" in str(w.message) for w in caught) == 1 and len(calls) == 1
    u_ref, f_ref = TorchForceField.from_openmm(system, TEMPERATURE, compile=False).energy_and_force(x)
    torch.testing.assert_close(u, u_ref)
    torch.testing.assert_close(force, f_ref)
