"""Integrated autocorrelation time against the exact AR(1) value."""

from __future__ import annotations

import pytest
import torch

from bgflow_sci.samplers import autocorrelation_ess, integrated_autocorrelation_time


def _ar1(rho: float, n_steps: int, n_chains: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn(n_steps, n_chains, 2, generator=gen, dtype=torch.float64)
    x = torch.empty_like(eps)
    x[0] = eps[0] / (1 - rho**2) ** 0.5  # stationary start
    for t in range(1, n_steps):
        x[t] = rho * x[t - 1] + eps[t]
    return x


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.8, 0.95])
def test_iat_of_ar1(rho, device):
    x = _ar1(rho, 3000, 256, seed=int(rho * 100)).to(device)
    exact = (1 + rho) / (1 - rho)
    tau = integrated_autocorrelation_time(x)
    assert tau.shape == (2,)
    torch.testing.assert_close(tau, torch.full_like(tau, exact), rtol=0.1, atol=0.0)
    per_chain = integrated_autocorrelation_time(x, average_chains=False)
    assert per_chain.shape == (256, 2) and per_chain.device.type == device.type
    assert abs(float(per_chain.median()) / exact - 1) < 0.2
    torch.testing.assert_close(autocorrelation_ess(x), 3000 * 256 / tau)


def test_iat_float32_and_short_chains(device):
    x = _ar1(0.9, 40, 8, seed=1).float().to(device)
    tau = integrated_autocorrelation_time(x)  # too short for the window: a finite lower bound
    assert tau.dtype == torch.float32 and torch.isfinite(tau).all() and (tau < 19).all()
    with pytest.raises(ValueError, match="n_steps, n_chains"):
        integrated_autocorrelation_time(torch.zeros(10, device=device))
