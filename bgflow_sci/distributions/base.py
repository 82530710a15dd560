"""The Distribution protocol: ``sample``, ``log_prob``, ``sample_with_log_prob``, all with optional context."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Distribution(nn.Module):
    """Base class of priors and of anything usable as a proposal.

    ``sample(n, context) -> (n, dim)``; ``log_prob(x, context) -> (batch,)`` (normalised, natural log);
    ``sample_with_log_prob(n, context) -> (x, log_prob)``.  Subclasses implement ``_sample`` and ``log_prob``.
    """

    dim: int
    context_dim: int = 0

    def sample(self, n: int, context: Tensor | None = None) -> Tensor:  # noqa: D102
        raise NotImplementedError

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:  # noqa: D102
        raise NotImplementedError

    def sample_with_log_prob(self, n: int, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Draw ``n`` samples and their log densities."""
        x = self.sample(n, context)
        return x, self.log_prob(x, context)

    def energy(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Negative log density ``-log p(x)``: lets a prior be used where an energy is expected."""
        return -self.log_prob(x, context)

    @property
    def _reference(self) -> Tensor:
        """A tensor carrying the distribution's dtype and device (first buffer or parameter)."""
        for t in self.buffers():
            return t
        for t in self.parameters():
            return t
        return torch.zeros(())
