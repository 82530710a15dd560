"""MC -> data weights: flow density ratio and classifier against the analytic Gaussian ratio, clipping, ESS, χ².
Runtime ≈ 10 s (1 thread)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm

from bgflow_sci.hep.quantile_flow import ConditionalDensityFlow, FlowQuantileMorpher
from bgflow_sci.hep.reweight import (
    ClassifierReweighter,
    clip_weights,
    density_ratio_log_weights,
    effective_sample_size,
    histogram_chi2,
)

# MC: x | c ~ N(c, 1); data: x | c ~ N(c + 0.5, 0.8²);  c ~ U(-1, 1) in both


def _analytic(x, c):
    return norm.logpdf(x, c + 0.5, 0.8) - norm.logpdf(x, c, 1.0)


@pytest.fixture(scope="module")
def samples():
    rng = np.random.default_rng(0)
    n = 6000
    c_mc, c_d = rng.uniform(-1, 1, (n, 1)), rng.uniform(-1, 1, (n, 1))
    return c_mc + rng.normal(size=(n, 1)), c_mc, c_d + 0.5 + 0.8 * rng.normal(size=(n, 1)), c_d


@pytest.fixture(scope="module")
def grid():
    c = np.repeat(np.linspace(-0.9, 0.9, 5), 9)[:, None]
    return c + np.tile(np.linspace(-1.2, 1.2, 9), 5)[:, None], c


def test_flow_density_ratio_matches_analytic(samples, grid):
    x_mc, c_mc, x_d, c_d = samples
    torch.manual_seed(0)
    fq = FlowQuantileMorpher(["x"], ["c"], transformer="affine", n_layers=1, hidden=(16,))
    fq.fit(x_mc, x_d, c_mc, c_d, steps=500, batch_size=512, lr=1e-2)
    xg, cg = grid
    lw = density_ratio_log_weights(fq.mc, fq.data, xg, cg).numpy()
    np.testing.assert_allclose(lw, _analytic(xg, cg)[:, 0], atol=0.12)
    # weights reweight MC to data: weighted mean and std of x - c
    w = clip_weights(density_ratio_log_weights(fq.mc, fq.data, x_mc, c_mc).exp())
    r = (x_mc - c_mc)[:, 0]
    mean = np.average(r, weights=w)
    assert abs(mean - 0.5) < 0.05 and abs(np.sqrt(np.average((r - mean) ** 2, weights=w)) - 0.8) < 0.05
    # wrong variables and unshared preprocessing are refused
    with pytest.raises(ValueError, match=r"\['x'\]"):
        density_ratio_log_weights(fq.mc, fq.data, {"y": xg[:, 0], "c": cg[:, 0]})
    other = ConditionalDensityFlow(["x"], ["c"], transformer="affine", n_layers=1)
    other.fit_preprocessing(torch.as_tensor(x_d).float(), torch.as_tensor(c_d).float())
    with pytest.raises(ValueError, match="share"):
        density_ratio_log_weights(fq.mc, other, xg, cg)


def test_classifier_weights_match_analytic(samples, grid):
    x_mc, c_mc, x_d, c_d = samples
    torch.manual_seed(0)
    clf = ClassifierReweighter(2, hidden=(32, 32)).fit(
        np.concatenate([x_mc, c_mc], 1), np.concatenate([x_d, c_d], 1), steps=800, batch_size=512
    )
    xg, cg = grid
    lw = clf.log_weights(np.concatenate([xg, cg], 1)).numpy()
    np.testing.assert_allclose(lw, _analytic(xg, cg)[:, 0], atol=0.3)


def test_clip_ess_chi2():
    w = np.array([1.0, 1.0, 2.0, 100.0])
    assert clip_weights(w, max_weight=2.0).tolist() == pytest.approx([2 / 3, 2 / 3, 4 / 3, 4 / 3])
    assert clip_weights(w, normalize=False, max_quantile=1.0).tolist() == w.tolist()
    assert effective_sample_size(np.ones(10)) == pytest.approx(1.0)
    assert effective_sample_size(w) == pytest.approx(w.sum() ** 2 / (4 * (w**2).sum()))
    signed = np.array([1.0, -0.5, 2.0])
    assert effective_sample_size(signed) == pytest.approx(2.5**2 / (3 * 5.25))
    rng = np.random.default_rng(1)
    a, b, c = rng.normal(size=20000), rng.normal(size=20000), rng.normal(0.15, 1.0, size=20000)
    same = histogram_chi2(a, b, bins=30)
    assert same["ndf"] == 29 and 0.4 < same["chi2_ndf"] < 2.0
    assert histogram_chi2(c, b, bins=30)["chi2_ndf"] > 5.0
    # weighting a N(0.15, 1) sample by the exact ratio brings it back into agreement
    wc = np.exp(norm.logpdf(c) - norm.logpdf(c, 0.15, 1.0))
    assert histogram_chi2(c, b, wc, bins=30)["chi2_ndf"] < 2.0
