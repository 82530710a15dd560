"""Reweighted histograms against numpy and bootstrap errors against binomial errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bgflow_sci.reweighting import reweighted_histogram


def test_matches_numpy_weighted_density(device, dtype):
    gen = torch.Generator().manual_seed(30)
    x = torch.randn(5000, generator=gen, dtype=torch.float64)
    lw = 0.5 * torch.randn(5000, generator=gen, dtype=torch.float64)
    hist = reweighted_histogram(x.to(device, dtype), lw.to(device, dtype), bins=20)
    ref, ref_edges = np.histogram(x.to(dtype).double().numpy(), bins=20, weights=lw.exp().numpy(), density=True)
    np.testing.assert_allclose(hist.edges.double().cpu().numpy(), ref_edges, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(hist.density.double().cpu().numpy(), ref, rtol=2e-4, atol=1e-6)
    assert hist.density.dtype == dtype and hist.density.device.type == device.type


def test_unweighted_errors_are_binomial(device, dtype):
    n = 20000
    x = torch.rand(n, generator=torch.Generator().manual_seed(31), dtype=torch.float64).to(device, dtype)
    hist = reweighted_histogram(x, None, bins=4, range=(0.0, 2.0), generator=torch.Generator().manual_seed(32))
    # half the bins are empty; the others hold p = 1/2 each, width 0.5 -> density 1 with binomial error
    torch.testing.assert_close(
        hist.density.double().cpu(), torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64), atol=0.05, rtol=0
    )
    expected = math.sqrt(0.25 / n) / 0.5
    err = hist.error.double().cpu()
    assert err[0] == pytest.approx(expected, rel=0.25) and err[1] == pytest.approx(expected, rel=0.25)
    assert float(err[2]) == 0.0


def test_out_of_range_mass_counts_in_normalisation(device, dtype):
    x = torch.tensor([0.5, 1.5, 9.0, 9.5], device=device, dtype=dtype)
    hist = reweighted_histogram(x, None, bins=2, range=(0.0, 2.0), n_bootstrap=0)
    torch.testing.assert_close(hist.density.double().cpu(), torch.tensor([0.25, 0.25], dtype=torch.float64))
    assert bool(torch.isnan(hist.error).all())
