"""Backwards-compatible alias: the single-step functions live in :mod:`bgflow_sci.integrators`."""

from ..integrators import (
    StepSize,
    acceptance_probability,
    baoab_step,
    langevin_log_transition,
    langevin_noise,
    leapfrog,
    metropolis_accept,
    overdamped_langevin_step,
    random_walk_step,
)

__all__ = [
    "StepSize",
    "acceptance_probability",
    "baoab_step",
    "langevin_log_transition",
    "langevin_noise",
    "leapfrog",
    "metropolis_accept",
    "overdamped_langevin_step",
    "random_walk_step",
]
