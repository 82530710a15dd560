"""Continuous normalizing flows: a learned vector field integrated by an ODE solver.

Neural ODE flows (Chen, Rubanova, Bettencourt, Duvenaud, NeurIPS 2018; FFJORD, Grathwohl et al., ICLR 2019),
trained here by flow matching (Lipman et al., ICLR 2023; see :mod:`bgflow_sci.training.flow_matching`).

Forward (latent ``x`` at ``t = 0`` -> sample ``y`` at ``t = 1``) solves jointly::

    dx/dt = v(t, x, c),        d ℓ/dt = ∇·v(t, x, c),        ℓ(0) = 0,

so that ``ℓ(1) = log|det ∂y/∂x|`` (instantaneous change of variables).  The inverse integrates the same
system from ``t = 1`` back to ``t = 0`` and returns ``ℓ = -log|det ∂y/∂x|``.  When only ``y`` is wanted (sampling),
:meth:`ContinuousFlow.transform` integrates ``dx/dt = v`` alone: one field evaluation per stage and no
vector-Jacobian products, by a plain loop for the fixed-step solvers (the same steps as torchdiffeq's, so the
same ``y``).  The divergence is exact (one
vector-Jacobian product per dimension; right for small ``dim``) or Hutchinson's estimator ``εᵀ (∂v/∂x) ε``
with Rademacher or Gaussian ``ε`` drawn once per solve (unbiased for the log-det, since the trajectory does
not depend on ``ε``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from .._checks import check_batch, check_context
from .base import Flow
from .nets import MLP

__all__ = ["ContinuousFlow", "VectorField", "exact_divergence", "hutchinson_divergence"]

FIXED_STEP_SOLVERS = ("rk4", "midpoint", "euler")
ADAPTIVE_SOLVERS = ("dopri5", "dopri8", "bosh3", "adaptive_heun")


class VectorField(nn.Module):
    """MLP velocity ``v(t, x, c)``: ``(batch, dim)`` from time, state and optional context.

    Time enters through the features ``[t, sin(π k t), cos(π k t)]_{k=1..n_frequencies}`` concatenated with
    ``x`` (and ``c``).  The last layer starts at zero (``zero_init``), so a fresh flow is the identity.

    Args:
        dim: state dimension.
        context_dim: width of the conditioning vector (0: unconditional).
        hidden: hidden layer widths.
        n_frequencies: number of sinusoidal time frequencies.
        activation: smooth activation (the divergence differentiates through it).
    """

    def __init__(
        self,
        dim: int,
        context_dim: int = 0,
        hidden: Sequence[int] = (64, 64),
        n_frequencies: int = 4,
        activation: type[nn.Module] = nn.SiLU,
        zero_init: bool = True,
    ):
        super().__init__()
        if dim < 1 or context_dim < 0 or n_frequencies < 0:
            raise ValueError("dim must be positive, context_dim and n_frequencies non-negative")
        self.dim, self.context_dim = dim, context_dim
        self.register_buffer("frequencies", math.pi * torch.arange(1, n_frequencies + 1, dtype=torch.float32))
        self.net = MLP(dim + 1 + 2 * n_frequencies + context_dim, dim, hidden, activation, zero_init)

    def time_features(self, t: Tensor, batch: int, like: Tensor) -> Tensor:
        """``(batch, 1 + 2 n_frequencies)`` features of a scalar or ``(batch,)`` time."""
        t = torch.as_tensor(t, dtype=like.dtype, device=like.device).reshape(-1, 1).expand(batch, 1)
        angles = t * self.frequencies.to(like)
        return torch.cat([t, torch.sin(angles), torch.cos(angles)], dim=-1)

    def forward(self, t: Tensor | float, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Velocity ``(batch, dim)`` at time ``t`` (scalar or ``(batch,)``)."""
        check_batch(x, self.dim)
        context = check_context(context, x.shape[0], self.context_dim)
        features = [x, self.time_features(t, x.shape[0], x)]
        if context is not None:
            features.append(context.to(x))
        return self.net(torch.cat(features, dim=-1))


