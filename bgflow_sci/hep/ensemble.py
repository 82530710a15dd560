"""An ensemble of morphing flows: the correction as the member mean, its uncertainty as the member spread.

``K`` :class:`~bgflow_sci.hep.morphing.MorphingFlow` members, trained on bootstrap resamples of MC and data with
different seeds (``bgflow-sci morph train --ensemble K``), map the same MC event to ``x'_1 … x'_K``.  The ensemble
writes

    x'      = (1/K) Σ_k x'_k                                   (``<var>_corr``)
    σ(x')   = sqrt( Σ_k (x'_k − x')² / (K − 1) )               (``<var>_corr_unc``)

and, for each derived observable ``F``, ``F(x')`` of the mean-corrected variables (``NAME_corr``, so it equals the
expression of the written ``<var>_corr`` branches) and the member spread of ``F(x'_k)`` (``NAME_corr_unc``).  The
spread covers the statistical uncertainty of the fit (finite MC and data samples, training noise), not a
systematic one of the method; how well it covers the truth is measured by a closure test
(``benchmarks/sim_to_data.py``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import nn

from .morphing import MorphingFlow
from .variable_model import VariableModel

__all__ = ["MorphingEnsemble"]


class MorphingEnsemble(nn.Module):
    """``K >= 2`` morphing flows over the same variables, context and derived observables.

    Args:
        members: :class:`MorphingFlow` objects, or their ``config()`` dicts (as stored in a model file).
        holdout: the training split shared by all members (see :class:`MorphingFlow`).
    """

    def __init__(self, members: Sequence[MorphingFlow | Mapping[str, Any]], holdout: Mapping[str, Any] | None = None):
        super().__init__()
        flows = [m if isinstance(m, MorphingFlow) else MorphingFlow(**m) for m in members]
        if len(flows) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(flows)}")
        first = flows[0]
        for k, m in enumerate(flows[1:], 1):
            same = (m.names, m.context_names, {n: e.text for n, e in m.derived.items()}) == (
                first.names,
                first.context_names,
                {n: e.text for n, e in first.derived.items()},
            )
            if not same:
                raise ValueError(
                    f"ensemble member {k} has variables {m.names} | context {m.context_names} | derived "
                    f"{list(m.derived)}, member 0 has {first.names} | {first.context_names} | {list(first.derived)}"
                )
        self.members = nn.ModuleList(flows)
        self.holdout = dict(holdout) if holdout else first.holdout

    @property
    def names(self) -> list[str]:
        """The corrected variables."""
        return self.members[0].names

    @property
    def context_names(self) -> list[str]:
        """The conditioning variables."""
        return self.members[0].context_names

    @property
    def derived(self) -> dict[str, Any]:
        """The derived observables ``{NAME: Expression}``."""
        return self.members[0].derived

    def __len__(self) -> int:
        return len(self.members)

    def derive(self, values: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Derived observables of physical ``values`` (see :meth:`MorphingFlow.derive`)."""
        return self.members[0].derive(values)

    def config(self) -> dict[str, Any]:
        """Constructor arguments: every member's config and the split."""
        return {"members": [m.config() for m in self.members], "holdout": self.holdout}

    def morph_members(
        self, x: Mapping[str, Any], batch_size: int = 65536, seed: int = 0
    ) -> list[dict[str, np.ndarray]]:
        """Each member's corrected values ``[{name: (n,) float64}] * K`` of a mapping of physical columns ``x``."""
        return [m.morph(x, batch_size=batch_size, seed=seed) for m in self.members]

    def morph(
        self, x: Mapping[str, Any], batch_size: int = 65536, seed: int = 0
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """``(mean, spread)``: the member mean ``{name: (n,)}`` of the corrected variables and their member standard
        deviation (``ddof=1``); derived observables are added to both as described in the module docstring."""
        outs = self.morph_members(x, batch_size=batch_size, seed=seed)
        mean = {n: np.mean([o[n] for o in outs], axis=0) for n in self.names}
        spread = {n: np.std([o[n] for o in outs], axis=0, ddof=1) for n in self.names}
        if self.derived:
            mean.update(self.derive({**x, **mean}))
            per_member = [self.derive({**x, **o}) for o in outs]
            spread.update({k: np.std([d[k] for d in per_member], axis=0, ddof=1) for k in self.derived})
        return mean, spread

    # one checkpoint format: the same "variable_model" kind as MorphingFlow (class name, config, weights)
    save = VariableModel.save
    load = classmethod(VariableModel.load.__func__)


def load_morphing(path: str | os.PathLike, map_location: Any = "cpu") -> MorphingFlow | MorphingEnsemble:
    """A :class:`MorphingFlow` or :class:`MorphingEnsemble` from a model file, whichever it holds (eval mode)."""
    from ..io import CheckpointError, load_checkpoint

    kind = load_checkpoint(path, "variable_model", map_location=map_location).get("class")
    classes = {"MorphingFlow": MorphingFlow, "MorphingEnsemble": MorphingEnsemble}
    if kind not in classes:
        raise CheckpointError(f"{str(path)!r} holds a {kind!r}, not a MorphingFlow or MorphingEnsemble")
    return classes[kind].load(path, map_location=map_location).eval()
