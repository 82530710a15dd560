"""MBAR (the pymbar wrapper) against exact harmonic-oscillator and Gaussian-umbrella free energies and against
pymbar called directly; its asymptotic errors against the spread of independent repeats."""

import math

import numpy as np
import pymbar  # the oracle: a core dependency, never skipped
import pytest
import torch

from bgflow_sci.reweighting import MBARResult, free_energy_difference, mbar_free_energies, mbar_log_weights


def oscillators(n_k: list[int], seed: int):
    """3D harmonic oscillators ``u_k(x) = κ_k |x - μ_k|² / 2``: state ``k`` is exactly ``N(μ_k, I / κ_k)`` and
    ``f_k = -log Z_k = -(3/2) log(2π / κ_k)``. Returns ``u_kn (K, N)``, ``n_k``, exact ``f_k - f_0``."""
    kappa = torch.tensor([1.0, 2.0, 4.0, 8.0, 3.0], dtype=torch.float64)
    mu = torch.tensor([0.0, 0.3, 0.6, 0.9, 1.2], dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    x = torch.cat(
        [mu[k] + kappa[k] ** -0.5 * torch.randn(n, 3, generator=g, dtype=torch.float64) for k, n in enumerate(n_k)]
    )
    u_kn = 0.5 * kappa[:, None] * ((x[None] - mu[:, None, None]) ** 2).sum(-1)
    f = -1.5 * torch.log(2 * math.pi / kappa)
    return u_kn, torch.tensor(n_k), f - f[0]


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


def test_wrapper_is_pymbar(device):
    u_kn, n_k, _ = oscillators([300, 200, 250, 150, 100], seed=0)
    result = mbar_free_energies(u_kn.to(device), n_k.to(device))
    assert isinstance(result, MBARResult)
    assert result.free_energy.dtype == torch.float64 and result.free_energy.device.type == device.type
    ref = pymbar.MBAR(u_kn.numpy(), n_k.numpy()).compute_free_energy_differences()
    np.testing.assert_allclose(result.free_energy.cpu().numpy(), ref["Delta_f"][0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(result.error.cpu().numpy(), ref["dDelta_f"][0], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(result.difference_error.cpu().numpy(), ref["dDelta_f"], rtol=1e-8, atol=1e-12)


def test_oscillator_free_energies_exact_and_errors_calibrated():
    """20 independent data sets: every estimate within 4σ of the exact f_k, σ from the asymptotic covariance
    agreeing with the spread of the repeats (a σ off by 50 % fails), and σ shrinking like 1/√N."""
    n_k = [200, 150, 200, 100, 150]
    results = [mbar_free_energies(*oscillators(n_k, seed)[:2]) for seed in range(20)]
    exact = oscillators(n_k, 0)[2]
    f = torch.stack([r.free_energy for r in results])
    sigma = torch.stack([r.error for r in results])
    assert (f[:, 0] == 0).all() and (sigma[:, 0] == 0).all()
    assert torch.isfinite(sigma).all() and (sigma[:, 1:] > 0).all() and (sigma[:, 1:] < 0.3).all()
    z = (f[:, 1:] - exact[1:]) / sigma[:, 1:]
    assert z.abs().max() < 4
    ratio = f[:, 1:].std(0) / sigma[:, 1:].mean(0)  # per state, ~ 1 ± 0.16 (20 repeats)
    assert ((ratio > 0.6) & (ratio < 1.5)).all(), ratio
    big = mbar_free_energies(*oscillators([4 * n for n in n_k], 99)[:2])
    np.testing.assert_allclose((sigma[:, 1:].mean(0) / big.error[1:]).numpy(), 2.0, rtol=0.15)
    # the (K, K) errors of the differences are symmetric, zero on the diagonal, and row 0 is `error`
    d = results[0].difference_error
    torch.testing.assert_close(d, d.T)
    assert (d.diagonal() == 0).all() and torch.equal(d[0], results[0].error)


def test_unsampled_state_is_predicted():
    """A state with ``n_k = 0`` (the oscillator with κ = 3 at μ = 1.2, inside the others)."""
    u_kn, n_k, exact = oscillators([400, 400, 400, 400, 0], seed=5)
    result = mbar_free_energies(u_kn, n_k)
    assert abs(float(result.free_energy[4] - exact[4])) < 4 * float(result.error[4])
    assert 0 < float(result.error[4]) < 1.0


def test_without_uncertainty_and_initial_guess():
    u_kn, n_k, _ = oscillators([200, 150, 200, 100, 150], seed=3)
    full = mbar_free_energies(u_kn, n_k)
    quick = mbar_free_energies(u_kn, n_k, initial=full.free_energy + 0.1, compute_uncertainty=False)
    torch.testing.assert_close(quick.free_energy, full.free_energy, atol=1e-8, rtol=0)
    assert torch.isnan(quick.error).all() and torch.isnan(quick.difference_error).all()


def test_numpy_global_random_state_is_left_alone():
    u_kn, n_k, _ = oscillators([50, 50, 50, 50, 50], seed=4)
    np.random.seed(123)
    expected = np.random.random(3)
    np.random.seed(123)
    mbar_free_energies(u_kn.numpy(), n_k.numpy())  # numpy input works too
    np.testing.assert_array_equal(np.random.random(3), expected)


def test_mbar_free_energies_match_exact_gaussian_umbrellas():
    x, u_kn, n_k, f_exact, _, _ = umbrella_samples(4000)
    result = mbar_free_energies(u_kn, n_k)
    assert result.free_energy[0] == 0
    torch.testing.assert_close(result.free_energy, f_exact, atol=0.1, rtol=0)  # statistical error ≈ 0.03-0.05
    assert ((result.free_energy - f_exact).abs()[1:] < 4 * result.error[1:]).all()


def test_log_weights_reweight_to_any_state():
    """``logsumexp`` of the log weights for target ``u_j`` is ``-f_j``; the unbiased weights recover N(0, 1)."""
    x, u_kn, n_k, _, kappa, centers = umbrella_samples(4000, seed=1)
    f = mbar_free_energies(u_kn, n_k, compute_uncertainty=False).free_energy
    for j in (0, 5, 12):
        log_z_j = float(torch.logsumexp(mbar_log_weights(u_kn, n_k, f, u_n=u_kn[j]), 0))
        assert log_z_j == pytest.approx(-float(f[j]), abs=1e-8)
    bias_kn = u_kn - 0.5 * x**2
    log_w = mbar_log_weights(bias_kn, n_k, mbar_free_energies(bias_kn, n_k).free_energy)
    w = torch.softmax(log_w, 0)
    assert float((w * x).sum()) == pytest.approx(0.0, abs=0.03)
    assert float((w * x**2).sum()) == pytest.approx(1.0, abs=0.04)
    # ΔF(x > 1 vs x < 1) of N(0, 1): -log(P(x>1)/P(x<1))
    p = 0.5 * math.erfc(1 / math.sqrt(2))
    df = free_energy_difference(log_w, x < 1, x > 1)
    assert df.value == pytest.approx(-math.log(p / (1 - p)), abs=0.05)


def test_mbar_rejects_bad_input():
    with pytest.raises(ValueError, match="n_k sums"):
        mbar_free_energies(torch.zeros(2, 5), torch.tensor([2, 2]))
    with pytest.raises(ValueError, match="NaN"):
        mbar_free_energies(torch.full((2, 4), float("nan")), torch.tensor([2, 2]))
    with pytest.raises(ValueError, match=r"\(K, N\)"):
        mbar_free_energies(torch.zeros(4), torch.tensor([2, 2]))
    with pytest.raises(ValueError, match="whole"):
        mbar_free_energies(torch.zeros(2, 4), torch.tensor([1.5, 2.5]))
    with pytest.raises(ValueError, match="f_k"):
        mbar_log_weights(torch.zeros(2, 4), torch.tensor([2, 2]), torch.zeros(3))


def _gaussian_work(n_a: int, n_b: int, shift: float, seed: int):
    """A = N(0, 1), B = N(1, 0.8²), both as ``u = (x - μ)² / 2σ²`` plus ``shift`` on B: exactly ``f_B - f_A =
    -log 0.8 + shift``. Forward and reverse log weights of the identity map."""
    g = torch.Generator().manual_seed(seed)
    xa = torch.randn(n_a, generator=g, dtype=torch.float64)
    xb = 1.0 + 0.8 * torch.randn(n_b, generator=g, dtype=torch.float64)

    def u_a(x):
        return 0.5 * x**2

    def u_b(x):
        return (x - 1.0) ** 2 / (2 * 0.64) + shift

    return u_a(xa) - u_b(xa), u_b(xb) - u_a(xb), -math.log(0.8) + shift


def test_bar_is_pymbar_bar_and_exact():
    from pymbar.other_estimators import bar

    from bgflow_sci.reweighting import bar_free_energy

    fwd, rev, exact = _gaussian_work(3000, 2000, 0.0, seed=0)
    est = bar_free_energy(fwd, rev)
    ref = bar((-fwd).numpy(), (-rev).numpy())
    assert est.value == pytest.approx(float(ref["Delta_f"]), abs=1e-8)
    # the error is MBAR's asymptotic one; pymbar's bar uses Bennett's formula, which differs at O(1/N)
    assert est.error == pytest.approx(float(ref["dDelta_f"]), rel=1e-3)
    assert abs(est.value - exact) < 4 * est.error
    # states hundreds of kT apart (where pymbar's start f = 0 fails): the one-sided start converges
    fwd, rev, exact = _gaussian_work(3000, 2000, -600.0, seed=1)
    est = bar_free_energy(fwd, rev)
    assert abs(est.value - exact) < 4 * est.error
    # BAR beats both one-sided estimates' spread and sits between them
    one_a = math.log(len(fwd)) - float(torch.logsumexp(fwd, 0))
    one_b = float(torch.logsumexp(rev, 0)) - math.log(len(rev))
    assert min(one_a, one_b) - 1e-9 <= est.value <= max(one_a, one_b) + 1e-9


def test_bar_rejects_bad_input():
    from bgflow_sci.reweighting import bar_free_energy

    fwd, rev, _ = _gaussian_work(10, 10, 0.0, seed=0)
    with pytest.raises(ValueError, match="both states"):
        bar_free_energy(fwd, rev[:0])
    with pytest.raises(ValueError, match="log_w_reverse.*NaN"):
        bar_free_energy(fwd, torch.full((3,), math.nan, dtype=torch.float64))
