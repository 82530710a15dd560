"""Geometry helpers shared by the force-field terms: minimum image and gather-based scatter.

Positions inside the force field use a *batch-last* layout ``(3, n_atoms, batch)`` so that every elementwise
operation vectorises over the batch (contiguous innermost axis); the public API converts from and to the flat
``(batch, n_atoms * 3)`` layout.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def minimum_image(d: Tensor, box: Tensor | None) -> Tensor:
    """Minimum-image displacements for a box in OpenMM's reduced (lower-triangular) form.

    ``d`` has the Cartesian component first, ``(3, ...)``; ``box`` is ``(3, 3)`` with the box vectors
    ``a, b, c`` as rows (``a = (a_x, 0, 0)``, ``b = (b_x, b_y, 0)``, ``c = (c_x, c_y, c_z)``), or ``None`` for
    no periodicity.  Like OpenMM, subtracts ``c``, then ``b``, then ``a`` rounded multiples, which is exact for
    interaction ranges up to half the box.
    """
    if box is None:
        return d
    shape = (3,) + (1,) * (d.dim() - 1)
    for k in (2, 1, 0):
        n = torch.round(d[k] / box[k, k])
        d = d - box[k].reshape(shape) * n.unsqueeze(0)
    return d


class VectorScatter(nn.Module):
    """Displacement vectors ``v_m = x[a_m] - x[b_m]`` and the transpose map from ``dE/dv`` to ``dE/dx``.

    Both are products with a dense ``(m, n_atoms)`` incidence matrix ``D`` (``+1`` at ``a_m``, ``-1`` at
    ``b_m``): ``v = D x`` and ``dE/dx = Dᵀ dE/dv``.  Dense matmuls on the batch-last layout beat index gathers
    and scatters for small molecules, run as one GEMM each and keep ``torch.compile`` free of indirect indexing.
    """

    def __init__(self, a: Tensor, b: Tensor, n_atoms: int):
        super().__init__()
        a, b = torch.as_tensor(a, dtype=torch.long), torch.as_tensor(b, dtype=torch.long)
        m = a.numel()
        incidence = torch.zeros(m, n_atoms, dtype=torch.float64)
        rows = torch.arange(m)
        incidence[rows, a] += 1.0
        incidence[rows, b] -= 1.0
        self.register_buffer("incidence", incidence, persistent=False)
        self.register_buffer("incidence_t", incidence.t().contiguous(), persistent=False)

    def vectors(self, pos: Tensor, box: Tensor | None = None) -> Tensor:
        """``(3, m, batch)`` displacement vectors of ``pos`` ``(3, n_atoms, batch)``."""
        return minimum_image(torch.matmul(self.incidence.to(pos.dtype), pos), box)

    def transpose(self, grad_v: Tensor) -> Tensor:
        """``dE/dx`` ``(3, n_atoms, batch)`` from ``dE/dv`` ``(3, m, batch)``."""
        return torch.matmul(self.incidence_t.to(grad_v.dtype), grad_v)


def dot(u: Tensor, v: Tensor) -> Tensor:
    """Scalar product over the leading Cartesian axis."""
    return u[0] * v[0] + u[1] * v[1] + u[2] * v[2]


def cross(u: Tensor, v: Tensor) -> Tensor:
    """Cross product over the leading Cartesian axis."""
    return torch.stack(
        [u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]],
        dim=0,
    )
