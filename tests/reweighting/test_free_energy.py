"""Free-energy differences and profiles against exact Gaussian results."""

from __future__ import annotations

import math

import pytest
import torch

from bgflow_sci.reweighting import Profile, free_energy_difference, free_energy_profile


def phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_delta_f_unweighted_mixture(device, dtype):
    """Exact samples of 0.3 N(-2, 0.5^2) + 0.7 N(1.5, 0.7^2); A = {x < 0}, B = {x > 0}."""
    n, gen = 20000, torch.Generator().manual_seed(10)
    comp = torch.rand(n, generator=gen, dtype=torch.float64) < 0.3
    eps = torch.randn(n, generator=gen, dtype=torch.float64)
    x = torch.where(comp, -2 + 0.5 * eps, 1.5 + 0.7 * eps).to(device, dtype)
    p_a = 0.3 * phi(2 / 0.5) + 0.7 * phi(-1.5 / 0.7)
    exact = -math.log(1 - p_a) + math.log(p_a)
    est = free_energy_difference(None, x < 0, x > 0, generator=torch.Generator().manual_seed(11))
    assert abs(est.value - exact) < 3 * est.error
    # the bootstrap error agrees with the delta-method error of a binomial log-odds (this also bounds it: measured
    # 0.0144 against 0.0153)
    assert est.error == pytest.approx(1 / math.sqrt(n * p_a * (1 - p_a)), rel=0.25)
    same = free_energy_difference(torch.zeros(n, device=device, dtype=dtype), x < 0, x > 0)
    assert same.value == pytest.approx(est.value, abs=1e-9)


def test_delta_f_reweighted_gaussian(device, dtype):
    """Samples from N(0.5, 1.5^2) reweighted to N(-0.5, 1): ΔF between x < 0 and x > 0."""
    n, gen = 20000, torch.Generator().manual_seed(12)
    x = (0.5 + 1.5 * torch.randn(n, generator=gen, dtype=torch.float64)).to(device, dtype)
    log_q = -((x - 0.5) ** 2) / (2 * 1.5**2)
    log_w = -((x + 0.5) ** 2) / 2 - log_q + 123.0
    p_a = phi(0.5)
    exact = -math.log(1 - p_a) + math.log(p_a)
    est = free_energy_difference(log_w, x < 0, x > 0, generator=torch.Generator().manual_seed(13))
    assert 0 < est.error < 0.05  # measured 0.0159 (|value - exact| = 0.0003)
    assert abs(est.value - exact) < 3 * est.error


def test_delta_f_empty_region_and_validation(device, dtype):
    x = torch.randn(100, device=device, dtype=dtype)
    with pytest.warns(RuntimeWarning, match="region"):
        est = free_energy_difference(None, x < 0, x > 100)
    assert est.value == math.inf and math.isnan(est.error)
    lw = torch.zeros(100, device=device, dtype=dtype)
    lw[x < 0] = -math.inf
    with pytest.warns(RuntimeWarning, match="A"):
        est = free_energy_difference(lw, x < 0, x > 0)
    assert est.value == -math.inf and math.isnan(est.error)
    empty = torch.empty(0, dtype=torch.bool, device=device)
    assert all(math.isnan(v) for v in free_energy_difference(None, empty, empty))
    with pytest.raises(TypeError, match="boolean"):
        free_energy_difference(None, (x < 0).float(), x > 0)
    with pytest.raises(ValueError, match="shape"):
        free_energy_difference(lw[:50], x < 0, x > 0)


def exact_gaussian_profile(edges: torch.Tensor) -> torch.Tensor:
    """-log of the N(0, 1) density averaged over each bin."""
    e = edges.double().cpu().tolist()
    return torch.tensor([-math.log((phi(b) - phi(a)) / (b - a)) for a, b in zip(e[:-1], e[1:])], dtype=torch.float64)


def check_profile(prof: Profile, central: float) -> None:
    exact = exact_gaussian_profile(prof.edges)
    f, err = prof.free_energy.double().cpu(), prof.error.double().cpu()
    mask = prof.centers.double().cpu().abs() < central
    assert bool(torch.isfinite(err[mask]).all()) and bool((err[mask] > 0).all())
    diff = (f - exact)[mask]
    w = 1 / err[mask] ** 2
    z = (diff - (w * diff).sum() / w.sum()) / err[mask]
    assert float(z.abs().max()) < 4.0
    assert 0.2 < float((z**2).mean()) < 3.0


def test_profile_unweighted_gaussian(device, dtype):
    x = torch.randn(20000, generator=torch.Generator().manual_seed(20), dtype=torch.float64).to(device, dtype)
    edges = torch.sinh(torch.linspace(-1.8, 1.8, 31, dtype=torch.float64)).to(device, dtype)  # unequal widths
    prof = free_energy_profile(x, bins=edges, generator=torch.Generator().manual_seed(21))
    assert prof.free_energy.dtype == dtype and prof.free_energy.device.type == device.type
    assert prof.edges.shape == (31,) and prof.centers.shape == (30,)
    reference = int(torch.argmin(prof.free_energy))
    # aligned replicates: the reference bin keeps its own error, ≈ 1 / sqrt(count) for unweighted samples
    expected = 1 / math.sqrt(int(prof.counts[reference]))
    assert float(prof.error[reference]) == pytest.approx(expected, rel=0.3)
    populated = torch.isfinite(prof.free_energy)
    assert float(prof.free_energy[populated].min()) == 0.0
    assert int(prof.counts.sum()) == int(((x >= edges[0]) & (x <= edges[-1])).sum())
    torch.testing.assert_close(prof.ess, prof.counts.to(dtype), atol=1e-3, rtol=1e-4)
    check_profile(prof, central=2.0)


