"""Chain diagnostics: integrated autocorrelation time (batched, FFT, Sokal's window) and ``ESS = n / τ_int``."""

from __future__ import annotations

import torch
from torch import Tensor


def autocorrelation(x: Tensor, average_chains: bool = True) -> Tensor:
    """Normalised autocorrelation ``ρ(t)`` along dim 0 of ``x`` ``(n_steps, n_chains, ...)`` by FFT.

    The autocovariance is computed with zero padding to ``2 n`` (no circular wrap-around) and divided by ``n``. With
    ``average_chains`` the series are centred on the mean over all chains and steps (less bias than per-chain means
    for short chains, and chains stuck in different states show up as long correlation times) and the
    autocovariances are averaged over chains before normalising: shape ``(n_steps, ...)``; otherwise each chain is
    centred on its own mean: shape ``(n_steps, n_chains, ...)``.
    """
    if x.dim() < 2:
        raise ValueError(f"x must have shape (n_steps, n_chains, ...), got {tuple(x.shape)}")
    n = x.shape[0]
    if x.numel() == 0:  # no chains or no steps: undefined
        shape = (n, *x.shape[2:]) if average_chains else x.shape
        return torch.full(shape, torch.nan, dtype=torch.float64, device=x.device)
    mean = x.mean((0, 1), keepdim=True) if average_chains else x.mean(0, keepdim=True)
    y = (x - mean).to(torch.float64)
    f = torch.fft.rfft(y, n=2 * n, dim=0)
    acov = torch.fft.irfft(f * f.conj(), n=2 * n, dim=0)[:n] / n
    if average_chains:
        acov = acov.mean(1)
    return acov / acov[:1]


def integrated_autocorrelation_time(x: Tensor, c: float = 5.0, average_chains: bool = True) -> Tensor:
    """``τ = 1 + 2 Σ_{t=1}^{M} ρ(t)`` with Sokal's automatic window: the smallest ``M`` with ``M ≥ c τ(M)``.

    (Sokal 1997, Monte Carlo methods in statistical mechanics; Goodman & Weare 2010.) ``x``: ``(n_steps, n_chains,
    ...)`` with trailing dims (e.g. coordinates) handled independently; returns ``(...)`` (averaged over chains) or
    ``(n_chains, ...)``. If no window satisfies the criterion (chain too short, ``n ≲ c τ``), the largest lag is used
    and the estimate is a lower bound. Computed in float64; returned in ``x``'s dtype. Constant series give ``nan``.
    """
    rho = autocorrelation(x, average_chains)
    taus = 2.0 * torch.cumsum(rho, dim=0) - 1.0  # taus[M] = 1 + 2 Σ_{t=1}^{M} ρ(t)
    lags = torch.arange(rho.shape[0], device=x.device, dtype=taus.dtype).view(-1, *([1] * (taus.dim() - 1)))
    ok = lags >= c * taus
    has = ok.any(0)
    if taus.numel() == 0:
        return torch.full(taus.shape[1:], torch.nan, dtype=x.dtype, device=x.device)
    window = torch.where(has, ok.to(torch.uint8).argmax(0), torch.full_like(has, rho.shape[0] - 1, dtype=torch.long))
    tau = taus.gather(0, window.unsqueeze(0)).squeeze(0)
    return tau.to(x.dtype)


def autocorrelation_ess(x: Tensor, c: float = 5.0) -> Tensor:
    """Effective sample size of correlated chains, ``ESS = n / τ_int`` with ``n = n_steps · n_chains``, per trailing
    coordinate of ``x`` ``(n_steps, n_chains, ...)``; ``τ_int`` from :func:`integrated_autocorrelation_time`.

    A number of samples, not the Kish fraction of importance weights (:func:`bgflow_sci.reweighting.ess`).
    """
    return x.shape[0] * x.shape[1] / integrated_autocorrelation_time(x, c)
