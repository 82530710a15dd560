"""bgflow_sci: Boltzmann generators and scientific sampling in PyTorch."""

from .bg import BoltzmannGenerator

__version__ = "0.1.0"
__all__ = ["BoltzmannGenerator", "__version__"]
