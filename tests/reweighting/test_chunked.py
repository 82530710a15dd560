"""Weighted sums of chunks: the same point estimates as the in-memory functions, errors independent of chunking."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bgflow_sci import reweighting as rw
from bgflow_sci.reweighting.chunked import chunk_sums, estimates, merge_sums, poisson_multiplicities

EDGES = torch.linspace(-4, 4, 21, dtype=torch.float64)


@pytest.fixture(scope="module")
def sample():
    g = torch.Generator().manual_seed(0)
    x = 1.5 * torch.randn(6000, generator=g, dtype=torch.float64)
    lw = -0.15 * x**2 + 0.2 * torch.randn(6000, generator=g, dtype=torch.float64) + 40.0
    lw[::97] = -math.inf  # invalid samples weigh zero
    return x, lw


def _sums(x, lw, lo, hi, n_bootstrap=100):
    s = slice(lo, hi)
    return chunk_sums(lw[s], lo, observables={"x2": x[s] ** 2}, regions={"ab": (x[s] < 0, x[s] > 0.5)},
                      cvs={"x": x[s]}, edges={"x": EDGES}, n_bootstrap=n_bootstrap)  # fmt: skip


def test_point_estimates_equal_the_in_memory_functions(sample):
    x, lw = sample
    est = estimates(merge_sums(_sums(x, lw, lo, hi) for lo, hi in [(4000, 6000), (0, 1234), (1234, 4000)]))
    assert est["n"] == 6000 and est["invalid"] == int(torch.isinf(lw).sum())
    assert est["ess"] == pytest.approx(rw.ess(lw), rel=1e-12)
    assert est["log_z"].value == pytest.approx(rw.log_z(lw, n_bootstrap=0).value, abs=1e-12)
    w = rw.normalized_weights(lw)
    assert est["averages"]["x2"].value == pytest.approx(float((w * x**2).sum()), rel=1e-12)
    ref = rw.free_energy_difference(lw, x < 0, x > 0.5, n_bootstrap=200, generator=torch.Generator().manual_seed(1))
    assert est["delta_f"]["ab"].value == pytest.approx(ref.value, abs=1e-12)
    assert est["delta_f"]["ab"].error == pytest.approx(ref.error, rel=0.3)  # Poisson vs multinomial bootstrap
    prof = rw.free_energy_profile(x, lw, EDGES, n_bootstrap=200, generator=torch.Generator().manual_seed(1))
    mine = est["profiles"]["x"]["reweighted"]
    ok = torch.isfinite(prof.free_energy)
    assert torch.equal(ok, torch.isfinite(mine.free_energy)) and torch.equal(mine.counts, prof.counts)
    torch.testing.assert_close(mine.free_energy[ok], prof.free_energy[ok], rtol=0, atol=1e-10)
    good = ok & (prof.counts > 100)
    torch.testing.assert_close(mine.error[good], prof.error[good], rtol=0.35, atol=0.0)


def test_errors_do_not_depend_on_the_chunking(sample):
    x, lw = sample
    whole = estimates(_sums(x, lw, 0, 6000))
    parts = estimates(merge_sums(_sums(x, lw, lo, lo + 1000) for lo in range(0, 6000, 1000)))
    for key in ("log_z",):
        assert parts[key].error == pytest.approx(whole[key].error, rel=1e-10)
    assert parts["delta_f"]["ab"].error == pytest.approx(whole["delta_f"]["ab"].error, rel=1e-10)
    assert parts["averages"]["x2"].error == pytest.approx(whole["averages"]["x2"].error, rel=1e-10)
    e1, e2 = whole["profiles"]["x"]["reweighted"].error, parts["profiles"]["x"]["reweighted"].error
    torch.testing.assert_close(e1[torch.isfinite(e1)], e2[torch.isfinite(e1)], rtol=1e-9, atol=1e-12)


def test_poisson_multiplicities_and_bad_input():
    m = poisson_multiplicities(np.arange(20000), 50, seed=3)
    assert (m[:, 0] == 1).all() and m[:, 1:].mean() == pytest.approx(1.0, abs=0.01)
    assert m[:, 1:].var() == pytest.approx(1.0, abs=0.02)
    assert np.array_equal(poisson_multiplicities(np.arange(100, 200), 50, 3), m[100:200])  # keyed by index only
    with pytest.raises(ValueError, match="NaN"):
        chunk_sums(torch.tensor([0.0, math.nan]))
    with pytest.raises(ValueError, match="region 'r' needs two boolean masks"):
        chunk_sums(torch.zeros(3), regions={"r": (np.zeros(3), np.zeros(3))})
    with pytest.raises(ValueError, match="different layouts"):
        chunk_sums(torch.zeros(3), n_bootstrap=2) + chunk_sums(torch.zeros(3), n_bootstrap=3)
    empty = estimates(chunk_sums(torch.full((4,), -math.inf), n_bootstrap=5))
    assert empty["ess"] == 0.0 and empty["log_z"].value == -math.inf


def test_bins_and_regions_far_below_the_largest_weight_keep_their_precision():
    x = torch.linspace(-3.9, 3.9, 4000, dtype=torch.float64)
    lw = -300.0 * x**2  # weights spanning e^-4500: a single shift would underflow every bin but the central ones
    est = estimates(merge_sums([chunk_sums(lw[:1500], 0, regions={"ab": (x[:1500] < -2, x[:1500] > 2)},
                                           cvs={"x": x[:1500]}, edges={"x": EDGES}, n_bootstrap=4),
                                chunk_sums(lw[1500:], 1500, regions={"ab": (x[1500:] < -2, x[1500:] > 2)},
                                           cvs={"x": x[1500:]}, edges={"x": EDGES}, n_bootstrap=4)]))  # fmt: skip
    prof = rw.free_energy_profile(x, lw, EDGES, n_bootstrap=0)
    assert bool(torch.isfinite(prof.free_energy).all())
    torch.testing.assert_close(est["profiles"]["x"]["reweighted"].free_energy, prof.free_energy, rtol=1e-12, atol=1e-9)
    ref = rw.free_energy_difference(lw, x < -2, x > 2, n_bootstrap=0)
    assert est["delta_f"]["ab"].value == pytest.approx(ref.value, abs=1e-9)
