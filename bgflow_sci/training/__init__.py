"""Losses and the one Trainer that drives every model of the package."""

from .batches import BatchSource, as_batch_source
from .fab import FlowAnnealedBootstrap
from .flow_matching import FlowMatching, ot_pairing
from .losses import ForceMatching, FreeEnergyPerturbation, MaximumLikelihood, ReverseKL, linlog_cut
from .mdmm import EqualityConstraint, InequalityConstraint, MDMMConstraint
from .mmd import MMDLoss, MultiScaleRBF, mmd2, mmd_noise_floor
from .recipes import ml_then_kl
from .trainer import Trainer, read_metrics, seed_everything

__all__ = [
    "BatchSource",
    "EqualityConstraint",
    "FlowAnnealedBootstrap",
    "FlowMatching",
    "ForceMatching",
    "FreeEnergyPerturbation",
    "InequalityConstraint",
    "MDMMConstraint",
    "MMDLoss",
    "MaximumLikelihood",
    "MultiScaleRBF",
    "ReverseKL",
    "Trainer",
    "as_batch_source",
    "linlog_cut",
    "ml_then_kl",
    "mmd2",
    "mmd_noise_floor",
    "ot_pairing",
    "read_metrics",
    "seed_everything",
]
