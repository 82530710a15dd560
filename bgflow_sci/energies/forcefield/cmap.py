"""OpenMM's ``CMAPTorsionForce``: bicubic-spline energy maps on pairs of torsions, with analytic gradients.

A map of size ``N`` tabulates ``E(φ_a, ψ_b)`` at ``φ_a = 2π a / N``, ``ψ_b = 2π b / N`` (OpenMM's layout:
``energy[a + N b]``).  As in OpenMM, the derivatives ``∂E/∂φ``, ``∂E/∂ψ`` and ``∂²E/∂φ∂ψ`` at the grid nodes come
from periodic cubic splines through the rows/columns (the cross derivative from a spline of ``∂E/∂ψ`` along
``φ``), and each patch ``[φ_a, φ_{a+1}] × [ψ_b, ψ_{b+1}]`` is the bicubic Hermite interpolant
``E = Σ_{i,j=0..3} c_ij u^i v^j`` with ``u = φ/Δ - a``, ``v = ψ/Δ - b``, ``Δ = 2π/N``.  Angles are the IUPAC
torsions of :class:`~.bonded.PeriodicTorsions`, wrapped to ``[0, 2π)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from .geometry import VectorScatter, cross, dot


def periodic_spline_slopes(y: np.ndarray) -> np.ndarray:
    """First derivatives at the nodes of the periodic cubic spline through ``y`` ``(..., N)`` on ``[0, 2π)``.

    Uniform spacing ``h = 2π/N``; node second derivatives ``M`` solve the cyclic system
    ``M_{k-1} + 4 M_k + M_{k+1} = 6 (y_{k+1} - 2 y_k + y_{k-1}) / h²`` and the slope at node ``k`` is
    ``(y_{k+1} - y_k)/h - h (2 M_k + M_{k+1}) / 6``.
    """
    n = y.shape[-1]
    h = 2 * math.pi / n
    a = 4.0 * np.eye(n) + np.roll(np.eye(n), 1, axis=1) + np.roll(np.eye(n), -1, axis=1)
    yp, ym = np.roll(y, -1, axis=-1), np.roll(y, 1, axis=-1)
    rhs = 6.0 * (yp - 2.0 * y + ym) / h**2
    m = np.linalg.solve(a, rhs.reshape(-1, n).T).T.reshape(y.shape)
    return (yp - y) / h - h * (2.0 * m + np.roll(m, -1, axis=-1)) / 6.0


# Hermite-to-bicubic weights: coefficient k (= 4 i + j of u^i v^j) = Σ_m W[m][k] rhs[m], with rhs the 4 corner values
# (corners (0,0), (1,0), (1,1), (0,1)) of E, Δ ∂E/∂φ, Δ ∂E/∂ψ, Δ² ∂²E/∂φ∂ψ.
def _hermite_weights() -> np.ndarray:
    """The ``(16, 16)`` linear map from corner data to ``c_ij``, derived by solving the Hermite conditions."""
    corners = [(0, 0), (1, 0), (1, 1), (0, 1)]
    rows = []
    for kind in range(4):
        for u, v in corners:
            row = np.zeros(16)
            for i in range(4):
                for j in range(4):
                    pu = u**i if kind in (0, 2) else (i * u ** (i - 1) if i else 0.0)
                    pv = v**j if kind in (0, 1) else (j * v ** (j - 1) if j else 0.0)
                    row[4 * i + j] = pu * pv
            rows.append(row)
    return np.linalg.inv(np.array(rows, dtype=np.float64))  # c = inv(A) rhs


def cmap_coefficients(size: int, energy) -> np.ndarray:
    """Bicubic coefficients ``(N, N, 16)`` indexed ``[a, b, 4 i + j]`` for a map ``energy[a + N b]`` (kJ/mol)."""
    e = np.asarray(energy, dtype=np.float64).reshape(size, size).T  # e[a, b]: a indexes φ, b indexes ψ
    delta = 2 * math.pi / size
    d1 = periodic_spline_slopes(e.T).T  # along φ (axis 0)
    d2 = periodic_spline_slopes(e)  # along ψ (axis 1)
    d12 = periodic_spline_slopes(d2.T).T  # ∂/∂φ of ∂E/∂ψ
    inv = _hermite_weights()
    corner_data = []
    for f, scale in ((e, 1.0), (d1, delta), (d2, delta), (d12, delta * delta)):
        f10 = np.roll(f, -1, axis=0)
        f11 = np.roll(f10, -1, axis=1)
        f01 = np.roll(f, -1, axis=1)
        corner_data += [f * scale, f10 * scale, f11 * scale, f01 * scale]
    rhs = np.stack(corner_data, axis=-1)  # (N, N, 16)
    return rhs @ inv.T


class CMAPTorsions(nn.Module):
    """``E = Σ_t E_{map(t)}(φ_t, ψ_t)`` over torsion pairs ``t`` (atoms ``a1..a4`` for ``φ``, ``b1..b4`` for ``ψ``).

    ``maps`` is a list of ``(size, energy)`` as returned by OpenMM's ``getMapParameters`` (energy in kJ/mol);
    ``torsions`` rows are ``(map, a1, a2, a3, a4, b1, b2, b3, b4)``.  ``forward(pos)`` with ``pos``
    ``(3, n_atoms, batch)`` nm returns the energy ``(batch,)`` kJ/mol and ``dE/dx`` ``(3, n_atoms, batch)``.
    """

    def __init__(self, maps, torsions, n_atoms: int, box: Tensor | None = None):
        super().__init__()
        tables, offsets, sizes = [], [], []
        start = 0
        for size, energy in maps:
            size = int(size)
            if size < 2 or len(energy) != size * size:
                raise ValueError(f"CMAPTorsionForce: map of size {size} has {len(energy)} energies (need size²)")
            tables.append(cmap_coefficients(size, energy).reshape(size * size, 16))  # row a * N + b
            offsets.append(start)
            sizes.append(size)
            start += size * size
        rows = torch.as_tensor(np.asarray(torsions, dtype=np.int64).reshape(-1, 9))
        mp = rows[:, 0]
        self.m = rows.shape[0]
        atoms_a, atoms_b = rows[:, 1:5], rows[:, 5:9]
        i = torch.cat([atoms_a[:, 0], atoms_b[:, 0]])
        j = torch.cat([atoms_a[:, 1], atoms_b[:, 1]])
        k = torch.cat([atoms_a[:, 2], atoms_b[:, 2]])
        l = torch.cat([atoms_a[:, 3], atoms_b[:, 3]])  # noqa: E741
        self.nt = 2 * self.m
        self.vec = VectorScatter(torch.cat([j, k, l]), torch.cat([i, j, k]), n_atoms)
        self.register_buffer("table", torch.as_tensor(np.concatenate(tables)), persistent=False)
        size_t = torch.tensor(sizes, dtype=torch.long)[mp]
        self.register_buffer("size", size_t.reshape(-1, 1), persistent=False)
        self.register_buffer("offset", torch.tensor(offsets, dtype=torch.long)[mp].reshape(-1, 1), persistent=False)
        self.register_buffer("delta", (2 * math.pi / size_t.double()).reshape(-1, 1), persistent=False)
        self.register_buffer("box", box, persistent=False)

    def forward(self, pos: Tensor) -> tuple[Tensor, Tensor]:
        nt = self.nt
        v = self.vec.vectors(pos, self.box)
        b1, b2, b3 = v[:, :nt], v[:, nt : 2 * nt], v[:, 2 * nt :]
        n1, n2 = cross(b1, b2), cross(b2, b3)
        b2n = torch.sqrt(dot(b2, b2))
        angle = torch.atan2(b2n * dot(b1, n2), dot(n1, n2))  # (2m, batch), in (-π, π]
        two_pi = 2 * math.pi
        angle = torch.remainder(angle + two_pi, two_pi)
        delta = self.delta.to(pos.dtype)
        phi, psi = angle[: self.m] / delta, angle[self.m :] / delta
        size = self.size
        s = torch.clamp(torch.floor(phi).long(), min=0).minimum(size - 1)
        t = torch.clamp(torch.floor(psi).long(), min=0).minimum(size - 1)
        u, w = phi - s.to(pos.dtype), psi - t.to(pos.dtype)
        c = self.table.to(pos.dtype)[self.offset + s * size + t]  # (m, batch, 16)
        c = c.reshape(*c.shape[:-1], 4, 4)  # [..., i, j] multiplies u^i w^j
        one = torch.ones_like(u)
        pu = torch.stack([one, u, u * u, u * u * u], dim=-1)
        pw = torch.stack([one, w, w * w, w * w * w], dim=-1)
        dpu = torch.stack([torch.zeros_like(u), one, 2 * u, 3 * u * u], dim=-1)
        dpw = torch.stack([torch.zeros_like(w), one, 2 * w, 3 * w * w], dim=-1)
        cw = (c * pw[..., None, :]).sum(-1)  # (m, batch, 4) over i
        energy = (cw * pu).sum(-1)
        de_dphi = (cw * dpu).sum(-1) / delta
        de_dpsi = ((c * dpw[..., None, :]).sum(-1) * pu).sum(-1) / delta
        de = torch.cat([de_dphi, de_dpsi], dim=0)  # (2m, batch)
        n1sq, n2sq = dot(n1, n1), dot(n2, n2)
        g1 = (de * b2n / n1sq) * n1
        g3 = (de * b2n / n2sq) * n2
        g2 = -(de / (b2n * n1sq) * dot(b1, b2)) * n1 - (de / (b2n * n2sq) * dot(b3, b2)) * n2
        return energy.sum(0), self.vec.transpose(torch.cat([g1, g2, g3], dim=1))
