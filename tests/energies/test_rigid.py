"""Rigid molecules <-> atoms: exact round trips, TIP4P-Ew geometry against OpenMM's own virtual site, tetrahedron."""

from __future__ import annotations

import math

import pytest
import torch

from bgflow_sci import quaternions as Q
from bgflow_sci.energies.rigid import RigidMolecule, tetrahedron, tip4p_ew_water
from tests.conftest import require


@pytest.mark.parametrize("molecule", [tip4p_ew_water(), tetrahedron(0.3)], ids=["tip4p_ew", "tetrahedron"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_round_trip_exact(molecule, dtype):
    g = torch.Generator().manual_seed(0)
    n, batch = 16, 50
    positions = (2.0 * torch.rand(batch, 3 * n, generator=g, dtype=torch.float64)).to(dtype)
    q = Q.random_unit(batch, n, generator=g, dtype=torch.float64).to(dtype).reshape(batch, 4 * n)
    atoms = molecule.to_atoms(positions, q)
    assert atoms.shape == (batch, n * molecule.n_sites * 3)
    pos_back, q_back = molecule.from_atoms(atoms)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    assert (pos_back - positions).abs().max() < tol  # nm
    torch.testing.assert_close(q_back.reshape(-1, 4), Q.canonical(q.reshape(-1, 4)), atol=10 * tol, rtol=0)
    assert (molecule.to_atoms(pos_back, q_back) - atoms).abs().max() < tol
    torch.testing.assert_close(molecule.to_atoms(positions, -q), atoms)  # q and -q: the same molecule


def test_tip4p_ew_geometry_matches_openmm():
    openmm = require("openmm")
    app = require("openmm.app")
    unit = require("openmm.unit")
    water = tip4p_ew_water()
    q = Q.random_unit(1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    atoms = water.to_atoms(torch.tensor([[1.0, 1.2, 0.9]], dtype=torch.float64), q).reshape(4, 3)
    body = atoms - atoms[0]
    assert abs(float(body[1].norm()) - 0.09572) < 1e-12 and abs(float(body[2].norm()) - 0.09572) < 1e-12
    cos = float(body[1] @ body[2]) / 0.09572**2
    assert abs(math.acos(cos) - 1.82421813418) < 1e-10
    # OpenMM places M itself from O, H1, H2: it must land on ours
    forcefield = app.ForceField("tip4pew.xml")
    topology = app.Topology()
    residue = topology.addResidue("HOH", topology.addChain())
    o = topology.addAtom("O", app.element.oxygen, residue)
    h1 = topology.addAtom("H1", app.element.hydrogen, residue)
    h2 = topology.addAtom("H2", app.element.hydrogen, residue)
    topology.addAtom("M", None, residue)
    topology.addBond(o, h1)
    topology.addBond(o, h2)
    system = forcefield.createSystem(topology, nonbondedMethod=app.NoCutoff, rigidWater=True)
    context = openmm.Context(system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference"))
    start = atoms.clone()
    start[3] = 0.0
    context.setPositions(start.numpy() * unit.nanometer)
    context.computeVirtualSites()
    placed = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    assert abs(placed[3] - atoms[3].numpy()).max() < 1e-9
    assert abs(float(body[3].norm()) - 0.0125) < 1e-6


def test_tetrahedron_is_regular_and_centred():
    tet = tetrahedron(0.5)
    d = torch.cdist(tet.body, tet.body)
    off = d[~torch.eye(4, dtype=torch.bool)]
    torch.testing.assert_close(off, torch.full_like(off, 0.5))
    torch.testing.assert_close(tet.body.mean(0), torch.zeros(3, dtype=torch.float64))


def test_bad_input():
    water = tip4p_ew_water()
    with pytest.raises(ValueError, match="quaternions must be"):
        water.to_atoms(torch.zeros(2, 6), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="norm 2"):
        water.to_atoms(torch.zeros(1, 3), torch.tensor([[2.0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="non-collinear"):
        RigidMolecule(["A", "B"], [[0, 0, 0], [1, 0, 0]])
    with pytest.raises(ValueError, match=r"n_molecules \* 4 \* 3"):
        water.from_atoms(torch.zeros(2, 13))


def test_point_groups_of_rigid_molecules():
    from bgflow_sci import quaternions as quat
    from bgflow_sci.energies import RigidMolecule

    water = tip4p_ew_water().symmetries()
    assert water.shape == (2, 4)  # identity and C2 about the bisector (body x)
    torch.testing.assert_close(water[1].abs(), torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64))
    assert len(tetrahedron().symmetries()) == 1  # four distinct vertex names
    same = RigidMolecule(["C1", "C2", "C3", "C4"], tetrahedron().body)
    group = same.symmetries()
    assert len(group) == 12  # the proper tetrahedral group T
    for g in group:  # each maps the body onto itself
        moved = quat.rotate(g.expand(4, 4), same.body)
        assert torch.cdist(moved, same.body).min(1).values.max() < 1e-9


def test_orientation_angles_are_modulo_the_point_group():
    from bgflow_sci import quaternions as quat

    water = tip4p_ew_water()
    torch.manual_seed(0)
    reference = quat.random_unit(3, dtype=torch.float64)
    axis = torch.nn.functional.normalize(torch.randn(3, 3, dtype=torch.float64), dim=-1)
    angle = torch.tensor([0.0, 0.4, 1.3], dtype=torch.float64)
    turn = torch.cat([torch.cos(angle / 2)[:, None], torch.sin(angle / 2)[:, None] * axis], dim=-1)
    turned = quat.multiply(reference, turn)
    got = water.orientation_angles(turned.reshape(1, 12), reference.reshape(12))
    torch.testing.assert_close(got[0], angle, atol=1e-7, rtol=0)
    c2 = water.symmetries()[1]  # the C2 image (H1 <-> H2) and the sign flip are at angle 0
    flipped = -quat.multiply(reference, c2.expand(3, 4))
    assert float(water.orientation_angles(flipped.reshape(1, 12), reference.reshape(12)).max()) < 1e-6
