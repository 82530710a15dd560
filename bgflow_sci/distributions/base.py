"""The Distribution protocol: ``sample``, ``log_prob``, ``sample_with_log_prob``, all with optional context."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Distribution(nn.Module):
    """Base class of priors, density models and anything usable as a proposal.

    * ``sample(n, context) -> x`` ``(n, dim)``: ``n`` draws;
    * ``log_prob(x, context) -> (batch,)``: the normalised density (natural log) of ``x`` ``(batch, dim)``;
    * ``sample_with_log_prob(n, context) -> (x, log_prob)``: draws with their log densities, the draw to
      differentiate (training, proposals).

    Subclasses implement ``log_prob`` and one of the two draws; the other is derived:

    * priors that draw directly implement ``sample``; ``sample_with_log_prob`` then evaluates ``log_prob`` on the
      draw (keeping whatever graph ``sample`` has, e.g. through reparameterised trainable parameters);
    * models whose density comes with the draw (a flow pushing a prior, a mixture of such) implement
      ``sample_with_log_prob``; ``sample`` then drops ``log q`` and runs without an autograd graph.

    A subclass that implements neither raises ``NotImplementedError``.  ``context`` is ``None`` unless
    ``context_dim > 0``.
    """

    dim: int
    context_dim: int = 0

    def sample(self, n: int, context: Tensor | None = None) -> Tensor:
        """Draw ``n`` samples ``(n, dim)``; by default the ``x`` of :meth:`sample_with_log_prob`, without a graph."""
        if type(self).sample_with_log_prob is Distribution.sample_with_log_prob:
            raise NotImplementedError(f"{type(self).__name__} implements neither sample nor sample_with_log_prob")
        with torch.no_grad():
            return self.sample_with_log_prob(n, context)[0]

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Normalised log density ``(batch,)`` of ``x`` ``(batch, dim)``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement log_prob")

    def sample_with_log_prob(self, n: int, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Draw ``n`` samples ``(n, dim)`` and their log densities ``(n,)``; by default ``sample`` + ``log_prob``."""
        if type(self).sample is Distribution.sample:
            raise NotImplementedError(f"{type(self).__name__} implements neither sample nor sample_with_log_prob")
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
