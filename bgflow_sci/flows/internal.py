"""Internal coordinates: Cartesian positions <-> (bond lengths, angles, torsions) with the exact Jacobian.

Each non-root atom ``i`` is placed from three already placed atoms ``(j, k, l)`` (a Z-matrix row):
bond ``b = |x_i - x_j|``, angle ``a = ∠(x_i, x_j, x_k)``, torsion ``t = dihedral(x_i, x_j, x_k, x_l)``.
Placing atom ``i`` from ``(b, a, t)`` has volume factor ``b² sin a`` (Noé et al., Science 2019).

The six global degrees of freedom are removed canonically: root atoms ``(r0, r1, r2)`` (``r1`` bonded to
both) are put at ``r0 = 0``, ``r1 = (b1, 0, 0)``, ``r2`` in the xy-plane.  With translations and
rotations integrated out, their volume factors are ``b1²`` and ``b2² sin a2`` (up to the constant volume
``8π²`` of SO(3) times the box), so the density of Cartesian configurations modulo rigid motions is

    log q(x) = log p(ic) - [2 log b1 + log(b2² sin a2) + Σ_i log(b_i² sin a_i)].

Vector layout of the internal coordinates (``dim = 3 n - 6``): ``[bonds (n-1), angles (n-2), torsions (n-3)]``,
with ``bonds = [b1, b2, rows...]``, ``angles = [a2, rows...]``; lengths in the units of ``x`` (nm for
molecules), angles in radians, torsions in ``[-π, π)``.  Forward maps internal -> Cartesian (the
Boltzmann-generator direction), returning positions in the canonical frame; ``inverse`` accepts any frame.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import check_batch
from .base import Flow
from .transformers import Domain

# ----------------------------------------------------------------------------------------------- geometry


def bond_length(xi: Tensor, xj: Tensor) -> Tensor:
    """``|x_i - x_j|`` over the last axis (xyz)."""
    return torch.linalg.vector_norm(xi - xj, dim=-1)


def bond_angle(xi: Tensor, xj: Tensor, xk: Tensor) -> Tensor:
    """Angle ``∠(x_i, x_j, x_k)`` at ``x_j`` in ``[0, π]`` (atan2 form, accurate near 0 and π)."""
    u, v = xi - xj, xk - xj
    return torch.atan2(torch.linalg.vector_norm(torch.cross(u, v, dim=-1), dim=-1), (u * v).sum(-1))


def dihedral(xi: Tensor, xj: Tensor, xk: Tensor, xl: Tensor) -> Tensor:
    """Torsion of the chain ``i-j-k-l`` in ``(-π, π]`` (IUPAC sign; symmetric under reversing the chain)."""
    b0, b1, b2 = xi - xj, xk - xj, xl - xk
    b1 = b1 / torch.linalg.vector_norm(b1, dim=-1, keepdim=True)
    v = b0 - (b0 * b1).sum(-1, keepdim=True) * b1
    w = b2 - (b2 * b1).sum(-1, keepdim=True) * b1
    return torch.atan2((torch.cross(b1, v, dim=-1) * w).sum(-1), (v * w).sum(-1))


def place_atom(xj: Tensor, xk: Tensor, xl: Tensor, b: Tensor, a: Tensor, t: Tensor) -> Tensor:
    """Position ``x_i`` with ``|x_i - x_j| = b``, ``∠(i, j, k) = a``, ``dihedral(i, j, k, l) = t`` (NeRF)."""
    e = xj - xk
    e = e / torch.linalg.vector_norm(e, dim=-1, keepdim=True)
    n = torch.cross(xk - xl, e, dim=-1)
    n = n / torch.linalg.vector_norm(n, dim=-1, keepdim=True)
    m = torch.cross(n, e, dim=-1)
    b, a, t = b[..., None], a[..., None], t[..., None]
    return xj - b * torch.cos(a) * e + b * torch.sin(a) * (torch.cos(t) * m + torch.sin(t) * n)


# ----------------------------------------------------------------------------------------------- Z-matrix


@dataclass(frozen=True)
class ZMatrix:
    """Placement order of ``n_atoms`` atoms: root triple ``(r0, r1, r2)`` and rows ``(i, j, k, l)``.

    ``levels[d]`` lists row indices that depend only on atoms placed in earlier levels (batched placement).
    """

    n_atoms: int
    root: tuple[int, int, int]
    rows: tuple[tuple[int, int, int, int], ...]
    levels: tuple[tuple[int, ...], ...]

    @classmethod
    def from_bonds(cls, n_atoms: int, bonds: Iterable[tuple[int, int]], center: int | None = None) -> ZMatrix:
        """Build a Z-matrix from a bond graph by breadth-first search from a central atom.

        ``center`` (``r1``) defaults to the graph centre (minimal eccentricity, ties to the most neighbours).
        The graph must be connected and ``center`` needs at least two neighbours.
        """
        if n_atoms < 3:
            raise ValueError(f"internal coordinates need at least 3 atoms, got {n_atoms}")
        nbrs: list[list[int]] = [[] for _ in range(n_atoms)]
        for a, b in bonds:
            if not (0 <= a < n_atoms and 0 <= b < n_atoms) or a == b:
                raise ValueError(f"invalid bond ({a}, {b}) for {n_atoms} atoms")
            nbrs[a].append(b)
            nbrs[b].append(a)
        nbrs = [sorted(set(n)) for n in nbrs]

        def bfs(src: int) -> tuple[list[int], list[int], list[int]]:
            depth, parent, order = [-1] * n_atoms, [-1] * n_atoms, []
            depth[src], queue = 0, deque([src])
            while queue:
                u = queue.popleft()
                order.append(u)
                for v in nbrs[u]:
                    if depth[v] < 0:
                        depth[v], parent[v] = depth[u] + 1, u
                        queue.append(v)
            return depth, parent, order

        if center is None:
            candidates = [a for a in range(n_atoms) if len(nbrs[a]) >= 2]
            if not candidates:
                raise ValueError("no atom has two bonded neighbours: cannot choose a root")
            center = min(candidates, key=lambda a: (max(bfs(a)[0]), -len(nbrs[a]), a))
        depth, parent, order = bfs(center)
        if min(depth) < 0:
            missing = [a for a in range(n_atoms) if depth[a] < 0]
            raise ValueError(f"bond graph is not connected: atoms {missing[:10]} are unreachable from atom {center}")
        if len(nbrs[center]) < 2:
            raise ValueError(f"root atom {center} needs at least two bonded neighbours")
        r0, r2 = nbrs[center][0], nbrs[center][1]
        roots = (r0, center, r2)

        rows: list[tuple[int, int, int, int]] = []
        first_child: dict[tuple[int, int], int] = {}  # (parent, grandparent) -> first atom placed from them
        for i in order:
            if i in roots:
                continue
            j = parent[i]
            if j == center:
                k, l = (r0, r2) if i != r0 else (r2, r0)
            elif j in (r0, r2):
                k, l = center, (r2 if j == r0 else r0)
            else:
                k = parent[j]
                l = parent[k] if k != center else (r0 if j != r0 else r2)
            # Siblings (methyl hydrogens, carbonyl O next to N, ...) take their torsion relative to the first
            # sibling: dihedral(i, j, k, first) is a nearly fixed offset (about ±120° or 180°) instead of a
            # rotor angle that moves rigidly with the first sibling's, which a flow would have to learn exactly.
            first = first_child.setdefault((j, k), i)
            if first != i and j != center:
                l = first
            rows.append((i, j, k, l))
        # batched placement: a row runs once its reference atoms j, k, l are placed
        level_of = dict.fromkeys(roots, -1)
        row_level = []
        for i, j, k, l in rows:
            level_of[i] = 1 + max(level_of[j], level_of[k], level_of[l])
            row_level.append(level_of[i])
        levels = tuple(tuple(r for r, d in enumerate(row_level) if d == level) for level in sorted(set(row_level)))
        return cls(n_atoms, roots, tuple(rows), levels)

    @classmethod
    def from_mdtraj(cls, topology, center: int | None = None) -> ZMatrix:
        """Z-matrix from an ``mdtraj.Topology``'s bond graph."""
        bonds = [(b[0].index, b[1].index) for b in topology.bonds]
        if not bonds:
            raise ValueError("topology has no bonds: load it from a PDB with CONECT records or standard residues")
        return cls.from_bonds(topology.n_atoms, bonds, center)


