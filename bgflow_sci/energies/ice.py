"""Proton-ordered ice XI of rigid TIP4P-Ew water: the crystal, its OpenMM system and its energy on rigid-body states.

**Lattice.** Oxygens sit on the hexagonal-ice (wurtzite) lattice, written in its orthorhombic cell of 8 molecules,
``a × b × c`` with ``b = √3 a``: fractional positions ``(0, 1/3, 0)``, ``(1/2, 5/6, 0)``, ``(1/2, 1/6, 1/2)``,
``(0, 2/3, 1/2)`` and the same four shifted by ``u c`` along ``c`` (``u = 3/8``, the ideal tetrahedral value).  The
default cell ``0.449 × 0.778 × 0.734 nm`` makes the ``2 × 1 × 1`` supercell the 16-molecule box of the rigid-body-flow
benchmark (Köhler et al., ICML 2023: 0.898 × 0.778 × 0.734 nm) and ``4 × 2 × 2`` its 128-molecule 2×2×2 supercell.

**Protons.** Ice XI is the ferroelectric, proton-ordered form of ice Ih, space group ``Cmc2₁`` (Leadbetter et al.,
J. Chem. Phys. 82, 424 (1985); Line & Whitworth, J. Chem. Phys. 104, 10008 (1996)): every molecule lies in a mirror
plane ``x = const``; every hydrogen bond along ``c`` points the same way (``+c``), so half the molecules donate along
``c`` and to their one in-plane neighbour, and the other half donate to their two out-of-plane neighbours (a mirror
pair).  :func:`ice_xi` builds exactly that and checks the ice rules (two donated, two accepted bonds per molecule).
Each water is then placed rigidly: its bisector along the bisector of its two donor directions, in their plane.

**Energy.** :func:`tip4p_ew_ice` returns an :class:`IceXI` with OpenMM's ``tip4pew.xml`` system (PME, cutoff half the
shortest box edge by default, rigid water), the topology, the atom positions (``O, H1, H2, M`` per molecule, nm), and
the crystal as a rigid-body state; :meth:`IceXI.energy` is the reduced energy ``u = U / (R T)`` of rigid-body states
``(batch, 7 n)`` (positions, then quaternions; :class:`~bgflow_sci.energies.RigidBodyEnergy`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .rigid import TIP4P_EW_HOH, TIP4P_EW_M_WEIGHTS, TIP4P_EW_OH, RigidBodyEnergy, tip4p_ew_water

ICE_XI_CELL_NM = (0.449, 0.778, 0.734)  # orthorhombic cell a, b, c of 8 molecules
_FRACTIONAL_OXYGENS = ((0.0, 1 / 3, 0.0), (0.5, 5 / 6, 0.0), (0.5, 1 / 6, 0.5), (0.0, 2 / 3, 0.5))
_U = 3 / 8


@dataclass(frozen=True)
class IceLattice:
    """Atoms of a rigid-water crystal: ``atoms (n, 4, 3)`` nm (``O, H1, H2, M``), ``box (3,)`` nm (orthorhombic)."""

    atoms: np.ndarray
    box: np.ndarray

    @property
    def n_molecules(self) -> int:
        return len(self.atoms)


def _oxygens(cells: tuple[int, int, int], cell: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    base = list(_FRACTIONAL_OXYGENS) + [(x, y, z + _U) for x, y, z in _FRACTIONAL_OXYGENS]
    frac = np.array(
        [
            [(x + i) / cells[0], (y + j) / cells[1], (z + k) / cells[2]]
            for i in range(cells[0])
            for j in range(cells[1])
            for k in range(cells[2])
            for x, y, z in base
        ]
    )
    box = np.array([cells[d] * cell[d] for d in range(3)])
    return frac * box, box


def _minimum_image(d: np.ndarray, box: np.ndarray) -> np.ndarray:
    return d - box * np.round(d / box)


def ice_xi(cells: tuple[int, int, int] = (2, 1, 1), cell_nm: tuple[float, float, float] = ICE_XI_CELL_NM) -> IceLattice:
    """Proton-ordered ice XI (``Cmc2₁``, module docstring) in ``cells`` orthorhombic cells of ``cell_nm``.

    Raises ``ValueError`` when a cell count is below 1 or when the hydrogen-bond network cannot be resolved (a box
    too small for four distinct neighbours per oxygen).  Molecules are ordered cell by cell, 8 per cell.
    """
    cells = tuple(int(c) for c in cells)
    if len(cells) != 3 or min(cells) < 1:
        raise ValueError(f"cells must be three positive integers, got {cells}")
    oxygens, box = _oxygens(cells, cell_nm)
    n = len(oxygens)
    d = _minimum_image(oxygens[None, :, :] - oxygens[:, None, :], box)  # d[i, j] = r_j - r_i
    dist = np.linalg.norm(d, axis=-1)
    np.fill_diagonal(dist, np.inf)
    neighbours = np.argsort(dist, axis=1)[:, :4]
    bond_length = np.sort(dist, axis=1)[:, :4]
    if np.ptp(bond_length) > 0.02 or np.any(np.sort(dist, axis=1)[:, 4] - bond_length.max() < 0.02):
        raise ValueError(f"cannot resolve the hydrogen-bond network of {cells} cells of {cell_nm} nm")
    donors: list[list[int]] = [[] for _ in range(n)]
    tol = 1e-6
    for i in range(n):
        vertical = [j for j in neighbours[i] if abs(d[i, j, 0]) < tol and abs(d[i, j, 1]) < tol]
        if len(vertical) != 1:
            raise ValueError(f"oxygen {i} has {len(vertical)} neighbours along c, expected one")
        j = vertical[0]
        oblique = [k for k in neighbours[i] if k != j]
        if d[i, j, 2] > 0:  # lower end of a c-axis bond: donate up and to the in-plane neighbour (same x)
            in_plane = [k for k in oblique if abs(d[i, k, 0]) < tol]
            if len(in_plane) != 1:
                raise ValueError(f"oxygen {i} has {len(in_plane)} in-plane oblique neighbours, expected one")
            donors[i] = [j, in_plane[0]]
        else:  # upper end: donate to the two out-of-plane neighbours (mirror images)
            donors[i] = [k for k in oblique if abs(d[i, k, 0]) > tol]
        if len(donors[i]) != 2:
            raise ValueError(f"oxygen {i} donates {len(donors[i])} hydrogens, expected two")
    accepted = np.bincount([j for ds in donors for j in ds], minlength=n)
    if not np.all(accepted == 2):
        raise ValueError("ice rules violated: every oxygen must accept exactly two hydrogen bonds")
    atoms = np.empty((n, 4, 3))
    half = TIP4P_EW_HOH / 2
    for i in range(n):
        u1, u2 = (d[i, j] / np.linalg.norm(d[i, j]) for j in donors[i])
        bisector = (u1 + u2) / np.linalg.norm(u1 + u2)
        across = (u1 - u2) / np.linalg.norm(u1 - u2)
        h1 = oxygens[i] + TIP4P_EW_OH * (math.cos(half) * bisector + math.sin(half) * across)
        h2 = oxygens[i] + TIP4P_EW_OH * (math.cos(half) * bisector - math.sin(half) * across)
        w_o, w_1, w_2 = TIP4P_EW_M_WEIGHTS
        atoms[i] = [oxygens[i], h1, h2, w_o * oxygens[i] + w_1 * h1 + w_2 * h2]
    return IceLattice(atoms=atoms, box=box)


def dipole_direction(lattice: IceLattice) -> np.ndarray:
    """Unit vector of the crystal's net dipole (sum over molecules of ``H1 + H2 - 2 O``); ``+c`` for ice XI."""
    a = lattice.atoms
    total = (a[:, 1] + a[:, 2] - 2 * a[:, 0]).sum(0)
    return total / np.linalg.norm(total)


