"""Constrained optimisation with the Modified Differential Method of Multipliers (MDMM).

Platt & Barr, "Constrained Differential Optimization", NIPS 1988.  To minimise ``f(θ)`` subject to constraints
``g_i(θ) = 0`` (or ``≤ 0``) one descends in ``θ`` and *ascends* in the multipliers ``λ_i`` on the damped Lagrangian

    L(θ, λ) = f(θ) + Σ_i [ λ_i g_i(θ) + (c_i / 2) g_i(θ)² ],

    θ ← θ − η_θ ∂L/∂θ,        λ_i ← λ_i + η_i ∂L/∂λ_i = λ_i + η_i g_i.

The damping ``c`` turns the saddle point into a local minimum in θ (no oscillation around the constraint surface).
At convergence the KKT stationarity condition ``∇f + Σ λ_i ∇g_i = 0`` holds with ``g_i = 0``, so with this sign
convention ``λ`` is the *negative* of the usual "force" needed to hold the constraint; for example minimising
``|x|²`` subject to ``x₀ + x₁ − 1 = 0`` ends at ``x = (½, ½)``, ``λ = −1``.

The constraints here are ``torch.nn.Module`` objects whose only parameter is the multiplier; calling one returns
its Lagrangian term, whose gradient with respect to the multiplier is the ascent direction.  They satisfy the
:class:`~bgflow_sci.training.trainer.Constraint` hook of :class:`~bgflow_sci.training.Trainer`, which performs the
ascent step after every accepted optimiser step, logs ``<name>/g`` and ``<name>/lambda`` and checkpoints the
multipliers::

    con = InequalityConstraint(lambda: mmd2(morphed(), data), bound=eps, damping=10.0, lr=1e-2)
    Trainer(flow, {"transport": cost}, constraints={"mmd": con}).train(5000)

They can also be used in a hand-written loop: add ``con()`` to the loss, ``backward()``, step the model optimiser and
call :meth:`MDMMConstraint.ascend`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["EqualityConstraint", "InequalityConstraint", "MDMMConstraint"]


class MDMMConstraint(nn.Module):
    """Common machinery: the callable, damping ``c``, ascent rate ``lr`` and the scalar multiplier ``λ``.

    ``fn`` is kept out of the module tree on purpose (it usually closes over the trained model; registering it would
    make the model's weights look like multipliers).  The multiplier follows the dtype and device of ``g`` on first
    use, so a constraint built on CPU works for a float64 CUDA model.
    """

    def __init__(self, fn: Callable[[], Tensor], damping: float = 1.0, lr: float = 1e-2, init: float = 0.0):
        super().__init__()
        if not callable(fn):
            raise TypeError(f"fn must be a zero-argument callable returning a scalar tensor, got {type(fn).__name__}")
        if not (math.isfinite(damping) and damping >= 0):
            raise ValueError(f"damping must be finite and >= 0, got {damping}")
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr (multiplier ascent rate) must be finite and > 0, got {lr}")
        object.__setattr__(self, "fn", fn)  # not a submodule, even if fn is an nn.Module
        self.damping = float(damping)
        self.lr = float(lr)
        self.multiplier = nn.Parameter(torch.tensor(float(init)))
        self._g: Tensor | None = None
        self._value: Tensor | None = None

    def _raw(self) -> Tensor:
        value = self.fn()
        if not isinstance(value, Tensor) or value.dim() != 0:
            raise ValueError(f"constraint fn must return a scalar tensor, got {getattr(value, 'shape', type(value))}")
        lam = self.multiplier
        if lam.device != value.device or (value.is_floating_point() and lam.dtype != value.dtype):
            lam.data = lam.data.to(device=value.device, dtype=value.dtype if value.is_floating_point() else lam.dtype)
        return value

    def constraint_value(self, value: Tensor) -> Tensor:
        """``g`` from the raw value of ``fn``; subclasses define it."""
        raise NotImplementedError

    def term(self, g: Tensor) -> Tensor:
        """The Lagrangian contribution ``λ g + (c/2) g²`` (its ``λ``-gradient is ``g``)."""
        return self.multiplier * g + 0.5 * self.damping * g * g

    def forward(self) -> Tensor:
        """Evaluate ``fn`` and return the term to add to the loss."""
        value = self._raw()
        g = self.constraint_value(value)
        self._value, self._g = value.detach(), g.detach()
        return self.term(g)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # noqa: D102
        saved = state_dict.get("multiplier")
        if isinstance(saved, Tensor):  # keep the saved dtype (a float64 λ must not round-trip through float32)
            self.multiplier.data = self.multiplier.data.to(dtype=saved.dtype)
        return super().load_state_dict(state_dict, strict, assign)

    @torch.no_grad()
    def ascend(self) -> None:
        """Gradient ascent ``λ ← λ + lr ∂L/∂λ`` from the multiplier's ``.grad`` (then cleared); for custom loops."""
        if self.multiplier.grad is not None:
            self.multiplier.add_(self.multiplier.grad, alpha=self.lr)
            self.multiplier.grad = None

    def log_values(self) -> dict[str, Tensor]:
        """The last constraint value ``g``, the raw ``fn()`` value and the multiplier ``λ`` (detached tensors)."""
        out = {"lambda": self.multiplier.detach()}
        if self._g is not None:
            out["g"] = self._g
            out["value"] = self._value
        return out

    def extra_repr(self) -> str:
        return f"damping={self.damping}, lr={self.lr}, lambda={self.multiplier.item():.4g}"


class EqualityConstraint(MDMMConstraint):
    """``fn() = target``: ``g = fn() − target``, term ``λ g + (c/2) g²``, ascent ``λ ← λ + lr g``.

    Args:
        fn: zero-argument callable returning a scalar tensor (differentiable in the trained parameters).
        damping: ``c ≥ 0``; ``0`` is the plain (undamped) Lagrangian, which can oscillate.
        lr: multiplier ascent rate ``η``.
        init: initial ``λ``.
        target: the value ``fn`` must take.
    """

    def __init__(
        self, fn: Callable[[], Tensor], damping: float = 1.0, lr: float = 1e-2, init: float = 0.0, *, target=0.0
    ):
        super().__init__(fn, damping, lr, init)
        self.target = float(target)

    def constraint_value(self, value: Tensor) -> Tensor:  # noqa: D102
        return value - self.target


class InequalityConstraint(MDMMConstraint):
    """``fn() ≤ bound`` by the clamped augmented Lagrangian (Rockafellar 1973), with ``λ ≥ 0``.

    With ``g = fn() − bound`` the constraint enters through the clamped value ``ĝ = max(g, −λ/c)``:

        term = λ ĝ + (c/2) ĝ²  =  λ g + (c/2) g²   if g ≥ −λ/c   (active or nearly so)
                               =  −λ² / (2c)       otherwise     (inactive: no force on θ)

    Its gradients are ``∂/∂θ = max(λ + c g, 0) ∇g`` (a one-sided push, only towards feasibility) and
    ``∂/∂λ = ĝ``, so the trainer's ascent ``λ ← λ + lr ĝ`` grows ``λ`` while the bound is violated and lets it decay
    geometrically (factor ``1 − lr/c``) to 0 once the constraint is inactive.  This is the clamp form, not a slack
    variable.  Starting from ``λ ≥ 0`` it keeps ``λ ≥ 0`` because ``lr ≤ c`` is required.  (The naive clamp
    ``max(g, 0)`` is the ``λ = 0`` case; alone it never lets ``λ`` decrease, so the multiplier overshoots.)
    At convergence of an active constraint ``g = 0`` and ``∇f + λ ∇g = 0`` with ``λ > 0`` (KKT).

    Args:
        fn: zero-argument callable returning a scalar tensor.
        bound: the upper bound ``ε`` (e.g. an MMD² noise floor).
        damping: ``c > 0``.
        lr: multiplier ascent rate, ``0 < lr ≤ c``.
        init: initial ``λ ≥ 0``.
    """

    def __init__(
        self, fn: Callable[[], Tensor], bound: float = 0.0, damping: float = 1.0, lr: float = 1e-2, init: float = 0.0
    ):
        super().__init__(fn, damping, lr, init)
        if self.damping <= 0:
            raise ValueError(f"InequalityConstraint needs damping > 0, got {damping}")
        if self.lr > self.damping:
            raise ValueError(f"InequalityConstraint needs lr <= damping (keeps λ >= 0), got lr={lr}, damping={damping}")
        if init < 0:
            raise ValueError(f"InequalityConstraint needs init >= 0, got {init}")
        if not math.isfinite(bound):
            raise ValueError(f"bound must be finite, got {bound}")
        self.bound = float(bound)

    def constraint_value(self, value: Tensor) -> Tensor:  # noqa: D102
        return value - self.bound

    def term(self, g: Tensor) -> Tensor:  # noqa: D102
        g_hat = torch.maximum(g, -self.multiplier / self.damping)
        return self.multiplier * g_hat + 0.5 * self.damping * g_hat * g_hat
