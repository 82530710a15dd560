"""Training objectives for flows and Boltzmann generators, as zero-argument callables for :class:`Trainer`.

Each loss draws its own minibatch and returns a scalar tensor.  Data losses read their data through
:func:`~bgflow_sci.training.batches.as_batch_source`: from a fixed tensor with the global torch RNG (so checkpoints
that store RNG states resume exactly), or from an iterable, iterator or sampler of batches (whose own state a
checkpoint does not hold).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_batch
from ..distributions import Distribution
from ..energies import Energy, as_energy
from ..reweighting.weights import ess_tensor
from . import distributed
from .batches import BatchData, as_batch_source


def linlog_cut(u: Tensor, cutoff: float) -> Tensor:
    """Energies above ``cutoff`` grow only logarithmically: ``c + log(1 + u - c)`` (finite gradients for clashes)."""
    return torch.where(u > cutoff, cutoff + torch.log1p(torch.clamp(u - cutoff, min=0.0)), u)


def _zero_weight_where_not_finite(log_w: Tensor) -> Tensor:
    """``log_w`` with every non-finite entry set to ``-inf`` (weight zero)."""
    return torch.where(torch.isfinite(log_w), log_w, torch.full_like(log_w, -torch.inf))


def _sample_with_log_prob(bg, n: int, context: Tensor | None, with_context: bool = False):
    """``n`` differentiable samples ``x = f(z)`` and ``log q(x)`` for an energy loss, ``context`` rows drawn at random
    (returned as a third item with ``with_context``).

    Under distributed training ``n`` is the global batch: the latents (and context rows) are drawn from the shared
    stream and each rank pushes its own slice through the flow (:mod:`~bgflow_sci.training.distributed`); a model
    without ``prior`` and ``flow`` then draws ``n / world_size`` samples from the rank's own stream.
    """
    stream = distributed.active_stream()
    with distributed.shared_draws():
        ctx = None
        if context is not None:
            ctx = context[torch.randint(len(context), (n,), device=context.device)]
        if stream is None:
            x, log_q = bg.sample_with_log_prob(n, ctx)
            return (x, log_q, ctx) if with_context else (x, log_q)
        if hasattr(bg, "prior") and hasattr(bg, "flow"):
            z, log_pz = bg.prior.sample_with_log_prob(n, ctx)
    ctx = stream.part(ctx)
    if not (hasattr(bg, "prior") and hasattr(bg, "flow")):
        x, log_q = bg.sample_with_log_prob(stream.local_size(n), ctx)
    else:
        x, logdet = bg.flow(stream.part(z), ctx)
        x, log_q = x, stream.part(log_pz) - logdet
    return (x, log_q, ctx) if with_context else (x, log_q)


class _EnergyLoss:
    """What the energy-based losses share: the mean over the batch's finite terms (the others counted in
    ``n_dropped``) and the Kish ESS of the last batch's log weights for the Trainer's log."""

    last_log_weights: Tensor | None
    _dropped: Tensor | int = 0

    @property
    def n_dropped(self) -> int:
        """Terms left out so far for being non-finite (reading it synchronises with the device)."""
        return int(self._dropped)

    @n_dropped.setter
    def n_dropped(self, value: int) -> None:
        self._dropped = value

    def _finite_mean(self, terms: Tensor) -> Tensor:
        """Mean of the finite terms, without a host synchronisation (``nan`` if none is finite: a skipped step)."""
        ok = torch.isfinite(terms)
        self._dropped = self._dropped + (~ok).sum()
        return torch.where(ok, terms, torch.zeros_like(terms)).sum() / ok.sum()

    def log_values(self) -> dict[str, Tensor]:
        """``{"ess": Kish ESS / n}`` of the last batch (a 0-d tensor; no host synchronisation; empty when no log
        weights are known)."""
        lw = self.last_log_weights
        if lw is None or lw.numel() == 0:
            return {}
        return {"ess": ess_tensor(lw)}


class MaximumLikelihood:
    """Forward KL / maximum likelihood on data: ``E_data[-log q(x)]`` (nats per sample).

    With weights the batch loss is the self-normalised weighted mean ``Σ_b w_b (-log q(x_b)) / Σ_b w_b``
    (e.g. reweighted or biased simulation data).

    Args:
        model: any Distribution (a ``BoltzmannGenerator`` or a density flow).
        data: ``(n, dim)`` training samples (MD frames, exact samples), drawn as minibatches with replacement; or
            any batch source of :func:`~bgflow_sci.training.batches.as_batch_source` (a ``DataLoader``, a generator
            function, an iterator, a sampler ``n -> batch``) whose batches are ``x``, ``(x, weights)`` or
            ``(x, weights, context)`` (``None`` for an absent part) or mappings with these keys.
        batch_size: minibatch size drawn from a tensor, or the ``n`` a sampler is called with.
        context: optional ``(n, context_dim)`` conditioning aligned with a tensor ``data``.
        weights: optional ``(n,)`` non-negative per-sample weights aligned with a tensor ``data``.
    """

    fields = ("x", "weights", "context")

    def __init__(
        self,
        model: Distribution,
        data: BatchData,
        batch_size: int = 256,
        context: Tensor | None = None,
        weights: Tensor | None = None,
    ):
        if isinstance(data, Tensor):
            check_batch(data, model.dim, "data")
            if len(data) == 0:
                raise ValueError("maximum likelihood needs at least one data sample")
            if not torch.isfinite(data).all():
                raise ValueError(f"training data contain {int((~torch.isfinite(data)).any(-1).sum())} non-finite rows")
            if weights is not None and (weights.shape != (len(data),) or not bool((weights >= 0).all())):
                raise ValueError(f"weights must be non-negative with shape ({len(data)},), got {tuple(weights.shape)}")
        self.model, self.data, self.batch_size, self.context, self.weights = model, data, batch_size, context, weights
        self.batches = as_batch_source(data, batch_size, self.fields, {"weights": weights, "context": context})

    def __call__(self) -> Tensor:
        batch = self.batches()
        x, w = batch["x"], batch["weights"]
        if self.batches.streamed:
            check_batch(x, self.model.dim, "data batch")
            if w is not None and w.shape != (len(x),):
                raise ValueError(
                    f"a batch's weights must have shape ({len(x)},), got {tuple(w.shape)}; batches are "
                    "(x, weights, context): pass (x, None, context) or a mapping {'x': ..., 'context': ...}"
                )
        log_q = self.model.log_prob(x, batch["context"])
        if w is None:
            return -log_q.mean()
        return -(w * log_q).sum() / w.sum()


class ReverseKL(_EnergyLoss):
    """Energy-based training (reverse KL up to ``log Z``): ``E_{x~q}[u(x) + log q(x)]``.

    Samples with non-finite energy are left out of the batch mean (their number is kept in
    ``n_dropped``); ``energy_cutoff`` applies :func:`linlog_cut` to tame clashes.  :meth:`log_values` reports
    the Kish ESS fraction of the last batch's importance weights ``log w = -u(x) - log q(x)`` (uncut energies,
    non-finite ones weigh zero), which the :class:`~bgflow_sci.training.Trainer` logs as ``<name>/ess``.
    ``target`` replaces the generator's target in the loss (e.g. a
    :class:`~bgflow_sci.energies.BiasedEnergy`); the logged ESS is then against that target.

    **Gradient estimators** (``gradient``): with ``x = T_θ(z)``, ``z ~ p_Z``, the reparametrised gradient is

    ``∇_θ L = E_z[ ∂_x(log q_θ(x) + u(x)) · ∂_θ T_θ(z) ] + E_z[ ∂_θ log q_θ(x) |_x ]``.

    ``"total"`` (default) backpropagates through both terms. ``"path"`` (Roeder et al. 2017; Vaitl et al. 2022,
    2024) drops the second, the score term, whose expectation is zero: the same gradient in expectation, with a
    variance that vanishes as ``q`` approaches the target (``∂_x(log q + u) → 0``). It is computed generically:
    ``g = ∂_x(log q_θ(x) + u(x))`` at the drawn ``x`` with ``θ`` held fixed (``∂_x log q`` as the force of the
    energy ``-log q`` through the flow's inverse, ``∂_x u = -F``, both from ``energy_and_force``;
    :attr:`path_gradient_method` says ``"inverse"``), then the surrogate
    ``mean_i g_i · x_i`` is backpropagated through ``x = T_θ(z)`` -- one inverse pass with its vector-Jacobian
    product on top of a standard step. The loss value returned (and logged) is the reverse KL itself in both cases.
    Flows without an inverse cannot use ``"path"``.
    """

    path_gradient_method = "inverse"

    def __init__(
        self,
        bg,
        batch_size: int = 256,
        energy_cutoff: float | None = None,
        context: Tensor | None = None,
        target: Energy | None = None,
        gradient: str = "total",
    ):
        if bg.target is None and target is None:
            raise ValueError("ReverseKL needs a BoltzmannGenerator with a target energy (or target=...)")
        if gradient not in ("total", "path"):
            raise ValueError(f"gradient must be 'total' or 'path', got {gradient!r}")
        self.bg, self.batch_size, self.energy_cutoff, self.context = bg, batch_size, energy_cutoff, context
        self.target = target if target is not None else bg.target
        self.gradient = gradient
        self.n_dropped = 0
        self.last_log_weights: Tensor | None = None

    def __call__(self) -> Tensor:
        x, log_q, ctx = _sample_with_log_prob(self.bg, self.batch_size, self.context, with_context=True)
        if self.gradient == "path":
            return self._path(x, log_q, ctx)
        u = self.target.energy(x)
        log_w = -(u + log_q).detach()
        self.last_log_weights = _zero_weight_where_not_finite(log_w)
        if self.energy_cutoff is not None:
            u = linlog_cut(u, self.energy_cutoff)
        return self._finite_mean(u + log_q)

    def _path(self, x: Tensor, log_q: Tensor, ctx: Tensor | None) -> Tensor:
        """The reverse KL with the path gradient (see the class docstring)."""
        u, force = self.target.energy_and_force(x.detach())
        log_w = -(u + log_q.detach())
        self.last_log_weights = _zero_weight_where_not_finite(log_w)
        du = -force
        if self.energy_cutoff is not None:  # d/du of the linear-logarithmic cut
            slope = torch.where(u > self.energy_cutoff, 1.0 / (1.0 + (u - self.energy_cutoff).clamp(min=0.0)), 1.0)
            du = du * slope[:, None]
            u = linlog_cut(u, self.energy_cutoff)
        # ∂x log q at fixed θ: the force of the energy -log q (the one Energy API; as force matching does)
        _, d_log_q = as_energy(lambda y: -self.bg.log_prob(y, ctx), dim=x.shape[-1]).energy_and_force(x.detach())
        g = d_log_q + du
        ok = torch.isfinite(u + log_q.detach()) & torch.isfinite(g).all(-1)
        g = torch.where(ok[:, None], g, torch.zeros_like(g))
        surrogate = torch.where(ok, (g * x).sum(-1), torch.zeros_like(u)).sum() / ok.sum()
        value = self._finite_mean((u + log_q).detach())
        return value + surrogate - surrogate.detach()


class ForceMatching:
    """Force matching (Köhler, Krämer, Noé, NeurIPS 2021): ``E_data |∇ₓ log q(x) - F_ref(x)|²``.

    ``∇ₓ log q = -∇ₓ(-log q)`` is the model's force in units of kT per length unit; ``forces_kT`` are the
    reference forces already divided by kT (``F / kT``).  The squared norm is summed over coordinates and
    averaged over the minibatch.  The parameter gradient differentiates through ``∇ₓ log q``
    (``create_graph``), so every layer of the flow's inverse must be twice differentiable — e.g. smooth flows
    (:class:`~bgflow_sci.flows.smooth.SmoothMixture`), not piecewise splines, whose forces jump at knots.

    Args:
        model: a density model with ``log_prob(x, context)`` and ``dim`` (e.g. a ``BoltzmannGenerator``).
        positions: ``(n, dim)`` configurations; or a batch source of
            :func:`~bgflow_sci.training.batches.as_batch_source` (a ``DataLoader``, a generator function, an
            iterator, a sampler ``n -> batch``, e.g. an MD run reporting forces) whose batches are
            ``(x, forces_kT)`` or ``(x, forces_kT, context)``, or mappings with keys ``x``, ``forces``, ``context``.
        forces_kT: ``(n, dim)`` reference forces divided by kT, aligned with a tensor ``positions`` (``None`` when
            the batches carry them).
        batch_size: minibatch size, drawn with replacement; ``None`` uses every sample in order.
        context: optional ``(n, context_dim)`` conditioning aligned with a tensor ``positions``.
    """

    fields = ("x", "forces", "context")

    def __init__(
        self,
        model: Distribution,
        positions: BatchData,
        forces_kT: Tensor | None = None,
        batch_size: int | None = 256,
        context: Tensor | None = None,
    ):
        if isinstance(positions, Tensor):
            if forces_kT is None:
                raise ValueError("forces_kT are needed with a tensor of positions")
            check_batch(positions, model.dim, "positions")
            check_batch(forces_kT, model.dim, "forces_kT")
            if len(positions) == 0 or len(forces_kT) != len(positions):
                raise ValueError(
                    f"positions and forces_kT must hold the same positive number of rows, got "
                    f"{len(positions)} and {len(forces_kT)}"
                )
            if not (torch.isfinite(positions).all() and torch.isfinite(forces_kT).all()):
                raise ValueError("positions and forces_kT must be finite")
            if context is not None and len(context) != len(positions):
                raise ValueError(f"context must have {len(positions)} rows, got {len(context)}")
        self.model, self.positions, self.forces, self.batch_size = model, positions, forces_kT, batch_size
        self.context = context
        self.batches = as_batch_source(
            positions, batch_size, self.fields, {"forces": forces_kT, "context": context}, name="positions"
        )

    def __call__(self) -> Tensor:
        batch = self.batches()
        x, f_ref, ctx = batch["x"], batch["forces"], batch["context"]
        if self.batches.streamed:
            check_batch(x, self.model.dim, "positions batch")
            if f_ref is None:
                raise ValueError("force matching needs batches (x, forces_kT[, context]); this batch has no forces")
            check_batch(f_ref, self.model.dim, "forces batch")
            if len(f_ref) != len(x):
                raise ValueError(f"a batch holds {len(x)} positions but {len(f_ref)} forces")
        # the model's force ∇ log q(x) = -∇(-log q): the one autograd force of the package, kept differentiable
        model_energy = as_energy(lambda y: -self.model.log_prob(y, ctx), self.model.dim)
        _, model_force = model_energy.energy_and_force(x.detach().clone().requires_grad_(True), create_graph=True)
        return (model_force - f_ref).pow(2).sum(-1).mean()


class FreeEnergyPerturbation(_EnergyLoss):
    """Learned free-energy perturbation (targeted FEP, Jarzynski 2002; Wirnsberger et al., J. Chem. Phys. 153,
    144112 (2020)): a flow ``f`` maps samples ``x`` of state A (``exp(-u_A)``, e.g. MD frames) towards state B.

    ``log w(x) = u_A(x) + log|det ∂f/∂x| - u_B(f(x))`` and ``E_A[w] = Z_B / Z_A``, so ``-log mean w`` estimates
    ``f_B - f_A`` (reduced) for any invertible ``f``; training minimises ``E_A[u_B(f(x)) - log|det ∂f/∂x|]`` —
    ``KL(f_# p_A || p_B)`` up to the constant ``f_B - f_A`` — which maximises the overlap (the ESS of ``w``).

    Args:
        flow: a :class:`~bgflow_sci.flows.Flow` from A's coordinates to B's (its forward direction).
        target: ``u_B``, an :class:`~bgflow_sci.energies.Energy` (kT).
        data: ``(n, dim)`` samples of A, drawn as minibatches with replacement (or a batch source of
            :func:`~bgflow_sci.training.batches.as_batch_source` yielding ``(x, source_energy)``).
        source_energy: ``u_A(data)`` ``(n,)`` (kT), aligned with a tensor ``data``: only for the logged ESS
            (``<name>/ess``) — the gradient does not need it.
        batch_size, energy_cutoff: minibatch size; :func:`linlog_cut` of ``u_B`` in the loss (not in the weights).

    Rows with non-finite ``u_B(f(x))`` are left out of the loss (counted in ``n_dropped``) and weigh zero.
    """

    fields = ("x", "source_energy")

    def __init__(
        self,
        flow,
        target: Energy,
        data: BatchData,
        source_energy: Tensor | None = None,
        batch_size: int = 256,
        energy_cutoff: float | None = None,
    ):
        if isinstance(data, Tensor):
            check_batch(data, target.dim, "data")
            if len(data) == 0:
                raise ValueError("free-energy perturbation needs at least one sample of the source state")
            if source_energy is not None and source_energy.shape != (len(data),):
                raise ValueError(f"source_energy must have shape ({len(data)},), got {tuple(source_energy.shape)}")
        self.flow, self.target, self.batch_size, self.energy_cutoff = flow, target, batch_size, energy_cutoff
        self.batches = as_batch_source(data, batch_size, self.fields, {"source_energy": source_energy})
        self.n_dropped = 0
        self.last_log_weights: Tensor | None = None

    def log_weights(self, x: Tensor, source_energy: Tensor) -> Tensor:
        """``log w`` ``(batch,)`` of samples ``x`` of A with ``u_A(x)`` = ``source_energy`` (no gradient);
        ``-inf`` where ``u_B(f(x))`` is not finite.  ``-reweighting.log_z(log_w)`` is ``f_B - f_A``."""
        with torch.no_grad():
            y, logdet = self.flow(x)
            log_w = source_energy.to(logdet) + logdet - self.target.energy(y)
        return _zero_weight_where_not_finite(log_w)

    def __call__(self) -> Tensor:
        batch = self.batches()
        y, logdet = self.flow(batch["x"])
        u = self.target.energy(y)
        if batch["source_energy"] is not None:
            log_w = (batch["source_energy"].to(u) + logdet - u).detach()
            self.last_log_weights = _zero_weight_where_not_finite(log_w)
        if self.energy_cutoff is not None:
            u = linlog_cut(u, self.energy_cutoff)
        return self._finite_mean(u - logdet)
