"""Bijections in the Boltzmann-generator direction (latent -> sample).  See :class:`Flow`."""

from .actnorm import ActNorm
from .affine import Affine
from .autoregressive import MADE, MaskedAutoregressive
from .base import Flow, Inverse, Sequential
from .continuous import ContinuousFlow, VectorField
from .coupling import AffineCoupling, Coupling, half_mask
from .elementwise import CircularShift, Elementwise
from .internal import InternalCoordinates, ZMatrix
from .linear import LULinear
from .nets import MLP
from .permutation import Permutation, Swap
from .realnvp import neural_spline_flow, real_nvp
from .rigid import OrientationCoupling, PositionCoupling, RigidBodyGeometry, rigid_body_flow
from .smooth import RootFindingError, SmoothMixture
from .sphere import DoubleMobius, QuaternionRotation, quadratic_features
from .splines import RationalQuadraticSpline, rational_quadratic_spline
from .stochastic import MetropolisMC, OverdampedLangevinBlock, PositionsOnly, UnderdampedLangevinBlock
from .transformers import Domain, Transformer

__all__ = [
    "OrientationCoupling",
    "PositionCoupling",
    "RigidBodyGeometry",
    "rigid_body_flow",
    "ActNorm",
    "Affine",
    "AffineCoupling",
    "CircularShift",
    "Domain",
    "ContinuousFlow",
    "Coupling",
    "DoubleMobius",
    "Elementwise",
    "Flow",
    "Inverse",
    "InternalCoordinates",
    "LULinear",
    "MADE",
    "MaskedAutoregressive",
    "MetropolisMC",
    "MLP",
    "OverdampedLangevinBlock",
    "Permutation",
    "PositionsOnly",
    "QuaternionRotation",
    "RationalQuadraticSpline",
    "RootFindingError",
    "Sequential",
    "SmoothMixture",
    "Swap",
    "Transformer",
    "UnderdampedLangevinBlock",
    "VectorField",
    "ZMatrix",
    "half_mask",
    "neural_spline_flow",
    "quadratic_features",
    "rational_quadratic_spline",
    "real_nvp",
]
