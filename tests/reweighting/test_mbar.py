"""MBAR against exact Gaussian umbrella free energies and against pymbar."""

import math

import numpy as np
import pytest
import torch

from bgflow_sci.reweighting import free_energy_difference, mbar_free_energies, mbar_log_weights


def umbrella_samples(n_per: int, seed: int = 0):
    """u0 = x²/2; biases b_k = κ (x - c_k)²/2; state k is exactly N(κ c_k / (1 + κ), 1 / (1 + κ))."""
    kappa, centers = 4.0, torch.linspace(-3, 3, 13, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    mean, std = kappa * centers / (1 + kappa), (1 + kappa) ** -0.5
    x = (mean[:, None] + std * torch.randn(len(centers), n_per, generator=g, dtype=torch.float64)).reshape(-1)
    u_kn = 0.5 * x**2 + 0.5 * kappa * (x - centers[:, None]) ** 2
    # exact: Z_k = sqrt(2π/(1+κ)) exp(-κ c² / (2 (1 + κ)))
    log_z = 0.5 * math.log(2 * math.pi / (1 + kappa)) - kappa * centers**2 / (2 * (1 + kappa))
    return x, u_kn, torch.full((len(centers),), n_per), -(log_z - log_z[0]), kappa, centers


def test_mbar_free_energies_match_exact_gaussian_umbrellas():
    x, u_kn, n_k, f_exact, _, _ = umbrella_samples(4000)
    f = mbar_free_energies(u_kn, n_k)
    assert f[0] == 0
    torch.testing.assert_close(f, f_exact, atol=0.1, rtol=0)  # statistical error ≈ 0.03 at this size


def test_mbar_unbiased_weights_recover_the_unbiased_distribution():
    x, u_kn, n_k, _, kappa, centers = umbrella_samples(4000, seed=1)
    bias_kn = u_kn - 0.5 * x**2
    log_w = mbar_log_weights(bias_kn, n_k, mbar_free_energies(bias_kn, n_k))
    w = torch.softmax(log_w, 0)
    assert float((w * x).sum()) == pytest.approx(0.0, abs=0.03)
    assert float((w * x**2).sum()) == pytest.approx(1.0, abs=0.04)
    # ΔF(x > 1 vs x < 1) of N(0, 1): -log(P(x>1)/P(x<1))
    p = 0.5 * math.erfc(1 / math.sqrt(2))
    df = free_energy_difference(log_w, x < 1, x > 1)
    assert df.value == pytest.approx(-math.log(p / (1 - p)), abs=0.05)


def test_mbar_matches_pymbar():
    pymbar = pytest.importorskip("pymbar")
    _, u_kn, n_k, _, _, _ = umbrella_samples(500, seed=2)
    f = mbar_free_energies(u_kn, n_k)
    ref = pymbar.MBAR(u_kn.numpy(), n_k.numpy(), verbose=False).compute_free_energy_differences()["Delta_f"][0]
    np.testing.assert_allclose(f.numpy(), ref, atol=1e-6)


def test_mbar_rejects_bad_input():
    with pytest.raises(ValueError, match="n_k sums"):
        mbar_free_energies(torch.zeros(2, 5), torch.tensor([2, 2]))
    with pytest.raises(ValueError, match="NaN"):
        mbar_free_energies(torch.full((2, 4), float("nan")), torch.tensor([2, 2]))


def test_binned_mbar_is_wham_and_agrees_with_unbinned():
    x, u_kn, n_k, f_exact, kappa, centers = umbrella_samples(3000, seed=3)
    f = mbar_free_energies(u_kn, n_k)
    edges = torch.linspace(float(x.min()), float(x.max()) + 1e-9, 4001, dtype=torch.float64)
    mid = 0.5 * (edges[1:] + edges[:-1])
    counts = torch.histc(x, bins=4000, min=float(edges[0]), max=float(edges[-1]))
    u_bin = 0.5 * mid**2 + 0.5 * kappa * (mid - centers[:, None]) ** 2
    f_binned = mbar_free_energies(u_bin, n_k, counts=counts)
    torch.testing.assert_close(f_binned, f, atol=0.02, rtol=0)
    log_w = mbar_log_weights(
        u_bin - 0.5 * mid**2, n_k, mbar_free_energies(u_bin - 0.5 * mid**2, n_k, counts=counts), counts=counts
    )
    p = torch.softmax(log_w + torch.log(counts), 0)
    assert float((p * mid**2).sum()) == pytest.approx(1.0, abs=0.05)
