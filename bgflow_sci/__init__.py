"""bgflow_sci: Boltzmann generators and scientific sampling in PyTorch."""

from ._checks import checks, checks_enabled
from .bg import BoltzmannGenerator, DensityModel

__version__ = "0.1.0"
__all__ = ["BoltzmannGenerator", "DensityModel", "__version__", "checks", "checks_enabled"]
