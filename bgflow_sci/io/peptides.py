"""Build small capped peptides ACE-(X)n-NME from ideal internal coordinates and write them as PDB files.

No structure builder (LEaP, PDBFixer, RDKit) is needed: the heavy atoms are placed one after another from ideal bond
lengths, bond angles and torsions (the NeRF construction, "natural extension reference frame"), hydrogens are added by
``openmm.app.Modeller.addHydrogens`` with the force field's hydrogen definitions, and a short OpenMM energy
minimisation in the same force field relaxes the ideal geometry.

Geometry (lengths in Å, angles in degrees; the standard peptide values of Engh & Huber):

- backbone N-CA 1.458, CA-C 1.525, C-N 1.329, C=O 1.231; angles C-N-CA 121.7, N-CA-C 111.2, CA-C-N 116.2,
  CA-C-O 120.8 (O in the peptide plane, trans to the next N);
- caps: ACE CH3-C 1.52 (angle CH3-C-N 116.2), NME N-C 1.458 (angle C-N-C(methyl) 121.7);
- side chains: CA-CB 1.530 (N-CA-CB 110.5) at the torsion C-N-CA-CB = -122.6°, which makes the residues L
  (the S configuration at CA, as in ``data/alanine_dipeptide/alanine_dipeptide.pdb``); further side-chain atoms at
  staggered torsions.

Backbone torsions: φ_i = C(i-1)-N(i)-CA(i)-C(i), ψ_i = N(i)-CA(i)-C(i)-N(i+1) (the same φ and ψ for every residue,
radians), ω = CA(i)-C(i)-N(i+1)-CA(i+1) = π (trans peptide bonds, including both caps).

Atom and residue names are OpenMM's (``ACE``: CH3, C, O, H1-H3; ``NME``: N, C, H, H1-H3, as OpenMM writes them) so that
``openmm.app.PDBFile`` and ``ForceField.createSystem`` match the templates of amber14 and charmm36.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["SUPPORTED_RESIDUES", "build_capped_peptide", "place_atom"]

# backbone bonds (Å) and angles (degrees)
_N_CA, _CA_C, _C_N, _C_O, _CA_CB = 1.458, 1.525, 1.329, 1.231, 1.530
_ANG_C_N_CA, _ANG_N_CA_C, _ANG_CA_C_N, _ANG_CA_C_O, _ANG_N_CA_CB = 121.7, 111.2, 116.2, 120.8, 110.5
_ACE_CH3_C, _NME_N_C = 1.52, 1.458
_TORSION_CB = -122.6  # C-N-CA-CB, degrees: L-amino acids

# side-chain atoms beyond CB: (name, element, (a, b, c) reference atoms, bond c-d Å, angle b-c-d °, torsion a-b-c-d °)
_SideChainAtom = tuple[str, str, tuple[str, str, str], float, float, float]
_SIDE_CHAINS: dict[str, tuple[_SideChainAtom, ...]] = {
    "GLY": (),
    "ALA": (),
    "SER": (("OG", "O", ("N", "CA", "CB"), 1.417, 111.1, -60.0),),
    "CYS": (("SG", "S", ("N", "CA", "CB"), 1.808, 114.0, -60.0),),
    "VAL": (
        ("CG1", "C", ("N", "CA", "CB"), 1.527, 110.7, 180.0),
        ("CG2", "C", ("N", "CA", "CB"), 1.527, 110.4, -60.0),
    ),
    "LEU": (
        ("CG", "C", ("N", "CA", "CB"), 1.530, 116.3, -60.0),
        ("CD1", "C", ("CA", "CB", "CG"), 1.524, 110.7, 180.0),
        ("CD2", "C", ("CA", "CB", "CG"), 1.525, 110.7, 60.0),
    ),
    "MET": (
        ("CG", "C", ("N", "CA", "CB"), 1.520, 114.1, -60.0),
        ("SD", "S", ("CA", "CB", "CG"), 1.807, 112.7, 180.0),
        ("CE", "C", ("CB", "CG", "SD"), 1.791, 100.9, 180.0),
    ),
    "PHE": (
        ("CG", "C", ("N", "CA", "CB"), 1.502, 113.8, -60.0),
        ("CD1", "C", ("CA", "CB", "CG"), 1.389, 120.7, 90.0),
        ("CD2", "C", ("CA", "CB", "CG"), 1.389, 120.7, -90.0),
        ("CE1", "C", ("CB", "CG", "CD1"), 1.382, 120.7, 180.0),
        ("CE2", "C", ("CB", "CG", "CD2"), 1.382, 120.7, 180.0),
        ("CZ", "C", ("CG", "CD1", "CE1"), 1.382, 120.0, 0.0),
    ),
}
SUPPORTED_RESIDUES: tuple[str, ...] = tuple(sorted(_SIDE_CHAINS))

# bonds inside the side chains beyond CA-CB (ring closure for PHE: CE2-CZ)
_SIDE_CHAIN_BONDS: dict[str, tuple[tuple[str, str], ...]] = {
    "SER": (("CB", "OG"),),
    "CYS": (("CB", "SG"),),
    "VAL": (("CB", "CG1"), ("CB", "CG2")),
    "LEU": (("CB", "CG"), ("CG", "CD1"), ("CG", "CD2")),
    "MET": (("CB", "CG"), ("CG", "SD"), ("SD", "CE")),
    "PHE": (("CB", "CG"), ("CG", "CD1"), ("CG", "CD2"), ("CD1", "CE1"), ("CD2", "CE2"), ("CE1", "CZ"), ("CE2", "CZ")),
}


def place_atom(a: np.ndarray, b: np.ndarray, c: np.ndarray, bond: float, angle: float, torsion: float) -> np.ndarray:
    """Position of atom d from three placed atoms a, b, c (NeRF).

    ``bond`` = |d - c| (length units of the inputs), ``angle`` = angle b-c-d (radians), ``torsion`` = dihedral a-b-c-d
    (radians, IUPAC sign: positive clockwise looking from b to c, the convention of mdtraj's ``compute_dihedrals``).
    """
    bc = c - b
    bc = bc / np.linalg.norm(bc)
    n = np.cross(b - a, bc)
    norm = np.linalg.norm(n)
    if norm < 1e-8:
        raise ValueError("place_atom: atoms a, b, c are collinear; the torsion is undefined")
    n = n / norm
    m = np.cross(n, bc)
    d_local = np.array(
        [
            -bond * math.cos(angle),
            bond * math.sin(angle) * math.cos(torsion),
            bond * math.sin(angle) * math.sin(torsion),
        ]
    )
    return c + d_local[0] * bc + d_local[1] * m + d_local[2] * n


def _heavy_atoms(
    residues: Sequence[str], phi: float, psi: float
) -> list[tuple[str, list[tuple[str, str, np.ndarray]]]]:
    """Heavy atoms of ACE-residues-NME as ``[(residue name, [(atom name, element, xyz Å)])]``."""
    rad = math.radians
    out: list[tuple[str, list[tuple[str, str, np.ndarray]]]] = []
    # ACE: CH3 at the origin, C on x, and a virtual first atom to fix the plane
    ch3 = np.zeros(3)
    c_prev = np.array([_ACE_CH3_C, 0.0, 0.0])
    virtual = np.array([-0.5, 1.0, 0.0])  # only sets the orientation of the first plane
    ace = [("CH3", "C", ch3), ("C", "C", c_prev)]
    out.append(("ACE", ace))
    # the "previous" triple (x, y, C) whose last atom is the carbonyl C to bond the next N to
    ca_prev, ca_prevprev = ch3, virtual
    prev_atoms = ace
    prev_psi = math.pi  # N-position torsion for ACE: virtual-CH3-C-N (any value; sets the first plane)
    for name in [*residues, "NME"]:
        n = place_atom(ca_prevprev, ca_prev, c_prev, _C_N, rad(_ANG_CA_C_N), prev_psi)
        # the carbonyl O of the previous residue: in the peptide plane, trans to this N
        o = place_atom(n, ca_prev, c_prev, _C_O, rad(_ANG_CA_C_O), math.pi)
        prev_atoms.append(("O", "O", o))
        if name == "NME":
            cm = place_atom(ca_prev, c_prev, n, _NME_N_C, rad(_ANG_C_N_CA), math.pi)
            out.append(("NME", [("N", "N", n), ("C", "C", cm)]))
            break
        ca = place_atom(ca_prev, c_prev, n, _N_CA, rad(_ANG_C_N_CA), math.pi)  # ω = π
        c = place_atom(c_prev, n, ca, _CA_C, rad(_ANG_N_CA_C), phi)  # φ
        atoms = [("N", "N", n), ("CA", "C", ca), ("C", "C", c)]
        if name != "GLY":
            cb = place_atom(c, n, ca, _CA_CB, rad(_ANG_N_CA_CB), rad(_TORSION_CB))
            atoms.append(("CB", "C", cb))
            placed = {a: x for a, _, x in atoms}
            for atom, element, (ra, rb, rc), bond, angle, torsion in _SIDE_CHAINS[name]:
                placed[atom] = place_atom(placed[ra], placed[rb], placed[rc], bond, rad(angle), rad(torsion))
                atoms.append((atom, element, placed[atom]))
        out.append((name, atoms))
        ca_prevprev, ca_prev, c_prev, prev_atoms, prev_psi = n, ca, c, atoms, psi  # ψ = N-CA-C-N(next)
    return out


def _topology(residues: Sequence[str], phi: float, psi: float):
    """OpenMM ``(Topology, positions in nm)`` of the heavy atoms with all their bonds."""
    import openmm.app as app
    import openmm.unit as unit

    topology = app.Topology()
    chain = topology.addChain("A")
    positions = []
    previous_c = None
    for index, (resname, atoms) in enumerate(_heavy_atoms(residues, phi, psi), start=1):
        residue = topology.addResidue(resname, chain, id=str(index))
        by_name = {}
        for name, element, xyz in atoms:
            by_name[name] = topology.addAtom(name, app.Element.getBySymbol(element), residue)
            positions.append(xyz / 10.0)
        if previous_c is not None:
            topology.addBond(previous_c, by_name["N"])
        if resname == "ACE":
            bonds = [("CH3", "C"), ("C", "O")]
        elif resname == "NME":
            bonds = [("N", "C")]
        else:
            bonds = [("N", "CA"), ("CA", "C"), ("C", "O")] + ([("CA", "CB")] if "CB" in by_name else [])
            bonds += list(_SIDE_CHAIN_BONDS.get(resname, ()))
        for a, b in bonds:
            topology.addBond(by_name[a], by_name[b])
        previous_c = by_name.get("C") if resname != "NME" else None
    return topology, unit.Quantity(np.array(positions), unit.nanometer)


def build_capped_peptide(
    residues: Sequence[str],
    path: str | Path,
    *,
    forcefield: Sequence[str] = ("amber14-all.xml",),
    phi: float = -2.5,
    psi: float = 2.4,
    minimize: bool = True,
    max_iterations: int = 500,
) -> Path:
    """Write the capped peptide ACE-``residues``-NME as a PDB file and return its path.

    ``residues``: three-letter names of the inner residues (``SUPPORTED_RESIDUES``; e.g. ``["ALA"] * 3`` for the
    alanine tetrapeptide). ``phi``, ``psi``: the backbone torsions of every inner residue in radians before
    minimisation (default -2.5, 2.4: extended, β). Hydrogens are added with the hydrogen definitions and templates of
    ``forcefield`` (OpenMM file names); with ``minimize`` the structure is relaxed by at most ``max_iterations``
    L-BFGS steps of OpenMM in that force field without cutoffs or constraints (implicit solvent included when it is
    listed). The PDB has standard residue names and OpenMM's atom names, and reads back with ``openmm.app.PDBFile``.
    """
    import openmm
    import openmm.app as app
    import openmm.unit as unit

    residues = [str(r).upper() for r in residues]
    if not residues:
        raise ValueError("build_capped_peptide: residues is empty; give at least one, e.g. ['ALA']")
    unknown = [r for r in residues if r not in _SIDE_CHAINS]
    if unknown:
        raise ValueError(f"build_capped_peptide: unsupported residues {unknown}; supported: {list(SUPPORTED_RESIDUES)}")
    for name, value in (("phi", phi), ("psi", psi)):
        if not math.isfinite(value):
            raise ValueError(f"build_capped_peptide: {name}={value} is not a finite angle in radians")
    try:
        ff = app.ForceField(*forcefield)
    except Exception as error:  # OpenMM raises ValueError/OSError for unknown files
        raise ValueError(f"build_capped_peptide: cannot load forcefield={list(forcefield)}: {error}") from error

    topology, positions = _topology(residues, phi, psi)
    modeller = app.Modeller(topology, positions)
    modeller.addHydrogens(ff)
    positions = modeller.getPositions()
    if minimize:
        system = ff.createSystem(modeller.topology, nonbondedMethod=app.NoCutoff, constraints=None)
        context = openmm.Context(
            system, openmm.VerletIntegrator(0.001 * unit.picoseconds), openmm.Platform.getPlatformByName("Reference")
        )
        context.setPositions(positions)
        openmm.LocalEnergyMinimizer.minimize(context, 1.0, max_iterations)
        positions = context.getState(getPositions=True).getPositions()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        app.PDBFile.writeFile(modeller.topology, positions, handle, keepIds=True)
    return path
