"""MorphingEnsemble: member mean and spread, derived observables, one checkpoint format."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bgflow_sci.hep.ensemble import MorphingEnsemble, load_morphing
from bgflow_sci.hep.morphing import MorphingFlow


def _member(seed: int, derived=("s=a + b * c",)) -> MorphingFlow:
    flow = MorphingFlow(["a", "b"], ["c"], n_layers=2, hidden=(8,), seed=seed, derived=list(derived))
    x = torch.randn(500, 2, dtype=torch.float64)
    flow.fit_preprocessing(x, torch.randn(500, 1, dtype=torch.float64))
    with torch.no_grad():  # move away from the identity so that members differ
        for p in flow.flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return flow


def test_mean_spread_derived_and_round_trip(tmp_path):
    ens = MorphingEnsemble([_member(0), _member(1), _member(2)], holdout={"fraction": 0.2, "seed": 0})
    rng = np.random.default_rng(0)
    x = {"a": rng.normal(size=300), "b": rng.normal(size=300), "c": rng.normal(size=300)}
    mean, spread = ens.morph(x, seed=5)
    members = ens.morph_members(x, seed=5)
    for n in ("a", "b"):
        stack = np.stack([m[n] for m in members])
        np.testing.assert_allclose(mean[n], stack.mean(0))
        np.testing.assert_allclose(spread[n], stack.std(0, ddof=1))
        assert spread[n].min() > 0
    np.testing.assert_allclose(mean["s"], mean["a"] + mean["b"] * x["c"])  # derived of the mean correction
    s_members = np.stack([m["a"] + m["b"] * x["c"] for m in members])
    np.testing.assert_allclose(spread["s"], s_members.std(0, ddof=1))

    path = ens.save(tmp_path / "ens.pt")
    back = load_morphing(path)
    assert isinstance(back, MorphingEnsemble) and len(back) == 3 and back.holdout == {"fraction": 0.2, "seed": 0}
    mean2, spread2 = back.morph(x, seed=5)
    for k in mean:
        np.testing.assert_allclose(mean2[k], mean[k], rtol=1e-12)
        np.testing.assert_allclose(spread2[k], spread[k], rtol=1e-9, atol=1e-15)
    single = _member(3).save(tmp_path / "one.pt")
    assert isinstance(load_morphing(single), MorphingFlow)


def test_members_must_agree():
    with pytest.raises(ValueError, match="at least 2"):
        MorphingEnsemble([_member(0)])
    with pytest.raises(ValueError, match="member 1 .*derived"):
        MorphingEnsemble([_member(0), _member(1, derived=())])
