"""A batched PyTorch force field compiled from an OpenMM ``System`` (bonded, nonbonded, OBC2 implicit solvent)."""

from .model import TorchForceField
from .openmm_import import SUPPORTED_FORCES

__all__ = ["TorchForceField", "SUPPORTED_FORCES"]
