"""The state of a batch of Markov chains: positions with a cache of what the kernel's target costs to evaluate."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
from torch import Tensor


def _select(mask: Tensor, new: Tensor | None, old: Tensor | None) -> Tensor | None:
    if new is None or old is None:
        return new
    return torch.where(mask.view(-1, *([1] * (new.dim() - 1))), new, old)


@dataclass
class ChainState:
    """``n`` chains, one per row: positions ``x`` ``(n, dim)`` and their cached target quantities.

    ``energy`` ``(n,)`` is the reduced energy (kT) of the kernel's target at ``x``, ``force`` ``(n, dim)`` its
    ``-du/dx`` (``None`` for kernels that never need it), ``v`` ``(n, dim)`` velocities of kinetic kernels, ``aux``
    row-wise extras a potential keeps so that it can be re-evaluated after a change of its parameters without new
    energy calls (component energies, unscaled energies), and ``log_q`` ``(n,)`` the log density of a flow proposal
    at ``x`` (flow kernels; ``None`` when unknown, e.g. after a local move, and then recomputed).
    """

    x: Tensor
    energy: Tensor
    force: Tensor | None = None
    v: Tensor | None = None
    aux: tuple[Tensor, ...] = field(default_factory=tuple)
    log_q: Tensor | None = None

    @property
    def n(self) -> int:
        return self.x.shape[0]

    def valid(self) -> Tensor:
        """Rows ``(n,)`` with a finite energy and finite positions (and velocities)."""
        ok = torch.isfinite(self.energy) & torch.isfinite(self.x).all(-1)
        if self.v is not None:
            ok = ok & torch.isfinite(self.v).all(-1)
        return ok

    def where(self, mask: Tensor, other: ChainState) -> ChainState:
        """Row-wise ``other`` where ``mask`` is true, ``self`` elsewhere."""
        return ChainState(
            x=_select(mask, other.x, self.x),
            energy=_select(mask, other.energy, self.energy),
            force=_select(mask, other.force, self.force),
            v=_select(mask, other.v, self.v),
            aux=tuple(_select(mask, a, b) for a, b in zip(other.aux, self.aux)),
            log_q=None if self.log_q is None else _select(mask, other.log_q, self.log_q),
        )

    def index(self, idx: Tensor) -> ChainState:
        """The rows ``idx`` (a permutation or selection, long ``(m,)``)."""
        return ChainState(
            x=self.x[idx],
            energy=self.energy[idx],
            force=None if self.force is None else self.force[idx],
            v=None if self.v is None else self.v[idx],
            aux=tuple(a[idx] for a in self.aux),
            log_q=None if self.log_q is None else self.log_q[idx],
        )

    def state_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_state_dict(cls, d: dict) -> ChainState:
        return cls(**{k: (tuple(v) if k == "aux" else v) for k, v in d.items()})