def exact_divergence(v: Tensor, x: Tensor, create_graph: bool) -> Tensor:
    """``∇·v = Σ_i ∂v_i/∂x_i``, shape ``(batch,)``, by ``dim`` vector-Jacobian products (``v`` must depend on ``x``)."""
    div = v.new_zeros(v.shape[0])
    for i in range(v.shape[1]):
        (g,) = torch.autograd.grad(v[:, i].sum(), x, create_graph=create_graph, retain_graph=True)
        div = div + g[:, i]
    return div


def hutchinson_divergence(v: Tensor, x: Tensor, noise: Tensor, create_graph: bool) -> Tensor:
    """Hutchinson's unbiased estimate ``εᵀ (∂v/∂x) ε`` of ``∇·v`` for noise with ``E[εεᵀ] = I``; shape ``(batch,)``."""
    (vjp,) = torch.autograd.grad(v, x, noise, create_graph=create_graph, retain_graph=True)
    return (vjp * noise).sum(-1)


class _Dynamics(nn.Module):
    """The augmented right-hand side ``(x, ℓ) -> (v, ∇·v)`` for one solve (context and noise fixed)."""

    def __init__(self, flow: ContinuousFlow):
        super().__init__()
        self.vector_field = flow.vector_field
        self.flow = [flow]  # not a submodule: avoids a reference cycle in the module tree
        self.context: Tensor | None = None
        self.noise: Tensor | None = None

    def forward(self, t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x = state[0]
        flow = self.flow[0]
        flow.nfe += 1
        keep_graph = torch.is_grad_enabled()  # off when sampling and in the adjoint's forward solve
        with torch.enable_grad():
            if not x.requires_grad:
                x = x.detach().requires_grad_(True)
            v = self.vector_field(t, x, self.context)
            if self.noise is None:
                div = exact_divergence(v, x, create_graph=keep_graph)
            else:
                div = hutchinson_divergence(v, x, self.noise.to(v), create_graph=keep_graph)
        if not keep_graph:
            v, div = v.detach(), div.detach()
        return v, div


class _Velocity(nn.Module):
    """The plain right-hand side ``x -> v(t, x, c)`` (sample-only path through torchdiffeq; counts NFE)."""

    def __init__(self, flow: ContinuousFlow, context: Tensor | None):
        super().__init__()
        self.vector_field = flow.vector_field
        self.flow = [flow]
        self.context = context

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        self.flow[0].nfe += 1
        return self.vector_field(t, x, self.context)


_ONE_THIRD, _TWO_THIRDS = 1 / 3, 2 / 3
_NFE_PER_STEP = {"euler": 1, "midpoint": 2, "rk4": 4}


def _fixed_step(field: Callable[[Tensor, Tensor], Tensor], x: Tensor, times: Tensor, solver: str) -> Tensor:
    """Integrate ``dx/dt = field(t, x)`` over the grid ``times`` with torchdiffeq's fixed-step tableaus.

    euler ``x + h k₁``; midpoint ``x + h v(t + h/2, x + h/2 k₁)``; rk4 is torchdiffeq's ``"rk4"`` (the 3/8 rule,
    ``x + h (k₁ + 3 k₂ + 3 k₃ + k₄) / 8``).  The arithmetic is written as torchdiffeq writes it, so ``y`` is the
    same to rounding.  Step sizes and stage times are computed once, as tensors of the grid's dtype and device (no
    host synchronisation); the loop itself is the field evaluations and the state updates.
    """
    t0s, hs = times[:-1], times[1:] - times[:-1]
    if solver == "euler":
        for t0, h in zip(t0s.unbind(), hs.unbind()):
            x = x + h * field(t0, x)
    elif solver == "midpoint":
        halves = 0.5 * hs
        for t0, h, half, t_mid in zip(t0s.unbind(), hs.unbind(), halves.unbind(), (t0s + halves).unbind()):
            x = x + h * field(t_mid, x + field(t0, x) * half)
    else:
        stages = zip(
            t0s.unbind(), hs.unbind(), (t0s + hs * _ONE_THIRD).unbind(), (t0s + hs * _TWO_THIRDS).unbind(),
            times[1:].unbind(),
        )  # fmt: skip
        for t0, h, t13, t23, t1 in stages:
            k1 = field(t0, x)
            k2 = field(t13, x + h * k1 * _ONE_THIRD)
            k3 = field(t23, x + h * (k2 - k1 * _ONE_THIRD))
            k4 = field(t1, x + h * (k1 - k2 + k3))
            x = x + (k1 + 3 * (k2 + k3) + k4) * h * 0.125
    return x


class ContinuousFlow(Flow):
    """Continuous normalizing flow ``y = x(1)`` with ``dx/dt = v(t, x, c)``, ``x(0)`` the latent input.

    Args:
        vector_field: a module ``v(t, x, context) -> (batch, dim)``, e.g. :class:`VectorField`.
        dim: state dimension (default: ``vector_field.dim``).
        context_dim: conditioning width (default: ``vector_field.context_dim``, else 0).
        solver: ``"dopri5"`` (adaptive, ``atol``/``rtol``; other torchdiffeq adaptive methods work too) or a
            fixed-step ``"rk4"`` / ``"midpoint"`` / ``"euler"`` with ``n_steps`` equal steps on ``[0, 1]``.
        n_steps: number of steps of a fixed-step solver (NFE = 1, 2, 4 per step for euler, midpoint, rk4).
        atol, rtol: tolerances of an adaptive solver.
        divergence: ``"exact"`` or ``"hutchinson"`` (``noise="rademacher"`` or ``"gaussian"``, one draw per solve).
        adjoint: use ``torchdiffeq.odeint_adjoint`` (memory O(1) in the number of steps); gradients then reach the
            vector field's parameters and the input state, not a context that requires grad.

    After every ``forward``, ``inverse``, ``transform`` or ``inverse_transform`` call, ``nfe`` holds the number of
    vector-field evaluations of that solve (adjoint backward passes add theirs on top).  ``transform`` /
    ``inverse_transform`` return ``y`` / ``x`` alone and skip the divergence: with a fixed-step solver they run the
    same steps as ``forward`` / ``inverse`` (same ``y`` to rounding) at the cost of ``NFE`` plain field evaluations;
    with an adaptive solver the step sizes are chosen on ``x`` alone, so ``y`` agrees within the tolerances.  A
    fixed-step solve is only approximately invertible (error ``O(h^p)``); use ``dopri5`` with tight tolerances where
    ``inverse ∘ forward = id`` must hold to high precision.
    """

    def __init__(
        self,
        vector_field: nn.Module | Callable[[Tensor, Tensor, Tensor | None], Tensor],
        dim: int | None = None,
        context_dim: int | None = None,
        solver: Literal["dopri5", "rk4", "midpoint", "euler"] | str = "dopri5",
        n_steps: int = 20,
        atol: float = 1e-5,
        rtol: float = 1e-5,
        divergence: Literal["exact", "hutchinson"] = "exact",
        noise: Literal["rademacher", "gaussian"] = "rademacher",
        adjoint: bool = False,
    ):
        super().__init__()
        dim = getattr(vector_field, "dim", None) if dim is None else dim
        if dim is None or dim < 1:
            raise ValueError("ContinuousFlow needs a positive dim (given or as vector_field.dim)")
        field_context = getattr(vector_field, "context_dim", None)
        context_dim = (field_context or 0) if context_dim is None else context_dim
        if field_context is not None and field_context != context_dim:
            raise ValueError(f"context_dim={context_dim} but the vector field takes context_dim={field_context}")
        if getattr(vector_field, "dim", dim) != dim:
            raise ValueError(f"dim={dim} but the vector field has dim={vector_field.dim}")
        if solver not in FIXED_STEP_SOLVERS + ADAPTIVE_SOLVERS:
            raise ValueError(f"unknown solver {solver!r}; use one of {FIXED_STEP_SOLVERS + ADAPTIVE_SOLVERS}")
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        if divergence not in ("exact", "hutchinson"):
            raise ValueError(f"divergence must be 'exact' or 'hutchinson', got {divergence!r}")
        if noise not in ("rademacher", "gaussian"):
            raise ValueError(f"noise must be 'rademacher' or 'gaussian', got {noise!r}")
        if adjoint and not isinstance(vector_field, nn.Module):
            raise ValueError("adjoint=True needs the vector field to be an nn.Module (its parameters are adjoined)")
        self.vector_field = vector_field
        self.dim, self.context_dim = int(dim), int(context_dim)
        self.solver, self.n_steps, self.atol, self.rtol = solver, int(n_steps), float(atol), float(rtol)
        self.divergence, self.noise, self.adjoint = divergence, noise, adjoint
        self.nfe = 0

    def _draw_noise(self, x: Tensor) -> Tensor | None:
        if self.divergence == "exact":
            return None
        if self.noise == "gaussian":
            return torch.randn_like(x)
        return torch.randint(0, 2, x.shape, device=x.device).to(x.dtype) * 2 - 1

    def _times(self, start: float, end: float, like: Tensor) -> Tensor:
        n = self.n_steps if self.solver in FIXED_STEP_SOLVERS else 1
        return torch.linspace(start, end, n + 1, dtype=like.dtype, device=like.device)

    def _integrate(self, x: Tensor, context: Tensor | None, start: float, end: float) -> tuple[Tensor, Tensor]:
        check_batch(x, self.dim)
        context = check_context(context, x.shape[0], self.context_dim)
        self.nfe = 0
        if x.shape[0] == 0:
            return x.clone(), x.new_zeros(0)
        import torchdiffeq

        dynamics = _Dynamics(self)
        dynamics.context, dynamics.noise = context, self._draw_noise(x)
        state = (x, x.new_zeros(x.shape[0]))
        t = self._times(start, end, x)
        kwargs = {"method": self.solver}
        if self.solver not in FIXED_STEP_SOLVERS:
            kwargs.update(atol=self.atol, rtol=self.rtol)
        if self.adjoint:
            params = tuple(p for p in self.vector_field.parameters() if p.requires_grad)
            xs, logdets = torchdiffeq.odeint_adjoint(dynamics, state, t, adjoint_params=params, **kwargs)
        else:
            xs, logdets = torchdiffeq.odeint(dynamics, state, t, **kwargs)
        return xs[-1], logdets[-1]

    def _integrate_state(self, x: Tensor, context: Tensor | None, start: float, end: float) -> Tensor:
        """``x(end)`` from ``x(start)`` without the divergence (the sample-only path)."""
        check_batch(x, self.dim)
        context = check_context(context, x.shape[0], self.context_dim)
        self.nfe = 0
        if x.shape[0] == 0:
            return x.clone()
        t = self._times(start, end, x)
        use_adjoint = self.adjoint and torch.is_grad_enabled()
        if self.solver in FIXED_STEP_SOLVERS and not use_adjoint:
            # the field is called directly (a module wrapper per call costs ~10 µs, a few % of a small solve)
            field = self.vector_field
            y = _fixed_step(lambda t_i, x_i: field(t_i, x_i, context), x, t, self.solver)
            self.nfe = self.n_steps * _NFE_PER_STEP[self.solver]
            return y
        import torchdiffeq

        velocity = _Velocity(self, context)

        kwargs = {"method": self.solver}
        if self.solver not in FIXED_STEP_SOLVERS:
            kwargs.update(atol=self.atol, rtol=self.rtol)
        if use_adjoint:
            params = tuple(p for p in self.vector_field.parameters() if p.requires_grad)
            return torchdiffeq.odeint_adjoint(velocity, x, t, adjoint_params=params, **kwargs)[-1]
        return torchdiffeq.odeint(velocity, x, t, **kwargs)[-1]

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Integrate latent ``x`` from ``t = 0`` to ``t = 1``; returns ``(y, log|det ∂y/∂x|)``."""
        return self._integrate(x, context, 0.0, 1.0)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Integrate sample ``y`` from ``t = 1`` back to ``t = 0``; returns ``(x, log|det ∂x/∂y|)``."""
        return self._integrate(y, context, 1.0, 0.0)

    def transform(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``y = x(1)`` alone (sampling): integrates ``dx/dt = v`` without the divergence; differentiable."""
        return self._integrate_state(x, context, 0.0, 1.0)

    def inverse_transform(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        """``x = x(0)`` from ``y = x(1)`` alone, without the divergence."""
        return self._integrate_state(y, context, 1.0, 0.0)

    def velocity(self, t: Tensor | float, x: Tensor, context: Tensor | None = None) -> Tensor:
        """The vector field ``v(t, x, c)`` (what flow matching regresses)."""
        return self.vector_field(t, x, context)
