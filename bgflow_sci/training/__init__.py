"""Losses and the one Trainer that drives every model of the package."""

from .losses import MaximumLikelihood, ReverseKL, linlog_cut
from .trainer import EqualityConstraint, Trainer, read_metrics, seed_everything

__all__ = [
    "EqualityConstraint",
    "MaximumLikelihood",
    "ReverseKL",
    "Trainer",
    "linlog_cut",
    "read_metrics",
    "seed_everything",
]
