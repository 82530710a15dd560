"""Multistate Bennett acceptance ratio (MBAR; Shirts & Chodera, J. Chem. Phys. 129, 124105, 2008) through pymbar 4.

``N = Σ_k N_k`` samples pooled from ``K`` states with reduced energies ``u_k(x)`` (kT). The dimensionless free
energies ``f_k = -log Z_k`` (reported as ``f_k - f_0``) solve the self-consistent equations

    f_k = -log Σ_n exp(-u_k(x_n)) / Σ_l N_l exp(f_l - u_l(x_n)),

which :class:`pymbar.MBAR` solves (its default protocol: a root finder, then adaptive Newton / self-consistent
steps to a relative tolerance of 1e-12) together with the asymptotic standard errors of ``f_k - f_j`` (Section III
of the paper). Any other state ``u`` is then reached by the log importance weights

    log w_n = -u(x_n) - log Σ_l N_l exp(f_l - u_l(x_n)),

which the rest of :mod:`bgflow_sci.reweighting` consumes (free-energy differences, profiles, histograms).
Umbrella sampling is the special case ``u_k = u_0 + b_k``: pass only the biases ``b_k`` and ``u = 0`` to reweight to
the unbiased state. The asymptotic errors assume uncorrelated samples; for time series use a block bootstrap
(:func:`~bgflow_sci.reweighting.block_bootstrap`, re-solving per replicate with ``initial`` and
``compute_uncertainty=False``).

pymbar works in numpy float64 on the CPU: inputs (tensors or arrays) are copied there and the results come back as
float64 tensors on the device of ``u_kn``. pymbar is imported on first use.
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from .bootstrap import Estimate
from .weights import as_log_weights


class MBARResult(NamedTuple):
    """Free energies of the ``K`` states from MBAR, all in kT and float64.

    ``free_energy``: ``(K,)`` ``f_k - f_0``. ``error``: ``(K,)`` asymptotic standard error of ``f_k - f_0`` (0 for
    ``k = 0``). ``difference_error``: ``(K, K)``, entry ``[i, j]`` the standard error of ``f_j - f_i``. Errors are
    ``nan`` when not computed.
    """

    free_energy: Tensor
    error: Tensor
    difference_error: Tensor


def _pymbar():
    """``import pymbar`` with its import-time log warnings (no JAX; a note on timeseries) silenced."""
    logger = logging.getLogger("pymbar")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        import pymbar
    finally:
        logger.setLevel(level)
    return pymbar


class _NoFallbackNotes(logging.Filter):
    """Drops pymbar's note that one solver of its protocol failed and the next is tried (the last one's verdict,
    "No solution found to within tolerance", still comes through)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to reach a solution to within tolerance with")


