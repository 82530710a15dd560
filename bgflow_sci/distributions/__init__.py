"""Priors and proposal densities: ``sample``, ``log_prob``, ``sample_with_log_prob``."""

from .base import Distribution
from .joint import Joint
from .mixture import NormalMixture
from .normal import Normal
from .sphere import UniformS3
from .uniform import UniformBox

__all__ = ["Distribution", "Joint", "Normal", "NormalMixture", "UniformBox", "UniformS3"]
