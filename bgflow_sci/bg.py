"""Boltzmann generator (Noé, Olsson, Köhler, Wu, Science 2019): prior + flow + target energy.

Samples are drawn as ``x = f(z)``, ``z ~ p_Z``, with density ``log q(x) = log p_Z(z) - log|det df/dz|``,
and importance-weighted towards the Boltzmann density ``exp(-u(x)) / Z`` with
``log w(x) = -u(x) - log q(x)`` (up to the constant ``log Z``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ._checks import check_batch
from .distributions import Distribution
from .energies import Energy
from .flows import Flow


class Samples(NamedTuple):
    """Flow samples ``x`` ``(n, dim)`` with log importance weights ``(n,)`` (``-inf`` for invalid samples)."""

    x: Tensor
    log_weights: Tensor


class ImportanceSampler(Distribution):
    """A proposal ``q`` with a target energy ``u`` (kT): draws samples with log importance weights
    ``log w = -u(x) - log q(x)``.  Subclasses set ``dim`` and ``target`` and implement ``sample_with_log_prob``
    (differentiable) and ``log_prob``; :class:`BoltzmannGenerator` and :class:`~bgflow_sci.state_mixture.StateMixture`
    are the two kinds.
    """

    target: Energy | None

    def sample(self, n: int, context: Tensor | None = None, batch_size: int | None = None) -> Samples:
        """Draw ``n`` samples (no autograd graph) with their log importance weights, in chunks of ``batch_size``."""
        if self.target is None:
            raise ValueError("sample() returns importance weights and needs a target energy; use sample_with_log_prob")
        batch_size = batch_size or n or 1
        xs, lws = [], []
        with torch.no_grad():
            for start in range(0, n, batch_size):
                m = min(batch_size, n - start)
                ctx = None if context is None else context[start : start + m]
                x, log_q = self.sample_with_log_prob(m, ctx)
                xs.append(x)
                lws.append(self.log_weights(x, log_q))
        if not xs:
            ref = self._reference
            return Samples(ref.new_zeros(0, self.dim), ref.new_zeros(0))
        return Samples(torch.cat(xs), torch.cat(lws))

    def log_weights(self, x: Tensor, log_q: Tensor) -> Tensor:
        """``log w = -u(x) - log q(x)``; invalid samples (non-finite ``x``, ``u`` or ``log q``) get ``-inf``."""
        if self.target is None:
            raise ValueError("log_weights needs a target energy")
        log_w = -self.target.energy(x) - log_q
        return torch.where(torch.isfinite(log_w), log_w, torch.full_like(log_w, -torch.inf))


class BoltzmannGenerator(ImportanceSampler):
    """A normalising flow ``flow`` pushing ``prior`` towards the Boltzmann density of ``target``.

    ``sample(n)`` returns :class:`Samples` (``x, log_w = bg.sample(n)``), drawn without a graph;
    ``sample_with_log_prob(n)`` keeps the graph (use it for training and as a proposal);
    ``log_prob(x)`` evaluates the flow density of given configurations (maximum likelihood).
    ``target`` may be ``None`` for a pure density model; ``sample`` then raises, since there are no weights.
    """

    def __init__(self, prior: Distribution, flow: Flow, target: Energy | None = None):
        super().__init__()
        self.prior, self.flow, self.target = prior, flow, target
        self.latent_dim = prior.dim
        self.dim = getattr(flow, "output_dim", None) or prior.dim
        self.context_dim = max(getattr(prior, "context_dim", 0), getattr(flow, "context_dim", 0))
        if target is not None and target.dim != self.dim:
            raise ValueError(f"the flow produces samples of dim {self.dim} but the target energy has dim {target.dim}")

    def sample_with_log_prob(self, n: int, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x = f(z)`` and ``log q(x)``, differentiable with respect to the flow's parameters."""
        z, log_pz = self.prior.sample_with_log_prob(n, context)
        x, logdet = self.flow(z, context)
        return x, log_pz - logdet

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``log q(x) = log p_Z(f^{-1}(x)) + log|det df^{-1}/dx|``."""
        check_batch(x, self.dim)
        z, logdet_inv = self.flow.inverse(x, context)
        return self.prior.log_prob(z, context) + logdet_inv
