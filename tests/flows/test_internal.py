"""Internal coordinates: geometry primitives, Z-matrix construction, round trip and exact log-det."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from bgflow_sci.flows.internal import InternalCoordinates, ZMatrix, bond_angle, dihedral, place_atom
from tests.conftest import require

PDB = Path(__file__).resolve().parents[2] / "data" / "alanine_dipeptide" / "alanine_dipeptide.pdb"


@pytest.fixture(scope="module")
def alanine():
    md = require("mdtraj")
    traj = md.load(str(PDB))
    return InternalCoordinates.from_mdtraj(traj.topology), torch.tensor(traj.xyz[0], dtype=torch.float64)


def perturbed(xyz: torch.Tensor, n: int, scale: float = 0.01) -> torch.Tensor:
    return (xyz.reshape(1, -1) + scale * torch.randn(n, xyz.numel(), dtype=xyz.dtype)).reshape(n, -1)


def test_place_atom_inverts_bond_angle_dihedral(dtype, device):
    pts = torch.randn(50, 3, 3, dtype=dtype, device=device)
    b = 0.5 + torch.rand(50, dtype=dtype, device=device)
    a = 0.3 + 2.5 * torch.rand(50, dtype=dtype, device=device)
    t = (2 * torch.rand(50, dtype=dtype, device=device) - 1) * math.pi
    xi = place_atom(pts[:, 0], pts[:, 1], pts[:, 2], b, a, t)
    tol = {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 1e-10, "rtol": 1e-10}
    torch.testing.assert_close(torch.linalg.vector_norm(xi - pts[:, 0], dim=-1), b, **tol)
    torch.testing.assert_close(bond_angle(xi, pts[:, 0], pts[:, 1]), a, **tol)
    torch.testing.assert_close(dihedral(xi, pts[:, 0], pts[:, 1], pts[:, 2]), t, **tol)


def _single_residue_topology(n_atoms: int):
    md = require("mdtraj")
    top = md.Topology()
    res = top.add_residue("X", top.add_chain())
    for i in range(n_atoms):
        top.add_atom(f"C{i}", md.element.carbon, res)
    return top


def _wrapped(delta: torch.Tensor) -> torch.Tensor:
    return torch.atan2(torch.sin(delta), torch.cos(delta))


def test_dihedral_sign_convention():
    md = require("mdtraj")
    # trans = pi, and a twist that is -90 degrees in the IUPAC / mdtraj convention
    p = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, -1.0, 0.0]], dtype=torch.float64)
    assert abs(abs(dihedral(*p).item()) - math.pi) < 1e-12
    q = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    assert dihedral(*q).item() == pytest.approx(-math.pi / 2, abs=1e-12)
    # the mirror image flips the sign; reversing the chain keeps it
    assert dihedral(*(q * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))).item() == pytest.approx(math.pi / 2)
    assert dihedral(*q).item() == pytest.approx(dihedral(*q.flip(0)).item())
    # random chains against mdtraj.compute_dihedrals: same atoms, same frames (float32 in mdtraj, float64 here)
    g = torch.Generator().manual_seed(3)
    pts = torch.randn(500, 4, 3, dtype=torch.float64, generator=g).to(torch.float32).to(torch.float64)
    ref = md.compute_dihedrals(md.Trajectory(pts.numpy(), _single_residue_topology(4)), [[0, 1, 2, 3]], opt=False)
    ref = torch.as_tensor(ref[:, 0], dtype=torch.float64)
    ours = dihedral(pts[:, 0], pts[:, 1], pts[:, 2], pts[:, 3])
    assert (ours > 0).any() and (ours < 0).any()
    # float32 reference: 1e-4 rad covers its rounding; a sign flip would be off by up to 2 pi
    assert _wrapped(ours - ref).abs().max() < 1e-4


def test_dihedrals_of_alanine_frames_match_mdtraj(alanine):
    """Every Z-matrix torsion (and phi/psi) of perturbed alanine dipeptide frames equals mdtraj's, sign included."""
    md = require("mdtraj")
    ic, xyz = alanine
    x = perturbed(xyz, 8, scale=0.02).to(torch.float32).to(torch.float64).reshape(8, 22, 3)
    quads = [list(r) for r in ic.zmatrix.rows] + [[4, 6, 8, 14], [6, 8, 14, 16]]
    ref = md.compute_dihedrals(md.Trajectory(x.numpy(), md.load(str(PDB)).topology), quads, opt=False)
    ours = torch.stack([dihedral(*(x[:, a] for a in quad)) for quad in quads], dim=1)
    assert ours.dtype == torch.float64 and (ours > 0.5).any() and (ours < -0.5).any()
    assert _wrapped(ours - torch.as_tensor(ref, dtype=torch.float64)).abs().max() < 1e-4


