"""Block bootstrap: block layout, reproducibility, and the error of the mean of AR(1) chains against the exact value."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch
from scipy.signal import lfilter

from bgflow_sci.reweighting import block_bootstrap, block_bootstrap_sums, bootstrap, bootstrap_std, contiguous_blocks


def ar1_chains(n_chains: int, m: int, rho: float, seed: int) -> np.ndarray:
    """``x_t = ρ x_{t-1} + ε_t``, ``ε ~ N(0, 1)``, each chain started from the stationary ``N(0, 1 / (1 - ρ²))``."""
    rng = np.random.default_rng(seed)
    eps = rng.standard_normal((n_chains, m))
    eps[:, 0] /= math.sqrt(1 - rho**2)
    return lfilter([1.0], [1.0, -rho], eps, axis=1)


def exact_se_of_mean(n_chains: int, m: int, rho: float) -> float:
    """Standard deviation of the mean of ``n_chains`` independent stationary AR(1) chains of length ``m``."""
    k = np.arange(1, m)
    var_chain = (1 / (1 - rho**2)) / m * (1 + 2 * ((1 - k / m) * rho**k).sum())
    return math.sqrt(var_chain / n_chains)


def test_contiguous_blocks_layout():
    chain = torch.tensor([1, 0, 1, 0, 1, 0, 1, 0, 0, 1, 1])  # interleaved chains, samples in time order per chain
    blocks = contiguous_blocks(chain, 2)
    # chain 0: samples 1, 3, 5, 7, 8 -> blocks (1, 3), (5, 7), 8 dropped; chain 1: 0, 2, 4, 6, 9, 10 -> three blocks
    assert blocks.tolist() == [[1, 3], [5, 7], [0, 2], [4, 6], [9, 10]]
    assert contiguous_blocks(np.array([0, 0, 0]), 5).shape == (0, 5)
    with pytest.raises(ValueError, match="block_length"):
        contiguous_blocks(chain, 0)
    with pytest.raises(ValueError, match="chain_ids"):
        contiguous_blocks(chain[None], 2)


def test_block_length_one_is_the_plain_bootstrap():
    x = torch.randn(300, dtype=torch.float64)
    reps = block_bootstrap(lambda i: x[i].mean(1), torch.zeros(300), 1, 50, torch.Generator().manual_seed(3))
    ref = bootstrap(lambda i: x[i].mean(1), 300, 50, torch.Generator().manual_seed(3))
    assert torch.equal(reps, ref)


def test_same_generator_same_replicates_and_chunking_is_invisible(monkeypatch):
    x = torch.randn(1000, dtype=torch.float64)
    chain = torch.arange(1000) // 250
    calls = []

    def mean(i: torch.Tensor) -> torch.Tensor:
        calls.append(i.shape)
        return x[i].mean(1)

    def run(generator, **kw):
        return block_bootstrap(mean, chain, 10, 40, generator, **kw)

    for kw in ({}, {"within_chains": True}):
        a = run(torch.Generator().manual_seed(1), **kw)
        assert torch.equal(a, run(torch.Generator().manual_seed(1), **kw))
        assert not torch.equal(a, run(torch.Generator().manual_seed(2), **kw))
        np_a = run(np.random.default_rng(1), **kw)
        assert torch.equal(np_a, run(np.random.default_rng(1), **kw)) and np_a.shape == (40,)
        calls.clear()
        monkeypatch.setattr(
            importlib.import_module("bgflow_sci.reweighting.bootstrap"), "_MAX_ELEMENTS", 3000
        )  # 3 replicates per piece
        assert torch.equal(run(torch.Generator().manual_seed(1), **kw), a)
        assert max(s[0] for s in calls) == 3 and sum(s[0] for s in calls) == 40 and {s[1] for s in calls} == {1000}
        monkeypatch.undo()
    assert block_bootstrap(mean, chain, 10, 0).shape == (0,)


def test_within_chains_keeps_each_chain_and_its_size():
    chain = torch.repeat_interleave(torch.arange(3), torch.tensor([40, 60, 25]))  # 25: two blocks, 5 dropped
    seen = []

    def record(i: torch.Tensor) -> torch.Tensor:
        seen.append(i)
        return i.float().mean(1)

    block_bootstrap(record, chain, 10, 30, torch.Generator().manual_seed(0), within_chains=True)
    idx = torch.cat(seen)
    assert idx.shape == (30, 120)
    assert torch.equal(chain[idx], chain[idx[:1]].expand_as(idx))  # chain by chain: 40, 60, 20 samples
    assert (chain[idx[0]].bincount() == torch.tensor([40, 60, 20])).all()
    assert (idx < 120).all()  # the incomplete block of chain 2 (samples 120-124) never drawn
    # each drawn block is a contiguous run of one chain
    runs = idx.reshape(30, 12, 10)
    assert ((runs[..., 1:] - runs[..., :-1]) == 1).all()


@pytest.mark.parametrize("within_chains", [False, True])
@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_block_sums_are_the_block_bootstrap_of_sums(within_chains, kind):
    """Same blocks, same draws: the per-block fast path equals the sample-level statistic ``values[idx].sum(1)``."""
    chain = torch.repeat_interleave(torch.tensor([2, 0, 1]), torch.tensor([57, 80, 33]))  # ids out of order
    values = torch.randn(len(chain), 3, dtype=torch.float64)

    def gen():
        return torch.Generator().manual_seed(5) if kind == "torch" else np.random.default_rng(5)

    sums = block_bootstrap_sums(values, chain, 8, 60, gen(), within_chains=within_chains)
    ref = block_bootstrap(lambda i: values[i].sum(1), chain, 8, 60, gen(), within_chains=within_chains)
    assert sums.shape == (60, 3)
    torch.testing.assert_close(sums, ref, rtol=1e-12, atol=1e-12)
    counts = block_bootstrap_sums(values[:, 0] > 0, chain, 8, 60, gen(), within_chains=within_chains)
    assert counts.dtype == torch.float64
    assert torch.equal(
        counts,
        block_bootstrap(lambda i: (values[i, 0] > 0).sum(1).double(), chain, 8, 60, gen(), within_chains=within_chains),
    )
    with pytest.raises(ValueError, match="values"):
        block_bootstrap_sums(values[:-1], chain, 8, 60, gen())


def test_ar1_block_error_matches_exact_long_run_error_and_iid_underestimates():
    """Four AR(1) chains (ρ = 0.9, integrated correlation time (1 + ρ)/(1 - ρ) = 19 steps): the block-bootstrap
    error of the mean with blocks of 500 steps is within 20 % of the exact value (its own scatter ≈ 6 %); the iid
    bootstrap and too short blocks underestimate it (iid by ≈ √19)."""
    rho, n_chains, m = 0.9, 4, 25_000
    x = torch.as_tensor(ar1_chains(n_chains, m, rho, seed=11).reshape(-1))
    chain = torch.arange(n_chains).repeat_interleave(m)
    exact = exact_se_of_mean(n_chains, m, rho)
    gen = torch.Generator().manual_seed(0)

    def mean(i: torch.Tensor) -> torch.Tensor:
        return x[i].mean(1)

    block_se = float(bootstrap_std(block_bootstrap(mean, chain, 500, 500, gen)))
    within_se = float(bootstrap_std(block_bootstrap(mean, chain, 500, 500, gen, within_chains=True)))
    short_se = float(bootstrap_std(block_bootstrap(mean, chain, 5, 500, gen)))
    iid_se = float(bootstrap_std(bootstrap(mean, len(x), 500, gen)))
    assert block_se == pytest.approx(exact, rel=0.2)
    assert within_se == pytest.approx(exact, rel=0.2)
    assert iid_se < 0.4 * exact and iid_se == pytest.approx(exact / math.sqrt(19), rel=0.25)
    assert short_se < 0.7 * exact


def test_device(device):
    x = torch.randn(200, dtype=torch.float64, device=device)
    reps = block_bootstrap(lambda i: x[i].mean(1), torch.zeros(200), 20, 10, torch.Generator().manual_seed(0), device)
    assert reps.device.type == device.type and reps.shape == (10,)
    cpu = block_bootstrap(lambda i: x.cpu()[i].mean(1), torch.zeros(200), 20, 10, torch.Generator().manual_seed(0))
    torch.testing.assert_close(reps.cpu(), cpu)