class IceXI:
    """Ice XI of rigid TIP4P-Ew water with OpenMM, in the openmmtools style: ``.system``, ``.topology``,
    ``.positions`` (``(n * 4, 3)`` nm, ``O, H1, H2, M`` per molecule), plus ``.box`` (nm), ``.molecule`` (the rigid
    water), ``.lattice`` and ``.state`` — the perfect crystal as a rigid-body state ``(1, 7 n)``.

    Built by :func:`tip4p_ew_ice`.  ``cutoff_nm`` defaults to half the shortest box edge (the largest PME allows).
    """

    def __init__(self, lattice: IceLattice, cutoff_nm: float | None = None, ewald_error_tolerance: float = 5e-4):
        import openmm
        from openmm import app, unit

        self.lattice, self.box = lattice, lattice.box
        self.n_molecules = lattice.n_molecules
        half_box = 0.5 * float(lattice.box.min())
        self.cutoff_nm = half_box if cutoff_nm is None else float(cutoff_nm)
        if not 0 < self.cutoff_nm <= half_box + 1e-12:
            raise ValueError(f"cutoff_nm must be in (0, {half_box:.4f}] (half the shortest box edge), got {cutoff_nm}")
        topology = app.Topology()
        chain = topology.addChain()
        oxygen, hydrogen = app.element.oxygen, app.element.hydrogen
        for _ in range(self.n_molecules):
            residue = topology.addResidue("HOH", chain)
            o = topology.addAtom("O", oxygen, residue)
            h1 = topology.addAtom("H1", hydrogen, residue)
            h2 = topology.addAtom("H2", hydrogen, residue)
            topology.addAtom("M", None, residue)
            topology.addBond(o, h1)
            topology.addBond(o, h2)
        topology.setPeriodicBoxVectors(np.diag(lattice.box) * unit.nanometer)
        forcefield = app.ForceField("tip4pew.xml")
        self.system = forcefield.createSystem(
            topology,
            nonbondedMethod=app.PME,
            nonbondedCutoff=self.cutoff_nm * unit.nanometer,
            rigidWater=True,
            ewaldErrorTolerance=ewald_error_tolerance,
        )
        self.topology = topology
        self.positions = lattice.atoms.reshape(-1, 3).copy()
        self.molecule = tip4p_ew_water()
        atoms = torch.as_tensor(lattice.atoms.reshape(1, -1))
        r, q = self.molecule.from_atoms(atoms)
        self.state = torch.cat([r, q], dim=1)
        self._openmm = openmm

    @property
    def dim(self) -> int:
        """Rigid-body state size ``7 n`` (positions ``3 n`` nm, then quaternions ``4 n``)."""
        return 7 * self.n_molecules

    def energy(self, temperature: float, **openmm_options: Any) -> RigidBodyEnergy:
        """Reduced energy ``U / (R T)`` of rigid-body states ``(batch, 7 n)`` at ``temperature`` (K), evaluated by
        :class:`~bgflow_sci.energies.OpenMMEnergy` on the atoms (``openmm_options``: ``platform``, ``n_workers``, ...;
        default the CPU platform in-process when available)."""
        from .openmm import OpenMMEnergy

        openmm_options.setdefault("platform", _fastest_cpu_platform())
        atom_energy = OpenMMEnergy(self.system, temperature, **openmm_options)
        return RigidBodyEnergy(atom_energy, self.molecule, self.n_molecules)


