"""Batched samplers over any :class:`~bgflow_sci.energies.Energy`: chains are the rows of a batch.

Kernels (``MCMCKernel.step(state, generator) -> state``): :class:`RandomWalkMetropolis`, :class:`MALA`, :class:`HMC`
(Metropolis-adjusted, step sizes adapted during warm-up), :class:`OverdampedLangevin`, :class:`UnderdampedLangevin`
(unadjusted), :class:`ParallelTempering` (replica exchange). :class:`Sampler` runs a kernel with thinning, burn-in,
progress bar, diagnostics and bit-for-bit checkpoints; :class:`AnnealedImportanceSampler` estimates ``log Z``.
Flow MCMC: :class:`IndependentMetropolis`, :class:`ISIR` (a flow as proposal), :class:`GlobalLocal` (flow moves
alternating with MALA/HMC) and :class:`LatentEnergy` (NeuTra: any kernel in the flow's latent space).
:class:`FlowEnhancedMD`: OpenMM Langevin segments alternating with flow-proposal Metropolis moves.
The single-step updates are pure functions of :mod:`bgflow_sci.integrators`, shared with the stochastic flow layers;
energies and forces come from :meth:`Energy.energy_and_force <bgflow_sci.energies.Energy.energy_and_force>` (anything
else with an energy is wrapped by :func:`~bgflow_sci.energies.as_energy`), and the annealing path is the
:class:`~bgflow_sci.energies.InterpolatedEnergy` of the stochastic flow layers.
"""

from ..integrators import (
    acceptance_probability,
    baoab_step,
    langevin_log_transition,
    langevin_noise,
    leapfrog,
    metropolis_accept,
    overdamped_langevin_step,
    random_walk_step,
)
from .adaptation import DualAveraging
from .ais import AISResult, AnnealedImportanceSampler, check_betas, default_betas
from .base import MCMCKernel, MetropolisKernel, check_step_size
from .diagnostics import autocorrelation, autocorrelation_ess, integrated_autocorrelation_time
from .enhanced_md import EnhancedMDResult, FlowEnhancedMD, count_transitions, write_trajectory
from .flow_mcmc import ISIR, GlobalLocal, IndependentMetropolis, LatentEnergy, draw_proposals
from .kernels import HMC, MALA, RandomWalkMetropolis
from .langevin import OverdampedLangevin, UnderdampedLangevin
from .potentials import EnergyPotential, InterpolatedPotential, Potential, TemperedPotential, as_potential
from .sampler import Sampler, SamplerRun
from .state import ChainState
from .tempering import ParallelTempering, check_temperatures, geometric_ladder

__all__ = [
    "AISResult",
    "AnnealedImportanceSampler",
    "ChainState",
    "DualAveraging",
    "EnhancedMDResult",
    "EnergyPotential",
    "FlowEnhancedMD",
    "GlobalLocal",
    "HMC",
    "ISIR",
    "IndependentMetropolis",
    "InterpolatedPotential",
    "LatentEnergy",
    "MALA",
    "MCMCKernel",
    "MetropolisKernel",
    "OverdampedLangevin",
    "ParallelTempering",
    "Potential",
    "RandomWalkMetropolis",
    "Sampler",
    "SamplerRun",
    "TemperedPotential",
    "UnderdampedLangevin",
    "acceptance_probability",
    "as_potential",
    "autocorrelation",
    "autocorrelation_ess",
    "baoab_step",
    "check_betas",
    "check_step_size",
    "check_temperatures",
    "count_transitions",
    "default_betas",
    "draw_proposals",
    "geometric_ladder",
    "integrated_autocorrelation_time",
    "langevin_log_transition",
    "langevin_noise",
    "leapfrog",
    "metropolis_accept",
    "overdamped_langevin_step",
    "random_walk_step",
    "write_trajectory",
]
