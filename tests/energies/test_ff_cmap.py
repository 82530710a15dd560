"""CMAPTorsionForce of TorchForceField against OpenMM's Reference platform (ff19SB, CHARMM36 alone and whole;
alanine dipeptide).

Runtime: a few seconds (one System, one Reference context).
"""

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

PDB = Path(__file__).resolve().parents[2] / "data" / "alanine_dipeptide" / "alanine_dipeptide.pdb"
TEMPERATURE = 300.0


def _reference(system, xs, groups=-1):
    ctx = openmm.Context(system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference"))
    es, fs = [], []
    for x in xs:
        ctx.setPositions(x)
        st = ctx.getState(getEnergy=True, getForces=True, groups=groups)
        es.append(st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        fs.append(st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
    return np.array(es), np.array(fs)


@pytest.fixture(scope="module")
def ff19sb():
    pdb = app.PDBFile(str(PDB))
    system = app.ForceField("amber19-all.xml").createSystem(
        pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None
    )
    for force in system.getForces():
        force.setForceGroup(1 if isinstance(force, openmm.CMAPTorsionForce) else 0)
    x0 = np.asarray(pdb.positions.value_in_unit(unit.nanometer))
    rng = np.random.default_rng(7)
    xs = x0[None] + rng.uniform(0.01, 0.02, size=(8, 1, 1)) * rng.standard_normal((8,) + x0.shape)
    return system, xs


def _ours(system, xs, dtype):
    ff = TorchForceField.from_openmm(system, TEMPERATURE)
    x = torch.as_tensor(xs.reshape(len(xs), -1), dtype=dtype)
    comps = ff.components(x)
    u, f = ff.energy_and_force(x)
    return ff, comps, u, f


@pytest.mark.parametrize("which", ["cmap", "total"])
def test_ff19sb_cmap_matches_reference(ff19sb, which):
    system, xs = ff19sb
    assert any(isinstance(f, openmm.CMAPTorsionForce) for f in system.getForces())
    ff, comps, u, f = _ours(system, xs, torch.float64)
    if which == "cmap":
        e_ref, f_ref = _reference(system, xs, groups=1 << 1)
        e, force = comps["CMAPTorsionForce"]
    else:
        e_ref, f_ref = _reference(system, xs)
        e, force = u, f
    e = e.numpy() * ff.kT
    force = force.numpy().reshape(f_ref.shape) * ff.kT
    assert np.all(np.abs(e - e_ref) <= 1e-6 * np.maximum(np.abs(e_ref), 1.0))
    rel = np.linalg.norm(force - f_ref, axis=(1, 2)) / np.linalg.norm(f_ref, axis=(1, 2))
    assert np.all(rel < 1e-5), rel


def test_cmap_float32_close(ff19sb):
    system, xs = ff19sb
    e_ref, f_ref = _reference(system, xs, groups=1 << 1)
    ff, comps, _, _ = _ours(system, xs, torch.float32)
    e, force = comps["CMAPTorsionForce"]
    e = e.double().numpy() * ff.kT
    force = force.double().numpy().reshape(f_ref.shape) * ff.kT
    assert np.all(np.isfinite(e)) and np.all(np.isfinite(force))
    assert np.all(np.abs(e - e_ref) <= 1e-4 * np.maximum(np.abs(e_ref), 1.0))
    rel = np.linalg.norm(force - f_ref, axis=(1, 2)) / np.linalg.norm(f_ref, axis=(1, 2))
    assert np.all(rel < 1e-4), rel


def _charmm36_system():
    """CHARMM36 (vacuum, NoCutoff) on alanine dipeptide. The capped dipeptide matches two CHARMM templates, ALAD
    (the alanine dipeptide as one residue) and AANM; AANM is dropped so that ALAD is used."""
    pdb = app.PDBFile(str(PDB))
    ff = app.ForceField("charmm36.xml")
    template = ff._templates.pop("AANM")
    for candidates in ff._templateSignatures.values():
        if template in candidates:
            candidates.remove(template)
    full = ff.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None)
    return full, np.asarray(pdb.positions.value_in_unit(unit.nanometer))


@pytest.fixture(scope="module")
def charmm36_cmap_only():
    """The CMAPTorsionForce of CHARMM36 on alanine dipeptide, alone in a System."""
    full, x0 = _charmm36_system()
    system = openmm.System()
    for k in range(full.getNumParticles()):
        system.addParticle(full.getParticleMass(k))
    (cmap,) = [f for f in full.getForces() if isinstance(f, openmm.CMAPTorsionForce)]
    system.addForce(openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(cmap)))
    return system, x0


def test_charmm36_in_vacuum_matches_reference():
    """The whole CHARMM36 system: Urey-Bradley and harmonic impropers (Custom{Bond,Torsion}Force), CMAP, NBFIX
    Lennard-Jones (CustomNonbondedForce) beside NonbondedForce; float64, 1e-6 / 1e-5 relative."""
    system, x0 = _charmm36_system()
    kinds = {type(f).__name__ for f in system.getForces()}
    assert {"CMAPTorsionForce", "CustomNonbondedForce", "CustomTorsionForce", "CustomBondForce"} <= kinds
    rng = np.random.default_rng(5)
    xs = x0[None] + 0.015 * rng.standard_normal((16,) + x0.shape)
    e_ref, f_ref = _reference(system, xs)
    ff, _, u, f = _ours(system, xs, torch.float64)
    e, force = u.numpy() * ff.kT, f.numpy().reshape(f_ref.shape) * ff.kT
    assert np.all(np.abs(e - e_ref) <= 1e-6 * np.abs(e_ref)), np.abs(e - e_ref) / np.abs(e_ref)
    rel = np.linalg.norm(force - f_ref, axis=(1, 2)) / np.linalg.norm(f_ref, axis=(1, 2))
    assert np.all(rel < 1e-5), rel


@pytest.mark.parametrize("noise", [0.015, 0.1])
def test_charmm36_cmap_matches_reference(charmm36_cmap_only, noise):
    """Small noise (near the PDB structure) and large noise (φ, ψ spread over many patches of the 24×24 maps)."""
    system, x0 = charmm36_cmap_only
    rng = np.random.default_rng(11)
    xs = x0[None] + noise * rng.standard_normal((32,) + x0.shape)
    e_ref, f_ref = _reference(system, xs)
    ff, comps, _, _ = _ours(system, xs, torch.float64)
    e, force = comps["CMAPTorsionForce"]
    e = e.numpy() * ff.kT
    force = force.numpy().reshape(f_ref.shape) * ff.kT
    assert np.all(np.abs(e - e_ref) <= 1e-6 * np.maximum(np.abs(e_ref), 1.0))
    rel = np.linalg.norm(force - f_ref, axis=(1, 2)) / np.linalg.norm(f_ref, axis=(1, 2))
    assert np.all(rel < 1e-5), rel


def test_cmap_spline_reproduces_grid_and_is_smooth():
    """The bicubic interpolant passes through the map nodes (constant coefficient of each patch = its corner)."""
    from bgflow_sci.energies.forcefield.cmap import cmap_coefficients

    size = 24
    g = np.arange(size) * 2 * np.pi / size
    energy = (np.sin(g)[None, :] * np.cos(2 * g)[:, None] + 0.3 * np.cos(g)[:, None]).ravel()  # energy[a + N b]
    c = cmap_coefficients(size, energy)
    assert np.allclose(c[:, :, 0], energy.reshape(size, size).T)
