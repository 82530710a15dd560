"""Factory for the standard RealNVP stack used by the toy systems and tutorials."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .actnorm import ActNorm
from .base import Flow, Sequential
from .coupling import AffineCoupling, half_mask


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
