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

    def symmetries(self, tolerance: float = 1e-6) -> Tensor:
        """The molecule's proper point group as quaternions ``(k, 4)`` (canonical; row 0 the identity): rotations
        ``g`` with ``R(g) b_a = b_π(a)`` for a permutation ``π`` of sites of one species (the name without trailing
        digits: ``H1``, ``H2`` are one species).  Water: ``{1, C2 about the bisector}``; a tetrahedron of four
        distinct vertices: the identity only.  Orientations ``q`` and ``q g`` give the same atoms up to relabelling
        identical sites, hence the same energy."""
        import itertools

        species = [name.rstrip("0123456789") for name in self.names]
        groups = [[i for i, s in enumerate(species) if s == name] for name in dict.fromkeys(species)]
        if math.prod(math.factorial(len(g)) for g in groups) > 40320:
            raise ValueError(f"too many equivalent sites in {self.names} to enumerate the point group")
        found = [torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)]
        for choice in itertools.product(*(itertools.permutations(g) for g in groups)):
            order = list(range(self.n_sites))
            for g, perm in zip(groups, choice):
                for a, b in zip(g, perm):
                    order[a] = b
            target = self.body[order].reshape(1, -1)
            r, q = self.from_atoms(target)
            if float((self.to_atoms(r, q) - target).abs().max()) > tolerance or float(r.abs().max()) > tolerance:
                continue
            q = quat.canonical(q.reshape(4))
            if all(float(abs(q @ f)) < 1 - tolerance for f in found):
                found.append(q)
        return torch.stack(found)

    def orientation_angles(self, quaternions: Tensor, reference: Tensor) -> Tensor:
        """Rotation angle ``(batch, n)`` in ``[0, π]`` rad of each body from its ``reference`` orientation
        (``(4 n,)`` or ``(batch, 4 n)``), up to the molecule's point group: ``min_g 2 acos |q_i · (q_ref,i g)|``
        over :meth:`symmetries` (a water turned by its C2 is at angle 0).  A crystal's librations stay well below
        1 rad; a reoriented molecule (an orientational defect) is at ≳ 1.5 rad."""
        group = self.symmetries().to(quaternions)
        q = quaternions.reshape(quaternions.shape[0], -1, 1, 4)
        ref = reference.reshape(-1, q.shape[1], 1, 4).to(quaternions)
        images = quat.multiply(ref.expand(-1, -1, len(group), 4), group.expand(*ref.shape[:2], len(group), 4))
        return quat.geodesic_angle(q, images).amin(-1)

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