# ----------------------------------------------------------------------------------------------- the flow


class InternalCoordinates(Flow):
    """Internal -> Cartesian map of a molecule given its :class:`ZMatrix` (see the module docstring).

    ``dim`` is the internal dimension ``3 n - 6``; ``cartesian_dim = 3 n``.  Forward: ``(batch, 3n-6) ->
    (batch, 3n)`` with log volume factor; inverse: ``(batch, 3n) -> (batch, 3n-6)``.  ``domains`` gives each
    internal coordinate's domain (bonds real, angles the interval ``[0, π]``, torsions the circle).
    """

    def __init__(self, zmatrix: ZMatrix):
        super().__init__()
        self.zmatrix = zmatrix
        n = zmatrix.n_atoms
        self.n_atoms, self.dim, self.cartesian_dim = n, 3 * n - 6, 3 * n
        rows = torch.tensor(zmatrix.rows, dtype=torch.long).reshape(-1, 4)
        self.register_buffer("rows", rows)
        self.register_buffer("root", torch.tensor(zmatrix.root, dtype=torch.long))
        self.level_rows = [torch.tensor(lv, dtype=torch.long) for lv in zmatrix.levels]
        self.bond_indices = torch.arange(0, n - 1)
        self.angle_indices = torch.arange(n - 1, 2 * n - 3)
        self.torsion_indices = torch.arange(2 * n - 3, 3 * n - 6)

    @property
    def output_dim(self) -> int:
        return self.cartesian_dim

    @property
    def domains(self) -> list[Domain]:
        n = self.n_atoms
        return [Domain.real()] * (n - 1) + [Domain.interval(0.0, math.pi)] * (n - 2) + [Domain.circle()] * (n - 3)

    def split(self, ic: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(bonds, angles, torsions)`` views of an internal-coordinate batch."""
        n = self.n_atoms
        return ic[:, : n - 1], ic[:, n - 1 : 2 * n - 3], ic[:, 2 * n - 3 :]

    def _log_volume(self, bonds: Tensor, angles: Tensor) -> Tensor:
        # log(b1^2) + log(b2^2 sin a2) + sum_rows log(b^2 sin a): the root terms share the row formula
        return 2 * torch.log(bonds).sum(-1) + torch.log(torch.sin(angles)).sum(-1)

    def forward(self, ic: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_batch(ic, self.dim, "internal coordinates")
        bonds, angles, torsions = self.split(ic)
        batch, n = ic.shape[0], self.n_atoms
        x = ic.new_zeros(batch, n, 3)
        r0, r1, r2 = self.zmatrix.root
        b1, b2, a2 = bonds[:, 0], bonds[:, 1], angles[:, 0]
        x[:, r1, 0] = b1
        x[:, r2, 0] = b1 - b2 * torch.cos(a2)
        x[:, r2, 1] = b2 * torch.sin(a2)
        rb, ra, rt = bonds[:, 2:], angles[:, 1:], torsions
        for level in self.level_rows:
            level = level.to(ic.device)
            i, j, k, l = self.rows[level].unbind(-1)
            x = x.index_copy(1, i, place_atom(x[:, j], x[:, k], x[:, l], rb[:, level], ra[:, level], rt[:, level]))
        return x.reshape(batch, 3 * n), self._log_volume(bonds, angles)

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_batch(x, self.cartesian_dim, "cartesian coordinates")
        pos = x.reshape(x.shape[0], self.n_atoms, 3)
        r0, r1, r2 = self.zmatrix.root
        i, j, k, l = self.rows.unbind(-1)
        xi, xj, xk, xl = pos[:, i], pos[:, j], pos[:, k], pos[:, l]
        bonds = torch.cat([bond_length(pos[:, [r1, r2]], pos[:, [r0, r1]]), bond_length(xi, xj)], dim=-1)
        angles = torch.cat([bond_angle(pos[:, r2], pos[:, r1], pos[:, r0])[:, None], bond_angle(xi, xj, xk)], -1)
        torsions = dihedral(xi, xj, xk, xl)
        ic = torch.cat([bonds, angles, torsions], dim=-1)
        return ic, -self._log_volume(bonds, angles)

    @classmethod
    def from_mdtraj(cls, topology, center: int | None = None) -> InternalCoordinates:
        """Build from an ``mdtraj.Topology`` (bond graph -> Z-matrix)."""
        return cls(ZMatrix.from_mdtraj(topology, center))

    def atom_order(self) -> Sequence[int]:
        """Atoms in placement order (roots first)."""
        return list(self.zmatrix.root) + [r[0] for r in self.zmatrix.rows]
