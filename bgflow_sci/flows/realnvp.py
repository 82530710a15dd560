"""Factories for the standard coupling stacks: RealNVP (affine) and neural spline flows (rational-quadratic).

Every flow factory of the package shares one argument convention::

    factory(dim, n_layers, *, hidden=..., context_dim=..., <family options>)

``n_layers`` counts the coupling (or autoregressive) transforms, not pairs of them, and every other option is
keyword-only (e.g. ``real_nvp(2, 8, hidden=(64, 64))``, ``neural_spline_flow(3, 4, domains=[...], n_bins=8)``,
:func:`bgflow_sci.hep.variable_model.conditional_autoregressive_flow`).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

from torch import nn

from .actnorm import ActNorm
from .base import Flow, Sequential
from .coupling import AffineCoupling, Coupling, half_mask
from .splines import RationalQuadraticSpline
from .transformers import Domain

__all__ = ["check_factory_args", "neural_spline_flow", "real_nvp"]


def check_factory_args(dim: int, n_layers: int) -> None:
    """Validate the two positional arguments of a flow factory (positive integers ``dim`` and ``n_layers``)."""
    for name, value in (("dim", dim), ("n_layers", n_layers)):
        try:
            if isinstance(value, bool):
                raise TypeError
            number = operator.index(value)
        except TypeError:
            raise TypeError(
                f"{name} must be an integer, got {type(value).__name__}: flow factories take (dim, n_layers, *, "
                "options), every option by keyword"
            ) from None
        if number < 1:
            raise ValueError(f"{name} must be positive, got {value}")


def real_nvp(
    dim: int,
    n_layers: int = 8,
    *,
    hidden: Sequence[int] = (64, 64),
    context_dim: int = 0,
    actnorm: bool = False,
    activation: type[nn.Module] = nn.SiLU,
) -> Flow:
    """``n_layers`` affine couplings (Dinh, Sohl-Dickstein, Bengio, ICLR 2017) with alternating half masks.

    Layer ``i`` transforms the second half of the coordinates for even ``i`` and the first half for odd ``i``
    (an even ``n_layers`` updates every coordinate equally often).  With ``actnorm=True`` an :class:`ActNorm` ends
    the stack (sample side), so its data-dependent initialisation standardises the training data on the first
    maximum-likelihood step.
    """
    check_factory_args(dim, n_layers)
    layers: list[Flow] = [
        AffineCoupling(dim, half_mask(dim, second=i % 2 == 0), hidden, context_dim, activation=activation)
        for i in range(n_layers)
    ]
    if actnorm:
        layers.append(ActNorm(dim))
    return Sequential(*layers)


def neural_spline_flow(
    dim: int,
    n_layers: int = 4,
    *,
    domains: Domain | Sequence[Domain] | None = None,
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
    check_factory_args(dim, n_layers)
    spline = RationalQuadraticSpline(Domain() if domains is None else domains, n_bins, bound)
    layers: list[Flow] = [
        Coupling(dim, spline, half_mask(dim, second=i % 2 == 0), hidden, context_dim, activation)
        for i in range(n_layers)
    ]
    return Sequential(*layers)