def _check(u_kn: Tensor | np.ndarray, n_k: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    u_kn = torch.as_tensor(u_kn, dtype=torch.float64)
    n_k = torch.as_tensor(n_k, device=u_kn.device)
    if u_kn.ndim != 2 or n_k.ndim != 1 or n_k.shape[0] != u_kn.shape[0]:
        raise ValueError(f"u_kn must be (K, N) and n_k (K,), got {tuple(u_kn.shape)} and {tuple(n_k.shape)}")
    if n_k.is_floating_point():
        if not torch.equal(n_k, n_k.round()):
            raise ValueError(f"n_k must hold whole sample counts, got {n_k.tolist()}")
        n_k = n_k.long()
    if (n_k < 0).any():
        raise ValueError(f"n_k must be non-negative, got {n_k.tolist()}")
    if int(n_k.sum()) != u_kn.shape[1]:
        raise ValueError(f"n_k sums to {int(n_k.sum())} but u_kn holds {u_kn.shape[1]} samples")
    if torch.isnan(u_kn).any():
        raise ValueError("u_kn holds NaN reduced energies")
    return u_kn, n_k


def mbar_free_energies(
    u_kn: Tensor | np.ndarray,
    n_k: Tensor | np.ndarray,
    initial: Tensor | np.ndarray | None = None,
    compute_uncertainty: bool = True,
) -> MBARResult:
    """Dimensionless free energies ``f_k - f_0`` of ``K`` states and their asymptotic errors (:class:`MBARResult`).

    Args:
        u_kn: ``(K, N)`` reduced energy (kT) of every pooled sample ``n`` in every state ``k`` (``+inf`` where a
            state excludes a sample).
        n_k: ``(K,)`` number of samples drawn from each state (the samples of state ``k`` may sit anywhere in N;
            zero for states that are only evaluated, whose ``f_k`` MBAR then predicts).
        initial: starting guess for ``f`` (a previous solution speeds up bootstrap replicates).
        compute_uncertainty: the asymptotic covariance (an SVD of the ``(N, K)`` weight matrix); without it the
            errors are ``nan``.

    Raises ``ValueError`` for shapes that do not fit, NaN energies, or ``n_k`` not summing to ``N``.
    """
    u_kn, n_k = _check(u_kn, n_k)
    pymbar = _pymbar()
    k = u_kn.shape[0]
    init = None if initial is None else torch.as_tensor(initial, dtype=torch.float64).cpu().numpy()
    rng_state = np.random.get_state()  # pymbar 4.0 reseeds numpy's global generator when rseed is None
    solver_log, quiet = logging.getLogger("pymbar.mbar_solvers"), _NoFallbackNotes()
    solver_log.addFilter(quiet)
    try:
        mbar = pymbar.MBAR(u_kn.cpu().numpy(), n_k.cpu().numpy(), initial_f_k=init, verbose=False)
        result = mbar.compute_free_energy_differences(compute_uncertainty=compute_uncertainty)
    finally:
        solver_log.removeFilter(quiet)
        np.random.set_state(rng_state)
    delta_f = torch.as_tensor(np.asarray(result["Delta_f"]), dtype=torch.float64, device=u_kn.device)
    if compute_uncertainty:
        d_delta = torch.as_tensor(np.asarray(result["dDelta_f"]), dtype=torch.float64, device=u_kn.device)
    else:
        d_delta = torch.full((k, k), math.nan, dtype=torch.float64, device=u_kn.device)
    return MBARResult(delta_f[0].clone(), d_delta[0].clone(), d_delta)


def mbar_log_weights(
    u_kn: Tensor | np.ndarray,
    n_k: Tensor | np.ndarray,
    f_k: Tensor | np.ndarray,
    u_n: Tensor | np.ndarray | None = None,
) -> Tensor:
    """Log importance weights ``(N,)`` of the pooled samples for a target state ``u_n`` (default ``u = 0``), float64.

    ``log w_n = -u_n - log Σ_l N_l exp(f_l - u_l(x_n))`` with ``f_k`` from :func:`mbar_free_energies` (its
    ``free_energy``); unnormalised (``logsumexp(log w) = -f`` of the target relative to state 0). Feed them to
    :func:`~bgflow_sci.reweighting.free_energy_difference` or ``free_energy_profile``.
    """
    u_kn, n_k = _check(u_kn, n_k)
    f_k = torch.as_tensor(f_k, dtype=torch.float64, device=u_kn.device)
    if f_k.shape != (u_kn.shape[0],):
        raise ValueError(f"f_k must be ({u_kn.shape[0]},), got {tuple(f_k.shape)}")
    log_n = torch.log(n_k.double())  # -inf for unsampled states: they drop out of the mixture
    log_w = -torch.logsumexp(log_n[:, None] + f_k[:, None] - u_kn, dim=0)
    if u_n is not None:
        log_w = log_w - torch.as_tensor(u_n, dtype=torch.float64, device=u_kn.device)
    return log_w


def bar_free_energy(log_w_forward: Tensor, log_w_reverse: Tensor) -> Estimate:
    """Bennett's acceptance ratio for ``f_B - f_A`` (kT) from importance weights in both directions.

    ``log_w_forward`` ``(n_A,)``: samples of A with ``E_A[w] = Z_B / Z_A`` (e.g. targeted FEP,
    ``u_A(x) + log|det ∂f/∂x| - u_B(f(x))``); ``log_w_reverse`` ``(n_B,)``: samples of B with ``E_B[w] = Z_A /
    Z_B`` (``u_B(y) + log|det ∂f⁻¹/∂y| - u_A(f⁻¹(y))``).  BAR is MBAR over the two states in A's coordinates
    (the reduced energies of a sample may be shifted by a common constant): sample ``i`` of A has ``(0, -log
    w_i)``, sample ``j`` of B ``(-log w_j, 0)``.  It is the minimum-variance estimator from both sets and sits
    between the two one-sided estimates ``-log mean w_forward`` and ``log mean w_reverse``, which undersampled
    tails bias in opposite directions.  Error: the asymptotic one, for uncorrelated samples (block-bootstrap
    correlated chains).  ``-inf`` log weights (e.g. clashes) are allowed; NaN raises ``ValueError``.
    """
    fwd, rev = as_log_weights(log_w_forward, "log_w_forward"), as_log_weights(log_w_reverse, "log_w_reverse")
    if fwd.numel() == 0 or rev.numel() == 0:
        raise ValueError(f"BAR needs samples of both states, got {fwd.numel()} and {rev.numel()}")
    zeros_a, zeros_b = torch.zeros_like(fwd), torch.zeros_like(rev).to(fwd.device)
    u_kn = torch.stack([torch.cat([zeros_a, -rev.to(fwd.device)]), torch.cat([-fwd, zeros_b])])
    # start from the mean of the one-sided estimates (the states' reduced energies may differ by hundreds of kT,
    # where pymbar's default start f = 0 does not converge)
    one_sided = 0.5 * (
        math.log(fwd.numel()) - torch.logsumexp(fwd, 0) + torch.logsumexp(rev, 0) - math.log(rev.numel())
    )
    initial = torch.stack([torch.zeros_like(one_sided), one_sided])
    result = mbar_free_energies(u_kn, torch.tensor([fwd.numel(), rev.numel()]), initial=initial)
    return Estimate(float(result.free_energy[1]), float(result.error[1]))
