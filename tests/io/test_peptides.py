"""build_capped_peptide: template matching, finite minimised energy, bond lengths, L chirality, requested φ/ψ."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]


def _chirality(traj) -> list[float]:
    import mdtraj as md

    out = []
    for residue in traj.topology.residues:
        names = {a.name: a.index for a in residue.atoms}
        if "CB" in names:
            out.append(float(md.compute_dihedrals(traj, [[names["N"], names["CA"], names["C"], names["CB"]]])[0, 0]))
    return out


@pytest.mark.parametrize("residues", [["ALA"], ["GLY", "GLY"], ["ALA"] * 3, ["VAL", "SER", "LEU"]])
def test_capped_peptide_builds_and_matches_amber14_obc2(tmp_path, residues):
    require("openmm")
    import mdtraj as md
    import openmm
    import openmm.app as app
    import openmm.unit as unit

    from bgflow_sci.io.peptides import build_capped_peptide

    raw = md.load(str(build_capped_peptide(residues, tmp_path / "raw.pdb", phi=-1.2, psi=2.0, minimize=False)))
    np.testing.assert_allclose(md.compute_phi(raw)[1], -1.2, atol=1e-3)
    np.testing.assert_allclose(md.compute_psi(raw)[1], 2.0, atol=1e-3)

    path = build_capped_peptide(residues, tmp_path / "p.pdb", forcefield=("amber14-all.xml", "implicit/obc2.xml"))
    pdb = app.PDBFile(str(path))
    names = [r.name for r in pdb.topology.residues()]
    assert names == ["ACE", *residues, "NME"]
    n_h = {"ACE": 3, "NME": 4}
    for r in pdb.topology.residues():
        if r.name in n_h:
            assert sum(a.element.symbol == "H" for a in r.atoms()) == n_h[r.name], r.name
    system = app.ForceField("amber14-all.xml", "implicit/obc2.xml").createSystem(
        pdb.topology, nonbondedMethod=app.NoCutoff
    )
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(pdb.positions)
    state = context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert np.isfinite(energy) and energy < 0.0, energy  # measured -140 (ALA), -210 (GLY2), -123 (ALA3) kJ/mol
    traj = md.load(str(path))
    bonds = np.array([[b[0].index, b[1].index] for b in traj.topology.bonds])
    lengths = md.compute_distances(traj, bonds)[0]
    heavy = np.array([b[0].element.symbol != "H" and b[1].element.symbol != "H" for b in traj.topology.bonds])
    assert np.all((lengths[heavy] > 0.12) & (lengths[heavy] < 0.16)), lengths[heavy]
    assert np.all((lengths[~heavy] > 0.09) & (lengths[~heavy] < 0.115)), lengths[~heavy]
    reference = md.load(str(ROOT / "data" / "alanine_dipeptide" / "alanine_dipeptide.pdb"))
    (sign,) = np.sign(_chirality(reference))
    assert all(np.sign(c) == sign for c in _chirality(traj))  # L, as the shipped dipeptide


def test_shipped_tetrapeptide_matches_templates():
    require("openmm")
    import openmm.app as app

    pdb = app.PDBFile(str(ROOT / "data" / "alanine_tetrapeptide" / "ace_ala3_nme.pdb"))
    assert pdb.topology.getNumAtoms() == 42
    app.ForceField("amber14-all.xml", "implicit/obc2.xml").createSystem(pdb.topology)


def test_unsupported_residue_names_it(tmp_path):
    require("openmm")
    from bgflow_sci.io.peptides import build_capped_peptide

    with pytest.raises(ValueError, match="XYZ"):
        build_capped_peptide(["ALA", "XYZ"], tmp_path / "p.pdb")
