"""bgflow_sci: Boltzmann generators and scientific sampling in PyTorch."""

from .bg import BoltzmannGenerator, DensityModel

__version__ = "0.1.0"
__all__ = ["BoltzmannGenerator", "DensityModel", "__version__"]