def test_zmatrix_of_alanine_dipeptide_is_valid(alanine):
    ic, _ = alanine
    zm = ic.zmatrix
    placed = set(zm.root)
    assert len(zm.rows) == 19 and ic.dim == 60
    for level in zm.levels:
        for r in level:
            i, j, k, l = zm.rows[r]
            assert {j, k, l} <= placed and len({i, j, k, l}) == 4
        placed |= {zm.rows[r][0] for r in level}
    assert placed == set(range(22))


def test_round_trip_float64_alanine(alanine):
    ic, xyz = alanine
    x = perturbed(xyz, 16)
    z, logdet_inv = ic.inverse(x)
    x2, logdet = ic(z)
    z2, _ = ic.inverse(x2)
    torch.testing.assert_close(z2, z, atol=1e-10, rtol=0)
    torch.testing.assert_close(logdet, -logdet_inv, atol=1e-10, rtol=0)
    # same molecule up to a rigid motion: all pair distances agree below 1e-6 nm
    p1, p2 = x.reshape(-1, 22, 3), x2.reshape(-1, 22, 3)
    assert (torch.cdist(p1, p1) - torch.cdist(p2, p2)).abs().max() < 1e-6
    # canonical frame: r0 at the origin, r1 on the x axis, r2 in the xy-plane
    r0, r1, r2 = ic.zmatrix.root
    assert p2[:, r0].abs().max() < 1e-12 and p2[:, r1, 1:].abs().max() < 1e-12 and p2[:, r2, 2].abs().max() < 1e-12


def test_logdet_against_autograd_jacobian_alanine(alanine):
    """log volume = log|det d(free Cartesian)/d(ic)| + 2 log b1 + log b2 + log sin a2 (rotations integrated out)."""
    ic, xyz = alanine
    z, _ = ic.inverse(perturbed(xyz, 3))
    r0, r1, r2 = ic.zmatrix.root
    others = [r[0] for r in ic.zmatrix.rows]

    def free(zz: torch.Tensor) -> torch.Tensor:
        pos = ic(zz[None])[0].reshape(22, 3)
        return torch.cat([pos[r1, :1], pos[r2, :2], pos[others].reshape(-1)])

    for zi in z:
        jac = torch.autograd.functional.jacobian(free, zi)
        assert jac.shape == (60, 60)
        bonds, angles, _ = ic.split(zi[None])
        expected = torch.linalg.slogdet(jac)[1] + 2 * torch.log(bonds[0, 0]) + torch.log(bonds[0, 1])
        expected = expected + torch.log(torch.sin(angles[0, 0]))
        torch.testing.assert_close(ic(zi[None])[1][0], expected, atol=1e-9, rtol=1e-9)


def test_domains_and_layout(alanine):
    ic, xyz = alanine
    z, _ = ic.inverse(perturbed(xyz, 4))
    bonds, angles, torsions = ic.split(z)
    assert (bonds > 0.05).all() and (bonds < 0.25).all()  # nm
    assert ((angles > 0) & (angles < math.pi)).all() and (torsions.abs() <= math.pi).all()
    kinds = [d.kind for d in ic.domains]
    assert kinds.count("real") == 21 and kinds.count("interval") == 20 and kinds.count("circle") == 19


def test_bad_input():
    with pytest.raises(ValueError, match="not connected"):
        ZMatrix.from_bonds(5, [(0, 1), (1, 2), (3, 4)])
    with pytest.raises(ValueError, match="at least 3 atoms"):
        ZMatrix.from_bonds(2, [(0, 1)])
    ic = InternalCoordinates(ZMatrix.from_bonds(4, [(0, 1), (1, 2), (2, 3)]))
    with pytest.raises(ValueError, match=r"\(batch, 12\)"):
        ic.inverse(torch.zeros(3, 11))
    z, _ = ic.inverse(torch.zeros(0, 12))
    assert z.shape == (0, 6)


def test_siblings_take_their_torsion_relative_to_the_first_sibling(alanine):
    """Methyl hydrogens and the other atoms sharing (j, k) are placed relative to the first of them, so that
    their torsions are nearly fixed offsets (±120°, 180°) rather than copies of one rotor angle."""
    ic, xyz = alanine
    rows = {i: (j, k, l) for i, j, k, l in ic.zmatrix.rows}
    first = {}
    for i, (j, k, _l) in rows.items():
        first.setdefault((j, k), i)
    for i, (j, k, l) in rows.items():
        if first[(j, k)] != i and j != ic.zmatrix.root[1]:
            assert l == first[(j, k)], (i, j, k, l)
    # the three methyl hydrogens of ALA (11, 12, 13 on CB 10): 12 and 13 sit at about ±120° from 11
    t = dihedral(*(xyz.reshape(22, 3)[a] for a in (12, *rows[12])))
    assert abs(abs(float(t)) - 2 * math.pi / 3) < 0.2