def _fastest_cpu_platform() -> str:
    import openmm

    names = {openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())}
    return "CPU" if "CPU" in names else "Reference"


def tip4p_ew_ice(
    cells: tuple[int, int, int] = (2, 1, 1),
    cell_nm: tuple[float, float, float] = ICE_XI_CELL_NM,
    cutoff_nm: float | None = None,
    ewald_error_tolerance: float = 5e-4,
) -> IceXI:
    """Ice XI of rigid TIP4P-Ew water: ``(2, 1, 1)`` cells is the 16-molecule benchmark box, ``(4, 2, 2)`` the
    128-molecule one (module docstring)."""
    return IceXI(ice_xi(cells, cell_nm), cutoff_nm=cutoff_nm, ewald_error_tolerance=ewald_error_tolerance)


def rigid_state_from_atoms(ice: IceXI, atoms: np.ndarray | Tensor) -> Tensor:
    """Rigid-body states ``(batch, 7 n)`` (float64) from atom frames ``(batch, n * 4, 3)`` or ``(batch, n * 12)`` nm."""
    atoms = torch.as_tensor(np.asarray(atoms), dtype=torch.float64).reshape(len(atoms), -1)
    if atoms.shape[1] != 12 * ice.n_molecules:
        raise ValueError(f"atom frames must hold {4 * ice.n_molecules} sites (O, H1, H2, M), got {atoms.shape[1] // 3}")
    r, q = ice.molecule.from_atoms(atoms)
    return torch.cat([r, q], dim=1)
