"""Reweighting: pure functions of log importance weights ``log w = -u(x) - log q(x)`` (up to a constant).

Kish ESS, normalised weights, ``log Z`` with bootstrap errors (over samples, or over blocks of correlated chains),
free-energy differences between regions, reweighted histograms and free-energy profiles along a collective variable;
MBAR (pymbar) for samples pooled from several (e.g. umbrella-biased) states, and BAR from weights in both directions.
Inputs are ``(batch,)`` tensors on any device and in any float dtype; computations run in float64. ``-inf`` log
weights are zero weights; NaN log weights raise ``ValueError``. An empty batch gives ``nan`` scalars and empty (or
all-empty-bin) results, never an exception.
"""

from .bootstrap import Estimate, block_bootstrap, block_bootstrap_sums, bootstrap, bootstrap_std, contiguous_blocks
from .estimates import importance_sampling_summary, log_z
from .free_energy import Profile, ProfileDifference, free_energy_difference, free_energy_profile, profile_difference
from .histogram import Histogram, reweighted_histogram
from .mbar import MBARResult, bar_free_energy, mbar_free_energies, mbar_log_weights
from .weights import ess, ess_tensor, log_mean_exp, normalized_weights

__all__ = [
    "Estimate",
    "Histogram",
    "MBARResult",
    "Profile",
    "ProfileDifference",
    "bar_free_energy",
    "block_bootstrap",
    "block_bootstrap_sums",
    "bootstrap",
    "bootstrap_std",
    "contiguous_blocks",
    "ess",
    "ess_tensor",
    "free_energy_difference",
    "free_energy_profile",
    "importance_sampling_summary",
    "log_mean_exp",
    "log_z",
    "mbar_free_energies",
    "mbar_log_weights",
    "normalized_weights",
    "profile_difference",
    "reweighted_histogram",
]
