"""OpenMM Custom* forces in TorchForceField against OpenMM's Reference platform, and the expression compiler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import require

openmm = require("openmm")
app = require("openmm.app")
unit = require("openmm.unit")

from bgflow_sci.energies import TorchForceField  # noqa: E402
from bgflow_sci.energies.forcefield.expressions import compile_expression  # noqa: E402

PDB = Path(__file__).resolve().parents[2] / "data" / "alanine_dipeptide" / "alanine_dipeptide.pdb"


def _configs(n: int = 8, seed: int = 0):
    pdb = app.PDBFile(str(PDB))
    x0 = np.asarray(pdb.positions.value_in_unit(unit.nanometer))
    rng = np.random.default_rng(seed)
    return pdb.topology, x0[None] + rng.normal(scale=0.015, size=(n, *x0.shape))


def _reference(system, xs, group: int | None = None):
    ctx = openmm.Context(system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference"))
    es, fs = [], []
    for x in xs:
        ctx.setPositions(x)
        kw = {} if group is None else {"groups": {group}}
        st = ctx.getState(getEnergy=True, getForces=True, **kw)
        es.append(st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        fs.append(st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
    return np.array(es), np.array(fs)


def _torch(system, xs, name=None, dtype=torch.float64):
    ff = TorchForceField.from_openmm(system, 300.0)
    x = torch.as_tensor(xs.reshape(len(xs), -1), dtype=dtype)
    if name is None:
        u, f = ff.energy_and_force(x)
        return u.detach().numpy() * ff.kT, f.detach().numpy().reshape(xs.shape) * ff.kT
    u, f = ff.components(x)[name]
    return u.detach().numpy() * ff.kT, f.detach().numpy().reshape(xs.shape) * ff.kT


def _check(e, f, e_ref, f_ref, rtol_e=1e-6, rtol_f=1e-5):
    np.testing.assert_allclose(e, e_ref, rtol=rtol_e, atol=1e-8)
    err = np.linalg.norm((f - f_ref).reshape(len(f), -1), axis=1) / np.linalg.norm(f_ref.reshape(len(f), -1), axis=1)
    assert err.max() < rtol_f, err


@pytest.mark.parametrize("gb", ["obc1", "obc2", "gbn", "gbn2", "hct", "amber99+obc2"])
def test_custom_gb_matches_openmm(gb):
    top, xs = _configs()
    files = (
        ("amber99sbildn.xml", "implicit/obc2.xml")
        if gb == "amber99+obc2"
        else ("amber14-all.xml", f"implicit/{gb}.xml")
    )
    system = app.ForceField(*files).createSystem(top, nonbondedMethod=app.NoCutoff, constraints=None)
    gb_index = None
    for k, force in enumerate(system.getForces()):
        force.setForceGroup(1 if isinstance(force, openmm.CustomGBForce) else 0)
        if isinstance(force, openmm.CustomGBForce):
            gb_index = k
    assert gb_index is not None
    e_ref, f_ref = _reference(system, xs, group=1)
    e, f = _torch(system, xs, name="CustomGBForce")
    _check(e, f, e_ref, f_ref)
    e_ref, f_ref = _reference(system, xs)
    e, f = _torch(system, xs)
    _check(e, f, e_ref, f_ref)


def test_custom_gb_cutoff_and_float32():
    top, xs = _configs()
    system = app.ForceField("amber14-all.xml", "implicit/obc2.xml").createSystem(
        top, nonbondedMethod=app.CutoffNonPeriodic, nonbondedCutoff=0.6 * unit.nanometer, constraints=None
    )
    for force in system.getForces():
        force.setForceGroup(1 if isinstance(force, openmm.CustomGBForce) else 0)
    e_ref, f_ref = _reference(system, xs, group=1)
    e, f = _torch(system, xs, name="CustomGBForce")
    _check(e, f, e_ref, f_ref)
    e_ref, f_ref = _reference(system, xs)
    e, f = _torch(system, xs)
    _check(e, f, e_ref, f_ref)
    e32, f32 = _torch(system, xs, dtype=torch.float32)
    assert e32.dtype == np.float32
    _check(e32, f32, e_ref, f_ref, rtol_e=1e-4, rtol_f=1e-3)


def test_custom_bonded_and_nonbonded_forces():
    rng = np.random.default_rng(1)
    n = 6
    xs = rng.normal(scale=0.3, size=(5, n, 3))
    system = openmm.System()
    for _ in range(n):
        system.addParticle(12.0)
    bond = openmm.CustomBondForce("k*(r-r0)^2 + c; c = 0.1*step(r-r0)")
    bond.addPerBondParameter("k")
    bond.addPerBondParameter("r0")
    bond.addBond(0, 1, [100.0, 0.2])
    bond.addBond(2, 3, [50.0, 0.3])
    angle = openmm.CustomAngleForce("ka*(cos(theta)-cos(t0))^2")
    angle.addGlobalParameter("ka", 20.0)
    angle.addPerAngleParameter("t0")
    angle.addAngle(0, 1, 2, [1.9])
    torsion = openmm.CustomTorsionForce("kt*(1+cos(2*theta-0.3)) + 0.5*sin(theta)^2")
    torsion.addGlobalParameter("kt", 3.0)
    torsion.addTorsion(0, 1, 2, 3)
    torsion.addTorsion(2, 3, 4, 5)
    nb = openmm.CustomNonbondedForce("4*eps*((sig/r)^12-(sig/r)^6) + 138.9*q1*q2/r; sig=0.5*(s1+s2); eps=sqrt(e1*e2)")
    for nm in ("q", "s", "e"):
        nb.addPerParticleParameter(nm)
    for i in range(n):
        nb.addParticle([(-1) ** i * 0.3, 0.2 + 0.01 * i, 0.5])
    nb.addExclusion(0, 1)
    compound = openmm.CustomCompoundBondForce(2, "kc*((x1-x2)^2 + (y1-y2)^2 + (z1-z2)^2)")
    compound.addGlobalParameter("kc", 7.0)
    compound.addBond([1, 4], [])
    for k, f in enumerate((bond, angle, torsion, nb, compound)):
        f.setForceGroup(k)
        system.addForce(f)
    names = [
        "CustomBondForce",
        "CustomAngleForce",
        "CustomTorsionForce",
        "CustomNonbondedForce",
        "CustomCompoundBondForce",
    ]
    for k, name in enumerate(names):
        e_ref, f_ref = _reference(system, xs, group=k)
        e, f = _torch(system, xs, name=name)
        _check(e, f, e_ref, f_ref)
    e_ref, f_ref = _reference(system, xs)
    e, f = _torch(system, xs)
    _check(e, f, e_ref, f_ref)
    # cutoff + switching
    nb.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffNonPeriodic)
    nb.setCutoffDistance(0.5)
    nb.setUseSwitchingFunction(True)
    nb.setSwitchingDistance(0.4)
    e_ref, f_ref = _reference(system, xs, group=3)
    e, f = _torch(system, xs, name="CustomNonbondedForce")
    _check(e, f, e_ref, f_ref)


def _eval(expr, **values):
    fn, _ = compile_expression(expr, values)
    return fn({k: torch.as_tensor(v, dtype=torch.float64) for k, v in values.items()}).numpy()


def test_parser_semantics():
    x = np.array([-1.5, 0.0, 0.7, 2.0])
    np.testing.assert_allclose(_eval("1+2*x^2-x/4", x=x), 1 + 2 * x**2 - x / 4)
    np.testing.assert_allclose(_eval("2^3^2+0*x", x=x), 2.0**9)
    np.testing.assert_allclose(_eval("-x^2", x=x), -(x**2))
    np.testing.assert_allclose(_eval("--x - -x", x=x), 2 * x)
    np.testing.assert_allclose(_eval("a*b; a=x+1; b=a*2", x=x), (x + 1) * (x + 1) * 2)
    np.testing.assert_allclose(_eval("step(x)", x=x), (x >= 0).astype(float))
    np.testing.assert_allclose(_eval("delta(x)", x=x), (x == 0).astype(float))
    np.testing.assert_allclose(_eval("select(x, 3, 4+x)", x=x), np.where(x != 0, 3.0, 4 + x))
    np.testing.assert_allclose(
        _eval("min(x,0.5)+max(x,1e-1)+abs(x)", x=x), np.minimum(x, 0.5) + np.maximum(x, 0.1) + abs(x)
    )
    np.testing.assert_allclose(
        _eval("atan2(x, 2)+recip(2+x)+square(x)+cube(x)", x=x), np.arctan2(x, 2) + 1 / (2 + x) + x**2 + x**3
    )
    np.testing.assert_allclose(_eval("(1+x)*(2-x)/3e-1", x=x), (1 + x) * (2 - x) / 0.3)


def test_unsupported_expression_names_force():
    with pytest.raises(ValueError, match="unsupported function 'gamma'"):
        compile_expression("gamma(x)", ["x"])
    with pytest.raises(ValueError, match="unknown variable 'y'"):
        compile_expression("x+y", ["x"])
    with pytest.raises(ValueError, match="cyclic"):
        compile_expression("a; a=b; b=a", [])
    system = openmm.System()
    system.addParticle(1.0)
    system.addParticle(1.0)
    bond = openmm.CustomBondForce("foo(r)")
    bond.addBond(0, 1, [])
    system.addForce(bond)
    with pytest.raises(ValueError, match=r"CustomBondForce \(force index 0\).*foo"):
        TorchForceField.from_openmm(system, 300.0)
