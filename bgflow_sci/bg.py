"""Density models (prior + flow) and Boltzmann generators (Noé, Olsson, Köhler, Wu, Science 2019): + target energy.

A :class:`DensityModel` draws ``x = f(z)``, ``z ~ p_Z``, with density ``log q(x) = log p_Z(z) - log|det df/dz|``.
A :class:`BoltzmannGenerator` is a density model with a target energy ``u`` (kT): its samples are importance-weighted
towards the Boltzmann density ``exp(-u(x)) / Z`` with ``log w(x) = -u(x) - log q(x)`` (up to the constant ``log Z``).

One sampling contract for every :class:`~bgflow_sci.distributions.Distribution`, density model and generator:

* ``sample(n, context) -> x`` ``(n, dim)``: draws, no autograd graph for models;
* ``sample_with_log_prob(n, context) -> (x, log q)``: the differentiable draw (training, proposals);
* ``sample_with_log_weights(n, context, batch_size) -> Samples(x, log_weights)``: importance-weighted draws, on
  anything with a target (:class:`ImportanceSampler`: :class:`BoltzmannGenerator`,
  :class:`~bgflow_sci.state_mixture.StateMixture`), e.g. ``x, log_w = bg.sample_with_log_weights(n)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from ._checks import check_batch
from .distributions import Distribution
from .energies import Energy
from .flows import Flow

__all__ = ["BoltzmannGenerator", "DensityModel", "ImportanceSampler", "Samples"]


class Samples(NamedTuple):
    """Samples ``x`` ``(n, dim)`` with log importance weights ``(n,)`` (``-inf`` for invalid samples)."""

    x: Tensor
    log_weights: Tensor


def _draw_in_chunks(
    model: Distribution,
    draw: Callable[[int, Tensor | None], tuple[Tensor, ...]],
    n: int,
    batch_size: int | None,
    context: Tensor | None,
    widths: tuple[int, ...],
) -> tuple[Tensor, ...]:
    """``draw(m, context rows)`` over consecutive chunks of at most ``batch_size`` rows (default: all ``n`` at once),
    without an autograd graph, concatenated per output; for ``n = 0`` empty tensors ``(0, width)`` (``(0,)`` for a
    width of 0) in the model's dtype and device."""
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    batch_size = batch_size or n or 1
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    parts: list[tuple[Tensor, ...]] = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            parts.append(draw(m, None if context is None else context[start : start + m]))
    if not parts:
        ref = model._reference
        return tuple(ref.new_zeros((0, w) if w else (0,)) for w in widths)
    return tuple(torch.cat(column) for column in zip(*parts))


class ImportanceSampler(Distribution):
    """A proposal ``q`` with a target energy ``u`` (kT): draws samples with log importance weights
    ``log w = -u(x) - log q(x)``.

    Subclasses set ``dim`` and ``target`` and implement ``sample_with_log_prob`` (differentiable) and ``log_prob``
    (and may override ``sample``); :class:`BoltzmannGenerator` and :class:`~bgflow_sci.state_mixture.StateMixture`
    are the two kinds.
    """

    target: Energy

    def sample_with_log_weights(self, n: int, context: Tensor | None = None, batch_size: int | None = None) -> Samples:
        """Draw ``n`` samples (no autograd graph) with their log importance weights, in chunks of ``batch_size``.

        Returns :class:`Samples` ``(x (n, dim), log_weights (n,))``: ``x, log_w = model.sample_with_log_weights(n)``.
        """

        def draw(m: int, ctx: Tensor | None) -> tuple[Tensor, Tensor]:
            x, log_q = self.sample_with_log_prob(m, ctx)
            return x, self.log_weights(x, log_q)

        return Samples(*_draw_in_chunks(self, draw, n, batch_size, context, (self.dim, 0)))

    def log_weights(self, x: Tensor, log_q: Tensor) -> Tensor:
        """``log w = -u(x) - log q(x)``; invalid samples (non-finite ``x``, ``u`` or ``log q``) get ``-inf``."""
        log_w = -self.target.energy(x) - log_q
        return torch.where(torch.isfinite(log_w), log_w, torch.full_like(log_w, -torch.inf))


class DensityModel(Distribution):
    """A normalising flow ``flow`` pushing ``prior`` forward: the density model ``q(x | c)`` of ``x = f(z; c)``.

    ``sample(n)`` draws ``(n, dim)`` samples without a graph; ``sample_with_log_prob(n)`` keeps it (training, and
    use as a proposal); ``log_prob(x)`` evaluates the density of given points (maximum likelihood).  ``dim`` is the
    sample dimension (the flow's ``output_dim`` when it changes dimension), ``latent_dim`` the prior's and
    ``context_dim`` the largest of the prior's and the flow's (0: unconditional).
    """

    def __init__(self, prior: Distribution, flow: Flow):
        super().__init__()
        self.prior, self.flow = prior, flow
        self.latent_dim = prior.dim
        self.dim = getattr(flow, "output_dim", None) or prior.dim
        self.context_dim = max(getattr(prior, "context_dim", 0), getattr(flow, "context_dim", 0))

    def sample(self, n: int, context: Tensor | None = None, batch_size: int | None = None) -> Tensor:
        """``n`` samples ``x = f(z)`` ``(n, dim)``, drawn without an autograd graph in chunks of ``batch_size``.

        Only ``x`` is computed: ``z`` from ``prior.sample`` and ``flow.transform`` (no log-determinant, which for
        a continuous flow is the divergence integral); the draws are distributed as those of
        :meth:`sample_with_log_prob`.
        """

        def draw(m: int, ctx: Tensor | None) -> tuple[Tensor]:
            z = self.prior.sample(m, ctx)
            transform = getattr(self.flow, "transform", None)  # a Flow; any module with the flow signature otherwise
            return (transform(z, ctx) if transform is not None else self.flow(z, ctx)[0],)

        return _draw_in_chunks(self, draw, n, batch_size, context, (self.dim,))[0]

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


class BoltzmannGenerator(DensityModel, ImportanceSampler):
    """A :class:`DensityModel` ``(prior, flow)`` with the target energy ``target`` (kT) it is pushed towards.

    Everything of a density model, plus ``sample_with_log_weights(n)`` -> :class:`Samples`
    (``x, log_w = bg.sample_with_log_weights(n)``, drawn without a graph) and ``log_weights(x, log_q)``.
    ``target`` is required and must have the samples' ``dim``; a model without a target is a :class:`DensityModel`.
    """

    def __init__(self, prior: Distribution, flow: Flow, target: Energy | None = None):
        if target is None:
            raise TypeError(
                "BoltzmannGenerator needs a target energy; for a density model without one use "
                "bgflow_sci.DensityModel(prior, flow)"
            )
        super().__init__(prior, flow)
        self.target = target
        if target.dim != self.dim:
            raise ValueError(f"the flow produces samples of dim {self.dim} but the target energy has dim {target.dim}")
