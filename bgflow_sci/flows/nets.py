"""Small conditioner networks used by coupling and autoregressive layers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class MLP(nn.Sequential):
    """Fully connected network ``in_features -> hidden... -> out_features``.

    The last layer starts at zero (``zero_init=True``) so that a flow built from it starts as the identity.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (64, 64),
        activation: type[nn.Module] = nn.SiLU,
        zero_init: bool = True,
    ):
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), activation()]
            width = h
        last = nn.Linear(width, out_features)
        if zero_init:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        super().__init__(*layers)


def with_context(x: Tensor, context: Tensor | None) -> Tensor:
    """Concatenate conditioner input and context along the feature axis."""
    return x if context is None else torch.cat([x, context.to(x)], dim=-1)