class CrystalSymmetry:
    """Lattice translations of a crystal of identical rigid bodies, as relabellings of its bodies.

    ``shifts`` ``(k, 3)`` nm: the translations ``t``; ``permutations`` ``(k, n)``: ``t`` takes body ``i`` to site
    ``σ(i)``; ``rotations`` ``(k, n, 4)``:
    the body-frame point-group element ``g_i`` (:meth:`RigidMolecule.symmetries`) with
    ``q_σ(i) = ±q_i g_i`` for the reference orientations.  Applying translation ``k`` to a state moves body ``i``
    to slot ``σ(i)`` with orientation ``q_i g_i`` and its position unchanged: the image is the translated state
    shifted back by ``-t`` as a whole (removed by flows that read positions relative to body 0), the atoms are the
    very same up to relabelling identical atoms and molecules, and the energy is exactly unchanged (translating
    instead would change a PME energy by its grid error, ~1e-6 relative); for samples of the ordered crystal
    (every site librating about its own orientation) the image is again such a sample.  Row 0 is the identity.
    Built by :meth:`find`.
    """

    def __init__(self, shifts: Tensor, permutations: Tensor, rotations: Tensor):
        self.shifts, self.permutations, self.rotations = shifts, permutations, rotations
        self.n_bodies = permutations.shape[1]

    def __len__(self) -> int:
        return len(self.permutations)

    @classmethod
    def find(
        cls,
        crystal: Tensor,
        box: Sequence[float] | Tensor,
        molecule: RigidMolecule | None = None,
        tolerance: float = 1e-4,
    ) -> CrystalSymmetry:
        """Every translation ``t = r_j - r_0`` that maps the reference state ``crystal`` ``(7 n,)`` or
        ``(1, 7 n)`` (site positions nm, orientations) onto itself in the periodic orthorhombic ``box`` ``(3,)`` nm:
        each body lands on a site within ``tolerance`` nm whose orientation is the same up to ``molecule``'s point
        group (``None``: the identity only) within ``tolerance`` in ``|<q, q'>|``."""
        x = torch.as_tensor(crystal, dtype=torch.float64).reshape(-1)
        n = len(x) // 7
        if len(x) != 7 * n or n < 1:
            shape = tuple(torch.as_tensor(crystal).shape)
            raise ValueError(f"crystal must be one rigid-body state (7 n,), got {shape}")
        box = torch.as_tensor(box, dtype=torch.float64).reshape(-1)
        if box.shape != (3,) or not bool((box > 0).all()):
            raise ValueError(f"box must be three positive edge lengths (nm), got {box.tolist()}")
        r, q = x[: 3 * n].reshape(n, 3), quat.normalize(x[3 * n :].reshape(n, 4))
        group = molecule.symmetries() if molecule is not None else torch.tensor([[1.0, 0.0, 0.0, 0.0]]).double()
        # overlap[i, j, g] = |<q_i g, q_j>|: site j holds body i's rotation composed with g
        qg = quat.multiply(q[:, None, :].expand(n, len(group), 4), group[None].expand(n, len(group), 4))
        overlap = torch.einsum("igc,jc->ijg", qg, q).abs()
        shifts, perms, rots = [], [], []
        for j in range(n):
            d = (r + (r[j] - r[0]))[:, None, :] - r[None, :, :]
            d = d - box * torch.round(d / box)
            hit = torch.linalg.vector_norm(d, dim=-1) < tolerance  # (n, n)
            if not bool((hit.sum(1) == 1).all()):
                continue
            sigma = hit.double().argmax(1)
            best = overlap[torch.arange(n), sigma].max(-1)  # the group element that matches, per body
            if len(set(sigma.tolist())) == n and bool((best.values > 1 - tolerance).all()):
                shifts.append(r[j] - r[0])
                perms.append(sigma)
                rots.append(group[best.indices])
        return cls(torch.stack(shifts), torch.stack(perms), torch.stack(rots))

    def apply(self, states: Tensor, index: int | Tensor) -> Tensor:
        """States ``(batch, 7 n)`` under translation ``index`` (an int, or ``(batch,)``: one per state)."""
        n = self.n_bodies
        if states.dim() != 2 or states.shape[1] != 7 * n:
            raise ValueError(f"rigid-body states must be (batch, {7 * n}), got {tuple(states.shape)}")
        index = torch.as_tensor(index, dtype=torch.long).expand(len(states))
        perm = self.permutations[index].to(states.device)
        g = self.rotations[index].to(states)
        r = states[:, : 3 * n].reshape(len(states), n, 3)
        q = quat.multiply(states[:, 3 * n :].reshape(len(states), n, 4), g)
        inverse = perm.argsort(-1)[..., None]  # new body j is old body inverse[j]
        r = torch.gather(r, 1, inverse.expand(-1, -1, 3))
        q = torch.gather(q, 1, inverse.expand(-1, -1, 4))
        return torch.cat([r.reshape(len(states), -1), q.reshape(len(states), -1)], dim=1)

    def augment(self, states: Tensor) -> Tensor:
        """All images ``(len(self) * batch, 7 n)``: translation 0 (the states themselves) first, then the others."""
        return torch.cat([self.apply(states, k) for k in range(len(self))])
