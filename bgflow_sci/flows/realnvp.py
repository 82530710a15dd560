"""Factories for the standard coupling stacks: RealNVP (affine) and neural spline flows (rational-quadratic)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .actnorm import ActNorm
from .base import Flow, Sequential
from .coupling import AffineCoupling, Coupling, half_mask
from .splines import RationalQuadraticSpline
from .transformers import Domain


def real_nvp(
    dim: int,
    n_blocks: int = 4,
    hidden: Sequence[int] = (64, 64),
    context_dim: int = 0,
    actnorm: bool = False,
    activation: type[nn.Module] = nn.SiLU,
) -> Flow:
    """``n_blocks`` pairs of affine couplings with alternating half masks.

    With ``actnorm=True`` an :class:`ActNorm` ends the stack (sample side), so its data-dependent
    initialisation standardises the training data on the first maximum-likelihood step.
    """
    layers: list[Flow] = []
    for _ in range(n_blocks):
        for second in (True, False):
            layers.append(AffineCoupling(dim, half_mask(dim, second), hidden, context_dim, activation=activation))
    if actnorm:
        layers.append(ActNorm(dim))
    return Sequential(*layers)


def neural_spline_flow(
    dim: int,
    domains: Domain | Sequence[Domain] | None = None,
    n_layers: int = 4,
    n_bins: int = 8,
    bound: float = 5.0,
    hidden: Sequence[int] = (64, 64),
    context_dim: int = 0,
    activation: type[nn.Module] = nn.SiLU,
) -> Flow:
    """``n_layers`` rational-quadratic spline couplings with alternating half masks (Durkan et al., NeurIPS 2019).

    ``domains``: one :class:`Domain` for all coordinates or one per coordinate (default: the real line, with
    identity tails outside ``[-bound, bound]``); interval coordinates stay in their interval and circle
    coordinates keep their periodicity in every layer.
    """
    if n_layers < 1:
        raise ValueError(f"n_layers must be positive, got {n_layers}")
    spline = RationalQuadraticSpline(Domain() if domains is None else domains, n_bins, bound)
    layers: list[Flow] = [
        Coupling(dim, spline, half_mask(dim, second=i % 2 == 0), hidden, context_dim, activation)
        for i in range(n_layers)
    ]
    return Sequential(*layers)
