"""Multistate Bennett acceptance ratio (MBAR; Shirts & Chodera, J. Chem. Phys. 129, 124105, 2008).

``N = Σ_k N_k`` samples pooled from ``K`` states with reduced energies ``u_k(x)`` (kT). The dimensionless free
energies ``f_k = -log Z_k`` solve the self-consistent equations

    f_k = -log Σ_n exp(-u_k(x_n)) / Σ_l N_l exp(f_l - u_l(x_n)),

equivalently the minimum of the convex function ``Σ_n log Σ_l N_l exp(f_l - u_l(x_n)) - Σ_k N_k f_k``
(Zhu & Hummer; used here with L-BFGS and a few self-consistent polishing sweeps). Any other state ``u`` is then
reached by the log importance weights ``log w_n = -u(x_n) - log Σ_l N_l exp(f_l - u_l(x_n))``, which the rest of
:mod:`bgflow_sci.reweighting` consumes (free-energy differences, profiles, histograms). Umbrella sampling is the
special case ``u_k = u_0 + b_k``: pass only the biases ``b_k`` and ``u = 0`` to reweight to the unbiased state.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor


def _check(u_kn: Tensor, n_k: Tensor, counts: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    u_kn = torch.as_tensor(u_kn, dtype=torch.float64)
    n_k = torch.as_tensor(n_k, dtype=torch.float64, device=u_kn.device)
    if u_kn.ndim != 2 or n_k.ndim != 1 or n_k.shape[0] != u_kn.shape[0]:
        raise ValueError(f"u_kn must be (K, N) and n_k (K,), got {tuple(u_kn.shape)} and {tuple(n_k.shape)}")
    if counts is None:
        counts = torch.ones(u_kn.shape[1], dtype=torch.float64, device=u_kn.device)
    else:
        counts = torch.as_tensor(counts, dtype=torch.float64, device=u_kn.device)
        if counts.shape != (u_kn.shape[1],) or (counts < 0).any():
            raise ValueError(f"counts must be (N,) = ({u_kn.shape[1]},) non-negative, got {tuple(counts.shape)}")
    if abs(float(n_k.sum() - counts.sum())) > 1e-6 * max(1.0, float(n_k.sum())):
        raise ValueError(f"n_k sums to {float(n_k.sum()):g} but u_kn holds {float(counts.sum()):g} samples")
    if torch.isnan(u_kn).any():
        raise ValueError("u_kn holds NaN reduced energies")
    return u_kn, n_k, counts


def _log_denominator(u_kn: Tensor, log_n_k: Tensor, f_k: Tensor) -> Tensor:
    return torch.logsumexp(log_n_k[:, None] + f_k[:, None] - u_kn, dim=0)


def mbar_free_energies(
    u_kn: Tensor,
    n_k: Tensor,
    initial: Tensor | None = None,
    tol: float = 1e-10,
    max_iter: int = 10_000,
    counts: Tensor | None = None,
) -> Tensor:
    """Dimensionless free energies ``f_k = -log Z_k`` (``f_0 = 0``) of ``K`` states, shape ``(K,)``, float64.

    Args:
        u_kn: ``(K, N)`` reduced energy (kT) of every pooled sample ``n`` in every state ``k``.
        n_k: ``(K,)`` number of samples drawn from each state (the samples of state ``k`` may sit anywhere in N).
        initial: starting guess for ``f`` (a previous solution speeds up bootstrap replicas).
        tol: convergence on ``max |Δf|`` of a self-consistent sweep.
        counts: ``(N,)`` multiplicity of each column (default 1): columns may stand for bins of a collective
            variable on which alone the ``u_k`` differ (umbrella biases), which turns MBAR into WHAM.
    """
    u_kn, n_k, counts = _check(u_kn, n_k, counts)
    sampled = n_k > 0
    log_n_k = torch.log(n_k)
    u_min = u_kn.min(dim=0, keepdim=True).values.clamp(min=-1e300)  # shift per sample: the f's are unaffected
    n_total = float(n_k.sum())
    shifted = u_kn[sampled] - u_min  # (K_sampled, N), fixed during the optimisation

    def objective(f_np: np.ndarray) -> tuple[float, np.ndarray]:
        f = torch.zeros(len(n_k), dtype=torch.float64, device=u_kn.device)
        f[sampled] = torch.as_tensor(f_np, device=u_kn.device)
        log_d = _log_denominator(shifted, log_n_k[sampled], f[sampled])
        value = ((counts * log_d).sum() - (n_k[sampled] * f[sampled]).sum()) / n_total  # per sample: O(1)
        grad = (counts * torch.exp(log_n_k[sampled, None] + f[sampled, None] - shifted - log_d)).sum(1)
        return float(value), ((grad - n_k[sampled]) / n_total).cpu().numpy()

    f0 = torch.zeros(len(n_k), dtype=torch.float64) if initial is None else torch.as_tensor(initial).double().cpu()
    options = {"maxiter": max_iter, "ftol": 1e-15, "gtol": 1e-12}
    res = minimize(objective, f0[sampled.cpu()].numpy(), jac=True, method="L-BFGS-B", options=options)
    f = torch.zeros(len(n_k), dtype=torch.float64, device=u_kn.device)
    f[sampled] = torch.as_tensor(res.x, device=u_kn.device)
    for _ in range(100):  # a few self-consistent sweeps polish the optimum (and give f of unsampled states)
        log_d = _log_denominator(u_kn[sampled], log_n_k[sampled], f[sampled])
        new = -torch.logsumexp(torch.log(counts) - u_kn - log_d, dim=1)
        new = new - new[0]
        delta = (new - f).abs().max()
        f = new
        if delta < tol:
            break
    return f


def mbar_log_weights(
    u_kn: Tensor, n_k: Tensor, f_k: Tensor, u_n: Tensor | None = None, counts: Tensor | None = None
) -> Tensor:
    """Log importance weights ``(N,)`` of the pooled samples for a target state ``u_n`` (default ``u = 0``).

    For binned columns (``counts``) these are the weights of one sample of each bin: add ``log(counts)`` for the
    bin totals. Feed them to :func:`~bgflow_sci.reweighting.free_energy_difference` or ``free_energy_profile``.
    """
    u_kn, n_k, _ = _check(u_kn, n_k, counts)
    f_k = torch.as_tensor(f_k, dtype=torch.float64, device=u_kn.device)
    log_w = -_log_denominator(u_kn, torch.log(n_k), f_k)
    if u_n is not None:
        log_w = log_w - torch.as_tensor(u_n, dtype=torch.float64, device=u_kn.device)
    return log_w
