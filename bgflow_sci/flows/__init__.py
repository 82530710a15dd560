"""Bijections in the Boltzmann-generator direction (latent -> sample).  See :class:`Flow`."""

from .actnorm import ActNorm
from .base import Flow, Inverse, Sequential
from .coupling import AffineCoupling, half_mask
from .nets import MLP
from .permutation import Permutation, Swap
from .realnvp import real_nvp

__all__ = [
    "ActNorm",
    "AffineCoupling",
    "Flow",
    "Inverse",
    "MLP",
    "Permutation",
    "Sequential",
    "Swap",
    "half_mask",
    "real_nvp",
]
