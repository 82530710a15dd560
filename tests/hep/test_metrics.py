"""Metrics: Wasserstein vs scipy / sorted samples, weighted correlations, AUC (pairwise reference, MLP), compare."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from bgflow_sci.hep.metrics import (
    classifier_auc,
    compare,
    correlation_difference,
    format_table,
    mmd_test,
    wasserstein_1d,
    weighted_auc,
    weighted_correlation,
)


def test_wasserstein_against_scipy_and_sorting():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(400, 3)), rng.normal(0.5, 2.0, size=(400, 3))
    w = wasserstein_1d(x, y)
    for j in range(3):
        assert w[j] == pytest.approx(np.mean(np.abs(np.sort(x[:, j]) - np.sort(y[:, j]))), rel=1e-12)
    wx, wy = rng.uniform(0, 2, 400), rng.uniform(0, 2, 400)
    got = wasserstein_1d(x, y, wx, wy)
    assert got[1] == pytest.approx(wasserstein_distance(x[:, 1], y[:, 1], wx, wy))
    assert wasserstein_1d(x[:, 0], x[:, 0] + 0.3)[0] == pytest.approx(0.3)
    wneg = wx.copy()
    wneg[0] = -1.0
    with pytest.warns(UserWarning, match="negative weights set to 0"):
        wasserstein_1d(x, y, wneg)
    with pytest.raises(ValueError, match="mismatched variables"):
        wasserstein_1d(x, y[:, :2])
    with pytest.raises(ValueError, match="empty"):
        wasserstein_1d(x[:0], y)


def test_weighted_correlation():
    rng = np.random.default_rng(1)
    x = rng.multivariate_normal([0, 0, 0], [[1, 0.6, -0.3], [0.6, 1, 0], [-0.3, 0, 1]], 500)
    np.testing.assert_allclose(weighted_correlation(x), np.corrcoef(x.T), atol=1e-12)
    counts = rng.integers(1, 4, 500)
    np.testing.assert_allclose(weighted_correlation(x, counts), np.corrcoef(np.repeat(x, counts, 0).T), atol=1e-12)
    d = correlation_difference(x, x * [1, -1, 1])
    assert d == pytest.approx(np.linalg.norm(np.corrcoef(x.T) - np.corrcoef((x * [1, -1, 1]).T)))


def test_weighted_auc_against_pairs():
    rng = np.random.default_rng(2)
    s = np.round(rng.normal(size=80), 1)  # ties
    y = rng.random(80) < 0.4
    w = rng.uniform(0.1, 2, 80)
    num = den = 0.0
    for i in np.flatnonzero(y):
        for j in np.flatnonzero(~y):
            num += w[i] * w[j] * ((s[i] > s[j]) + 0.5 * (s[i] == s[j]))
            den += w[i] * w[j]
    assert weighted_auc(s, y, w) == pytest.approx(num / den)
    assert weighted_auc(np.arange(10), np.arange(10) >= 5) == 1.0


def test_classifier_auc_identical_and_shifted():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(1500, 3)), rng.normal(size=(1500, 3))
    opts = dict(epochs=5, hidden=(32, 32), seed=0)
    assert abs(classifier_auc(a, b, **opts) - 0.5) < 0.05
    shifted = b + np.array([0.8, 0.0, 0.0])
    assert classifier_auc(a, shifted, **opts) > 0.65  # Bayes-optimal AUC for a 0.8σ shift: Φ(0.8/√2) = 0.714
    # weights: reweighting by the density ratio that undoes a 0.6σ shift (AUC 0.66) brings the AUC back to 0.5
    c = rng.normal(size=(1500, 3)) + np.array([0.6, 0.0, 0.0])
    w = np.exp(-0.6 * c[:, 0])  # N(0.6, 1) · exp(−0.6 x) ∝ N(0, 1)
    assert abs(classifier_auc(a, c, mc_weights=w, **opts) - 0.5) < 0.06
    small = dict(epochs=2, hidden=(8,), seed=1)
    assert classifier_auc(a[:300], c[:300], **small) == classifier_auc(a[:300], c[:300], **small)  # deterministic


def test_compare_and_mmd_test():
    rng = np.random.default_rng(4)
    data = rng.normal(size=(1500, 2))
    good, bad = rng.normal(size=(1500, 2)), rng.normal(0.5, 1.0, size=(1500, 2))
    res = compare(
        data,
        {"good": good, "bad": (bad, np.ones(1500))},
        names=["a", "b"],
        epochs=3,
        max_events=1000,
        mmd_max_events=600,
        n_permutations=50,
    )
    assert res["bad"]["w1"]["a"] > 3 * res["good"]["w1"]["a"]
    assert res["bad"]["auc"] > res["good"]["auc"] and res["bad"]["mmd_p"] < 0.05 < res["good"]["mmd_p"]
    table = format_table(res)
    assert table.count("\n") == 3 and "W1 a" in table and "| bad |" in table
    stat, p = mmd_test(data, bad, n_permutations=50, max_events=500)
    assert stat > 0 and p == pytest.approx(1 / 51)
