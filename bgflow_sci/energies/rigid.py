"""Rigid molecules: between (position, unit-quaternion orientation) per molecule and atom coordinates.

A :class:`RigidMolecule` holds its atoms' body-frame coordinates ``b_a`` (nm, ``(n_sites, 3)``, reference point at
the origin).  Molecule ``i`` at position ``r_i`` (nm) with orientation ``q_i`` places its atoms at
``x_ia = r_i + R(q_i) b_a`` (:meth:`RigidMolecule.to_atoms`); ``±q`` give the same atoms.  The way back
(:meth:`RigidMolecule.from_atoms`) reads ``r_i`` from the reference point and ``R_i`` by the least-squares
superposition (Kabsch) of the body frame onto the atoms, returned as canonical quaternions; for rigid input the round
trip is exact to rounding.  Virtual sites (TIP4P's M) are just more body-frame points.

Layout: ``positions (batch, n_molecules * 3)``, ``quaternions (batch, n_molecules * 4)`` (:mod:`bgflow_sci.quaternions`
convention), atoms ``(batch, n_molecules * n_sites * 3)`` molecule-major, sites in :attr:`RigidMolecule.names` order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .. import quaternions as quat
from .base import Energy

# TIP4P-Ew (Horn et al., J. Chem. Phys. 120, 9665 (2004)), as in OpenMM's tip4pew.xml: r(OH) 0.09572 nm,
# angle HOH 1.82421813418 rad (104.52°), M = 0.786646558 O + 0.106676721 (H1 + H2) (0.0125 nm from O on the bisector)
TIP4P_EW_OH = 0.09572
TIP4P_EW_HOH = 1.82421813418
TIP4P_EW_M_WEIGHTS = (0.786646558, 0.106676721, 0.106676721)


class RigidMolecule:
    """A rigid body: site names and body-frame coordinates ``(n_sites, 3)`` (nm), reference point at the origin."""

    def __init__(self, names: Sequence[str], body: Tensor | Sequence[Sequence[float]]):
        self.names = list(names)
        self.body = torch.as_tensor(body, dtype=torch.float64)
        if self.body.shape != (len(self.names), 3):
            raise ValueError(f"body coordinates must be ({len(self.names)}, 3) for sites {self.names}")
        centred = self.body - self.body.mean(0)
        if int(torch.linalg.matrix_rank(centred, tol=1e-9)) < 2:
            raise ValueError("a rigid molecule needs at least three non-collinear sites to define its orientation")
        self.n_sites = len(self.names)

    def to_atoms(self, positions: Tensor, quaternions: Tensor) -> Tensor:
        """Atoms ``(batch, n_molecules * n_sites * 3)`` from positions ``(batch, 3 n)`` and quaternions
        ``(batch, 4 n)`` (unit within :data:`~bgflow_sci.quaternions.UNIT_TOLERANCE`)."""
        n = self._count(positions, quaternions)
        q = quat.normalize(quaternions.reshape(-1, n, 1, 4), name="RigidMolecule.to_atoms quaternions")
        shape = (q.shape[0], n, self.n_sites)
        rotated = quat.rotate(q.expand(*shape, 4), self.body.to(positions).expand(*shape, 3))
        atoms = positions.reshape(-1, n, 1, 3) + rotated
        return atoms.reshape(positions.shape[0], n * self.n_sites * 3)

    def from_atoms(self, atoms: Tensor) -> tuple[Tensor, Tensor]:
        """``(positions (batch, 3 n), canonical quaternions (batch, 4 n))`` from atoms ``(batch, n * n_sites * 3)``.

        Orientation by Kabsch: the rotation minimising ``Σ_a |R b_a - (x_a - x̄)|²`` with the body frame centred the
        same way; the position is then ``x̄ - R b̄`` (the reference point, wherever it lies).
        """
        if atoms.dim() != 2 or atoms.shape[1] % (3 * self.n_sites):
            raise ValueError(f"atoms must be (batch, n_molecules * {self.n_sites} * 3), got {tuple(atoms.shape)}")
        n = atoms.shape[1] // (3 * self.n_sites)
        x = atoms.reshape(atoms.shape[0], n, self.n_sites, 3)
        body = self.body.to(atoms)
        b_mean = body.mean(0)
        x_mean = x.mean(2, keepdim=True)
        h = (body - b_mean).transpose(0, 1) @ (x - x_mean)  # (batch, n, 3, 3) = Σ_a b_a x_aᵀ
        u, _, vh = torch.linalg.svd(h)
        d = torch.sign(torch.linalg.det(vh.transpose(-1, -2) @ u.transpose(-1, -2)))
        fix = torch.ones_like(u[..., 0])
        fix[..., 2] = d
        rotation = vh.transpose(-1, -2) @ (fix[..., None] * u.transpose(-1, -2))
        q = quat.from_rotation_matrix(rotation)
        positions = x_mean.squeeze(2) - (rotation @ b_mean)
        return positions.reshape(atoms.shape[0], 3 * n), q.reshape(atoms.shape[0], 4 * n)

    def _count(self, positions: Tensor, quaternions: Tensor) -> int:
        if positions.dim() != 2 or positions.shape[1] % 3:
            raise ValueError(f"positions must be (batch, n_molecules * 3), got {tuple(positions.shape)}")
        n = positions.shape[1] // 3
        if quaternions.shape != (positions.shape[0], 4 * n):
            raise ValueError(f"quaternions must be (batch, {4 * n}) for {n} molecules, got {tuple(quaternions.shape)}")
        return n


def tip4p_ew_water() -> RigidMolecule:
    """Rigid TIP4P-Ew water ``O, H1, H2, M`` with the oxygen as reference point; the molecule lies in the body x-y
    plane with its bisector along +x (H1 at +y)."""
    half = TIP4P_EW_HOH / 2
    h1 = [TIP4P_EW_OH * math.cos(half), TIP4P_EW_OH * math.sin(half), 0.0]
    h2 = [TIP4P_EW_OH * math.cos(half), -TIP4P_EW_OH * math.sin(half), 0.0]
    w_o, w_h1, w_h2 = TIP4P_EW_M_WEIGHTS
    m = [w_h1 * h1[0] + w_h2 * h2[0], 0.0, 0.0]  # O at the origin contributes nothing
    return RigidMolecule(["O", "H1", "H2", "M"], [[0.0, 0.0, 0.0], h1, h2, m])


def tetrahedron(edge: float = 1.0) -> RigidMolecule:
    """Regular tetrahedron of edge ``edge`` with its centre as reference point (vertices ``A, B, C, D``)."""
    s = edge / (2 * math.sqrt(2))
    corners = [[s, s, s], [s, -s, -s], [-s, s, -s], [-s, -s, s]]
    return RigidMolecule(["A", "B", "C", "D"], corners)


class RigidBodyEnergy(Energy):
    """An atom energy seen from rigid-body states: ``u(r, q) = u_atoms(molecule.to_atoms(r, q))`` (kT).

    State ``(batch, 7 n)``: positions ``(3 n)`` nm, then quaternions ``(4 n)`` (unit within
    :data:`~bgflow_sci.quaternions.UNIT_TOLERANCE`; normalised on the way; further off raises ``ValueError``; a
    zero quaternion gives ``+inf``, counted in ``n_invalid``).  ``u(r, q) = u(r, -q)``.  Forces are the chain rule of
    the atom energy's forces through :meth:`RigidMolecule.to_atoms` (autograd; the atom energy's own analytic
    forces are used, e.g. OpenMM's, where virtual-site forces are already moved onto their parent atoms).  The
    density ``exp(-u)`` is with respect to Lebesgue measure on positions and the ``S^3`` volume on quaternions (for
    rigid molecules the constrained-MD configurational measure up to a constant).
    """

    def __init__(self, atom_energy: Energy, molecule: RigidMolecule, n_molecules: int):
        if atom_energy.dim != 3 * molecule.n_sites * n_molecules:
            raise ValueError(
                f"atom energy has dim {atom_energy.dim}, expected {3 * molecule.n_sites * n_molecules} for "
                f"{n_molecules} molecules of {molecule.n_sites} sites {molecule.names}"
            )
        super().__init__(7 * n_molecules)
        self.atom_energy, self.molecule, self.n_molecules = atom_energy, molecule, int(n_molecules)

    def atoms(self, x: Tensor) -> Tensor:
        """Atom coordinates ``(batch, 3 n n_sites)`` nm of states ``x`` ``(batch, 7 n)``."""
        n = self.n_molecules
        return self.molecule.to_atoms(x[:, : 3 * n], x[:, 3 * n :])

    def _energy(self, x: Tensor) -> Tensor:
        n = self.n_molecules
        q = x[:, 3 * n :].reshape(len(x), n, 4)
        zero = torch.linalg.vector_norm(q, dim=-1) == 0  # (batch, n): no orientation -> +inf, not an error
        q = torch.where(zero[..., None], q.new_tensor([1.0, 0.0, 0.0, 0.0]), q)
        u = self.atom_energy.energy(self.molecule.to_atoms(x[:, : 3 * n], q.reshape(len(x), 4 * n)))
        return torch.where(zero.any(-1), torch.full_like(u, torch.nan), u)
