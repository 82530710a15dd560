"""Bonded terms with analytic gradients: harmonic bonds, harmonic angles, periodic torsions (OpenMM forms).

Each term maps positions ``(3, n_atoms, batch)`` (nm) to its energy ``(batch,)`` in kJ/mol and the gradient
``dE/dx`` ``(3, n_atoms, batch)`` in one pass.  Terms work on displacement vectors gathered once
(:class:`~.geometry.VectorScatter`) and return the gradient through its transpose.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .geometry import VectorScatter, cross, dot


def _col(values, dtype=torch.float64) -> Tensor:
    return torch.as_tensor(values, dtype=dtype).reshape(-1, 1)


def _atoms(*columns) -> Tensor:
    """``(m, len(columns))`` atom indices of the interactions (read by the native kernels, ``forcefield.native``)."""
    return torch.stack([torch.as_tensor(c, dtype=torch.long).reshape(-1) for c in columns], dim=1)


class HarmonicBonds(nn.Module):
    """``E = Σ_b ½ k_b (r_b - r0_b)²`` over bonds ``(i, j)``; ``k`` in kJ/mol/nm², ``r0`` in nm."""

    def __init__(self, i, j, r0, k, n_atoms: int, box: Tensor | None = None):
        super().__init__()
        self.vec = VectorScatter(i, j, n_atoms)
        self.register_buffer("atoms", _atoms(i, j), persistent=False)
        self.register_buffer("r0", _col(r0), persistent=False)
        self.register_buffer("k", _col(k), persistent=False)
        self.register_buffer("box", box, persistent=False)

    def forward(self, pos: Tensor) -> tuple[Tensor, Tensor]:
        v = self.vec.vectors(pos, self.box)
        r = torch.sqrt(dot(v, v))
        k, r0 = self.k.to(pos.dtype), self.r0.to(pos.dtype)
        dr = r - r0
        energy = 0.5 * (k * dr * dr).sum(0)
        return energy, self.vec.transpose((k * dr / r) * v)


class HarmonicAngles(nn.Module):
    """``E = Σ ½ k (θ - θ0)²`` over angles ``(i, j, k)`` with vertex ``j``; ``θ = atan2(|a × b|, a · b)``."""

    def __init__(self, i, j, k, theta0, force_k, n_atoms: int, box: Tensor | None = None):
        super().__init__()
        i, j, k = (torch.as_tensor(t, dtype=torch.long) for t in (i, j, k))
        self.m = i.numel()
        self.vec = VectorScatter(torch.cat([i, k]), torch.cat([j, j]), n_atoms)
        self.register_buffer("atoms", _atoms(i, j, k), persistent=False)
        self.register_buffer("theta0", _col(theta0), persistent=False)
        self.register_buffer("k", _col(force_k), persistent=False)
        self.register_buffer("box", box, persistent=False)

    def forward(self, pos: Tensor) -> tuple[Tensor, Tensor]:
        v = self.vec.vectors(pos, self.box)
        a, b = v[:, : self.m], v[:, self.m :]
        c = dot(a, b)
        p = cross(a, b)
        pn = torch.sqrt(dot(p, p))
        theta = torch.atan2(pn, c)
        k, theta0 = self.k.to(pos.dtype), self.theta0.to(pos.dtype)
        dtheta = theta - theta0
        energy = 0.5 * (k * dtheta * dtheta).sum(0)
        # dθ/da = (c a / |a|² - b) / |a × b|, dθ/db = (c b / |b|² - a) / |a × b|
        s = k * dtheta / pn
        ga = s * (c / dot(a, a) * a - b)
        gb = s * (c / dot(b, b) * b - a)
        return energy, self.vec.transpose(torch.cat([ga, gb], dim=1))


class PeriodicTorsions(nn.Module):
    """``E = Σ k (1 + cos(n φ - φ0))`` over torsions ``(i, j, k, l)``; ``φ`` in the IUPAC convention.

    ``φ = atan2(|b2| b1 · (b2 × b3), (b1 × b2) · (b2 × b3))`` with ``b1 = x_j - x_i``, ``b2 = x_k - x_j``,
    ``b3 = x_l - x_k``; the gradient follows Blondel & Karplus, J. Comput. Chem. 17, 1132 (1996).
    """

    def __init__(self, i, j, k, l, periodicity, phase, force_k, n_atoms: int, box: Tensor | None = None):  # noqa: E741
        super().__init__()
        i, j, k, l = (torch.as_tensor(t, dtype=torch.long) for t in (i, j, k, l))  # noqa: E741
        self.m = i.numel()
        self.vec = VectorScatter(torch.cat([j, k, l]), torch.cat([i, j, k]), n_atoms)
        self.register_buffer("atoms", _atoms(i, j, k, l), persistent=False)
        self.register_buffer("n", _col(periodicity), persistent=False)
        self.register_buffer("phase", _col(phase), persistent=False)
        self.register_buffer("k", _col(force_k), persistent=False)
        self.register_buffer("box", box, persistent=False)

    def forward(self, pos: Tensor) -> tuple[Tensor, Tensor]:
        m = self.m
        v = self.vec.vectors(pos, self.box)
        b1, b2, b3 = v[:, :m], v[:, m : 2 * m], v[:, 2 * m :]
        n1, n2 = cross(b1, b2), cross(b2, b3)
        b2sq = dot(b2, b2)
        b2n = torch.sqrt(b2sq)
        phi = torch.atan2(b2n * dot(b1, n2), dot(n1, n2))
        k, n, phase = self.k.to(pos.dtype), self.n.to(pos.dtype), self.phase.to(pos.dtype)
        arg = n * phi - phase
        energy = (k * (1.0 + torch.cos(arg))).sum(0)
        de_dphi = -k * n * torch.sin(arg)
        n1sq, n2sq = dot(n1, n1), dot(n2, n2)
        g1 = (de_dphi * b2n / n1sq) * n1  # dφ/db1 = |b2| n1 / |n1|²
        g3 = (de_dphi * b2n / n2sq) * n2  # dφ/db3 = |b2| n2 / |n2|²
        g2 = -(de_dphi / (b2n * n1sq) * dot(b1, b2)) * n1 - (de_dphi / (b2n * n2sq) * dot(b3, b2)) * n2
        return energy, self.vec.transpose(torch.cat([g1, g2, g3], dim=1))
