"""ESS, normalised weights, log-mean-exp and input validation."""

from __future__ import annotations

import math

import pytest
import torch

from bgflow_sci.reweighting import ess, log_mean_exp, normalized_weights


def test_ess_equal_weights_is_one(device, dtype):
    lw = torch.full((1000,), -3.7, device=device, dtype=dtype)
    assert ess(lw) == pytest.approx(1.0, abs=1e-6)


def test_ess_single_nonzero_weight(device, dtype):
    lw = torch.full((250,), -math.inf, device=device, dtype=dtype)
    lw[17] = 4.0
    assert ess(lw) == pytest.approx(1 / 250, rel=1e-6)


def test_ess_matches_kish_and_shift_invariance(device, dtype):
    lw = torch.randn(500, dtype=torch.float64) * 2
    w = lw.exp()
    kish = float(w.sum() ** 2 / (w.numel() * (w**2).sum()))
    assert ess(lw.to(device, dtype)) == pytest.approx(kish, rel=1e-5)
    assert ess((lw + 800.0).to(device, dtype)) == pytest.approx(kish, rel=1e-5)
    assert ess((lw - 800.0).to(device, dtype)) == pytest.approx(kish, rel=1e-5)


def test_ess_edge_cases(device, dtype):
    assert math.isnan(ess(torch.empty(0, device=device, dtype=dtype)))
    assert ess(torch.full((4,), -math.inf, device=device, dtype=dtype)) == 0.0


@pytest.mark.parametrize("bad, word", [(math.nan, "2 NaN"), (math.inf, "+inf")])
def test_invalid_log_weights_raise(device, dtype, bad, word):
    lw = torch.zeros(10, device=device, dtype=dtype)
    lw[3] = bad
    lw[5] = bad
    with pytest.raises(ValueError, match=word.replace("+", r"\+")):
        ess(lw)
    with pytest.raises(ValueError):
        normalized_weights(lw)


def test_wrong_shape_raises(device, dtype):
    with pytest.raises(ValueError, match=r"\(batch,\)"):
        ess(torch.zeros(3, 2, device=device, dtype=dtype))


def test_normalized_weights(device, dtype):
    lw = (torch.randn(300, dtype=torch.float64) * 3 + 500).to(device, dtype)
    lw[0] = -math.inf
    w = normalized_weights(lw)
    assert w.dtype == dtype and w.device.type == device.type and w.shape == (300,)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-6)
    assert float(w[0]) == 0.0
    ref = torch.softmax(lw.double().cpu(), 0)
    torch.testing.assert_close(w.double().cpu(), ref, atol=1e-6, rtol=1e-5)
    assert normalized_weights(torch.empty(0, device=device, dtype=dtype)).shape == (0,)
    with pytest.raises(ValueError, match="all 3"):
        normalized_weights(torch.full((3,), -math.inf, device=device, dtype=dtype))


def test_log_mean_exp(device, dtype):
    x = torch.randn(4, 7, device=device, dtype=dtype) * 10
    expected = torch.log(torch.exp(x.double()).mean(-1)).to(dtype)
    torch.testing.assert_close(log_mean_exp(x), expected, atol=1e-5, rtol=1e-5)
    big = torch.full((5,), 1000.0, device=device, dtype=dtype)
    assert float(log_mean_exp(big)) == pytest.approx(1000.0, abs=1e-3)
    assert math.isnan(float(log_mean_exp(torch.empty(0, device=device, dtype=dtype))))
