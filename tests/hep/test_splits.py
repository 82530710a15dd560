"""Deterministic holdout splits and bootstrap resamples (:mod:`bgflow_sci.hep.splits`)."""

from __future__ import annotations

import numpy as np
import pytest

from bgflow_sci.hep.splits import bootstrap_indices, entry_uniform, holdout_mask


def test_holdout_mask_is_per_entry_deterministic_and_chunkable():
    full = holdout_mask(0, 100_000, 0.3, seed=7)
    assert abs(full.mean() - 0.3) < 0.005  # 3.5 sigma of a binomial at n = 1e5
    chunks = np.concatenate([holdout_mask(s, min(s + 12_345, 100_000), 0.3, 7) for s in range(0, 100_000, 12_345)])
    np.testing.assert_array_equal(chunks, full)  # a partition computes its own part of the same split
    assert np.array_equal(holdout_mask(0, 100_000, 0.3, 7), full)
    assert not np.array_equal(holdout_mask(0, 100_000, 0.3, 8), full)  # the seed matters
    larger = holdout_mask(0, 100_000, 0.5, 7)
    assert np.all(larger[full])  # nested in the fraction
    with pytest.raises(ValueError, match="fraction"):
        holdout_mask(0, 10, 1.0, 0)


def test_entry_uniform_is_uniform_and_uncorrelated():
    u = entry_uniform(np.arange(200_000), seed=3)
    assert u.min() >= 0 and u.max() < 1
    counts = np.histogram(u, bins=20, range=(0, 1))[0]
    expected = len(u) / 20
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 45  # 19 dof: p ~ 1e-3
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.01  # neighbouring entries independent


def test_bootstrap_indices():
    idx = bootstrap_indices(1000, seed=1)
    assert idx.shape == (1000,) and idx.min() >= 0 and idx.max() < 1000
    assert np.all(np.diff(idx) >= 0) and 550 < len(np.unique(idx)) < 720  # ~ 1 - 1/e = 63 % distinct
    np.testing.assert_array_equal(idx, bootstrap_indices(1000, seed=1))