def test_profile_reweighted_gaussian(device, dtype):
    """Proposal N(0, 1.5^2) reweighted to N(0, 1)."""
    x = (1.5 * torch.randn(20000, generator=torch.Generator().manual_seed(22), dtype=torch.float64)).to(device, dtype)
    log_w = -(x**2) / 2 + x**2 / (2 * 1.5**2)
    prof = free_energy_profile(x, log_w, bins=30, range=(-3.0, 3.0), generator=torch.Generator().manual_seed(23))
    assert bool((prof.ess <= prof.counts.to(dtype) + 1e-3).all())
    check_profile(prof, central=2.0)


def test_profile_empty_bins_and_input(device, dtype):
    x = torch.tensor([0.1, 0.2, 0.3, 2.5], device=device, dtype=dtype)
    prof = free_energy_profile(x, bins=torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0], device=device, dtype=dtype))
    assert prof.free_energy[0] == 0 and torch.isinf(prof.free_energy[1]) and torch.isinf(prof.free_energy[3])
    assert prof.free_energy[2] == pytest.approx(math.log(3), abs=1e-6)
    assert torch.isnan(prof.error[1]) and torch.isnan(prof.error[3])
    assert prof.counts.tolist() == [3, 0, 1, 0]
    empty = free_energy_profile(torch.empty(0, device=device, dtype=dtype), bins=10)
    assert empty.edges[0] == 0 and empty.edges[-1] == 1
    assert bool(torch.isinf(empty.free_energy).all()) and bool(torch.isnan(empty.error).all())
    assert int(empty.counts.sum()) == 0


def test_profile_default_range_ignores_zero_weight_samples(device, dtype):
    x = torch.tensor([0.0, 1.0, 2.0, 50.0], device=device, dtype=dtype)
    lw = torch.tensor([0.0, 0.0, 0.0, -math.inf], device=device, dtype=dtype)
    prof = free_energy_profile(x, lw, bins=4)
    assert float(prof.edges[0]) == 0.0 and float(prof.edges[-1]) == 2.0


def test_profile_difference_against_a_direct_computation():
    from bgflow_sci.reweighting import profile_difference

    ref = torch.tensor([0.0, 1.0, 2.0, 7.0, math.inf], dtype=torch.float64)
    same = profile_difference(ref + 3.2, ref)
    assert same.rms == pytest.approx(0.0, abs=1e-12) and same.max_abs == pytest.approx(0.0, abs=1e-12)
    assert same.bins == 3  # the 7 kT bin is above below_kt, the empty one is left out
    d = torch.tensor([0.3, -0.2, 0.5, 100.0, 0.0], dtype=torch.float64)
    got = profile_difference(ref + 1.0 + d, ref, below_kt=5.0)
    p = torch.exp(-ref[:3]) / torch.exp(-ref[:3]).sum()
    shifted = d[:3] - (p * d[:3]).sum()
    assert got.rms == pytest.approx(float(torch.sqrt((p * shifted**2).sum())), rel=1e-12)
    assert got.max_abs == pytest.approx(float(shifted.abs().max()), rel=1e-12)
    widths = torch.tensor([0.0, 1.0, 3.0, 4.0, 5.0, 6.0])  # unequal bins weight p_k by their width
    wide = profile_difference(ref + d, ref, edges=widths)
    pw = torch.exp(-ref[:3]) * torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
    pw = pw / pw.sum()
    sw = d[:3] - (pw * d[:3]).sum()
    assert wide.rms == pytest.approx(float(torch.sqrt((pw * sw**2).sum())), rel=1e-12)
    assert math.isnan(profile_difference(torch.full((3,), math.inf), torch.zeros(3)).rms)
    with pytest.raises(ValueError, match="same bins"):
        profile_difference(torch.zeros(3), torch.zeros(4))


def test_profile_block_bootstrap_for_correlated_frames():
    """Frames repeated 16 times in a row (a strongly correlated chain): the value equals the plain estimate, the
    iid bootstrap underestimates the error by ~4x, the block bootstrap (blocks of 16) recovers the error of the
    distinct frames."""
    g = torch.Generator().manual_seed(5)
    distinct = torch.randn(2000, generator=g, dtype=torch.float64)
    frames = distinct.repeat_interleave(16)
    chains = torch.arange(2).repeat_interleave(16000)
    edges = torch.linspace(-2.0, 2.0, 9, dtype=torch.float64)
    honest = free_energy_profile(distinct, bins=edges, n_bootstrap=400, generator=torch.Generator().manual_seed(1))
    iid = free_energy_profile(frames, bins=edges, n_bootstrap=400, generator=torch.Generator().manual_seed(2))
    block = free_energy_profile(
        frames,
        bins=edges,
        n_bootstrap=400,
        generator=torch.Generator().manual_seed(3),
        chain_ids=chains,
        block_length=16,
    )
    torch.testing.assert_close(block.free_energy, honest.free_energy)
    ratio_iid = (iid.error / honest.error).median()
    ratio_block = (block.error / honest.error).median()
    assert 0.15 < ratio_iid < 0.4 and 0.75 < ratio_block < 1.3, (float(ratio_iid), float(ratio_block))
    with pytest.raises(ValueError, match="block_length"):
        free_energy_profile(frames, chain_ids=chains)
