"""NonbondedForce with PME, LJPME and Ewald in TorchForceField against OpenMM's Reference platform: TIP3P water boxes
(cubic, triclinic, net-charged, with a switching function), float64 to 1e-6 (energy) and 1e-5 (forces) relative.

Runtime: a few seconds (boxes of 300-400 atoms, two or three configurations each).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import require

openmm = require("openmm")
app = require("openmm.app")
unit = require("openmm.unit")

from bgflow_sci.energies import TorchForceField  # noqa: E402
from bgflow_sci.energies.forcefield.ewald import bspline_moduli, bspline_weights  # noqa: E402


def _water_box(edge_nm: float, sodium: bool = False):
    """A TIP3P box (amber14) of the given edge, optionally with one Na+ (net charge +1 e); positions nm."""
    ff = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(ff, boxSize=openmm.Vec3(edge_nm, edge_nm, edge_nm) * unit.nanometer)
    x0 = np.asarray(modeller.positions.value_in_unit(unit.nanometer))
    top = modeller.topology
    if sodium:
        residue = top.addResidue("NA", top.addChain())
        top.addAtom("NA", app.element.sodium, residue)
        x0 = np.vstack([x0, [[0.5 * edge_nm, 0.5 * edge_nm, 0.2]]])
    return ff, top, x0


def _triclinic(system, edge: float):
    """A reduced truncated-octahedron-shaped box of edge ``edge`` nm."""
    a = openmm.Vec3(edge, 0, 0)
    b = openmm.Vec3(edge / 3, 2 * np.sqrt(2) * edge / 3, 0)
    c = openmm.Vec3(-edge / 3, np.sqrt(2) * edge / 3, np.sqrt(6) * edge / 3)
    system.setDefaultPeriodicBoxVectors(a, b, c)


def _compare(system, xs, dtype=torch.float64):
    ctx = openmm.Context(system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference"))
    ff = TorchForceField.from_openmm(system, 300.0).to(dtype)
    u, f = ff.energy_and_force(torch.as_tensor(xs.reshape(len(xs), -1), dtype=dtype))
    e_rel, f_rel = [], []
    for k, x in enumerate(xs):
        ctx.setPositions(x)
        state = ctx.getState(getEnergy=True, getForces=True)
        e_ref = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        f_ref = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        e_rel.append(abs(u[k].item() * ff.kT - e_ref) / abs(e_ref))
        force = f[k].double().numpy().reshape(-1, 3) * ff.kT
        f_rel.append(np.linalg.norm(force - f_ref) / np.linalg.norm(f_ref))
    return np.array(e_rel), np.array(f_rel)


def _configs(x0, n, noise, seed):
    rng = np.random.default_rng(seed)
    return x0[None] + noise * rng.standard_normal((n,) + x0.shape)


def test_tip3p_box_with_pme_matches_reference():
    ff, top, x0 = _water_box(1.6)
    system = ff.createSystem(top, nonbondedMethod=app.PME, nonbondedCutoff=0.7 * unit.nanometer, rigidWater=False)
    kinds = {type(f).__name__ for f in system.getForces()}
    assert "NonbondedForce" in kinds and system.getNumParticles() > 300
    e_rel, f_rel = _compare(system, _configs(x0, 3, 0.01, 0))
    assert np.all(e_rel < 1e-6) and np.all(f_rel < 1e-5), (e_rel, f_rel)


def test_triclinic_charged_switched_box_matches_reference():
    """A net charge (the neutralising background term), a reduced triclinic box (a truncated-octahedron shape)
    and a switching function with the dispersion correction."""
    ff, top, x0 = _water_box(1.5, sodium=True)
    system = ff.createSystem(
        top,
        nonbondedMethod=app.PME,
        nonbondedCutoff=0.6 * unit.nanometer,
        switchDistance=0.5 * unit.nanometer,
        rigidWater=False,
    )
    _triclinic(system, 1.8)
    (nb,) = [f for f in system.getForces() if isinstance(f, openmm.NonbondedForce)]
    assert nb.getUseSwitchingFunction() and nb.getUseDispersionCorrection()
    e_rel, f_rel = _compare(system, _configs(x0, 2, 0.005, 1))
    assert np.all(e_rel < 1e-6) and np.all(f_rel < 1e-5), (e_rel, f_rel)


def test_pme_float32_is_close():
    ff, top, x0 = _water_box(1.4)
    system = ff.createSystem(top, nonbondedMethod=app.PME, nonbondedCutoff=0.6 * unit.nanometer, rigidWater=False)
    e_rel, f_rel = _compare(system, _configs(x0, 2, 0.01, 2), dtype=torch.float32)
    assert np.all(e_rel < 1e-4) and np.all(f_rel < 1e-3), (e_rel, f_rel)


def test_ewald_method_matches_reference():
    """Plain Ewald (OpenMM's α and k-space extent from the error tolerance), net-charged to include the
    neutralising term."""
    ff, top, x0 = _water_box(1.4, sodium=True)
    system = ff.createSystem(top, nonbondedMethod=app.Ewald, nonbondedCutoff=0.6 * unit.nanometer, rigidWater=False)
    e_rel, f_rel = _compare(system, _configs(x0, 2, 0.01, 3))
    assert np.all(e_rel < 1e-6) and np.all(f_rel < 1e-5), (e_rel, f_rel)


def test_ewald_with_triclinic_box_raises():
    ff, top, _ = _water_box(1.4)
    system = ff.createSystem(top, nonbondedMethod=app.Ewald, nonbondedCutoff=0.6 * unit.nanometer)
    edge = 1.7
    system.setDefaultPeriodicBoxVectors(
        openmm.Vec3(edge, 0, 0), openmm.Vec3(edge / 3, 2 * np.sqrt(2) * edge / 3, 0), openmm.Vec3(0, 0, edge)
    )
    with pytest.raises(ValueError, match="NonbondedForce method Ewald needs a rectangular box"):
        TorchForceField.from_openmm(system, 300.0)


@pytest.mark.parametrize("triclinic", [False, True])
def test_ljpme_matches_reference(triclinic):
    """LJPME: dispersion PME with geometric C6 in reciprocal space, Lorentz-Berthelot LJ shifted to zero at the
    cutoff in real space, no dispersion correction (as OpenMM); net-charged in the triclinic case."""
    ff, top, x0 = _water_box(1.5, sodium=triclinic)
    system = ff.createSystem(top, nonbondedMethod=app.LJPME, nonbondedCutoff=0.6 * unit.nanometer, rigidWater=False)
    if triclinic:
        _triclinic(system, 1.8)
    e_rel, f_rel = _compare(system, _configs(x0, 2, 0.005, 4))
    assert np.all(e_rel < 1e-6) and np.all(f_rel < 1e-5), (e_rel, f_rel)


def test_ljpme_with_switching_raises():
    ff, top, _ = _water_box(1.4)
    system = ff.createSystem(
        top, nonbondedMethod=app.LJPME, nonbondedCutoff=0.6 * unit.nanometer, switchDistance=0.5 * unit.nanometer
    )
    with pytest.raises(ValueError, match="LJPME cannot be used with a switching function"):
        TorchForceField.from_openmm(system, 300.0)


def test_bspline_weights_and_moduli():
    f = torch.linspace(0, 1, 11, dtype=torch.float64)[:-1]
    w = bspline_weights(f, 5)
    assert w.shape == (10, 5) and torch.allclose(w.sum(-1), torch.ones(10, dtype=torch.float64))
    # the order-5 cardinal B-spline at the integers 1..4 is (1, 11, 11, 1) / 24
    assert torch.allclose(w[0, :4], torch.tensor([1.0, 11.0, 11.0, 1.0], dtype=torch.float64) / 24)
    moduli = bspline_moduli(16, 5)
    assert moduli[0].item() == pytest.approx(1.0) and bool((moduli > 0).all())
    assert torch.allclose(moduli[1:], moduli[1:].flip(0))  # |b(m)|^2 = |b(-m)|^2
