"""Morphing simulated events into data-like events without pairs: a conditional flow trained with MDMM.

Gendreau-Distler, Le Pottier, Wang, "Transforming Simulation to Data Without Pairing", arXiv:2504.12343: a chain of
masked autoregressive bijectors (with permutations in between), conditioned on the event kinematics ``c``, maps an MC
event ``x`` to ``x' = f_θ(x | c)``.  There is no data twin of any MC event, so the map is fitted to distributions:

    minimise   C(θ) = E_MC[ w · |y' − y|² / d ]                      (transport cost, the "minimal map" term)
    subject to MMD²((y', c), (y_data, c_data)) ≤ ε                   (morphed MC indistinguishable from data)

with ``y = P(x)`` the :class:`~bgflow_sci.hep.preprocessing.PhysicsPreprocessor` coordinates (log momenta, logit of
bounded variables, dequantised spikes, standardised), ``y' = f_θ(y | c)`` and ``d`` the number of variables.  The
constraint is handled by the Modified Differential Method of Multipliers (Platt & Barr 1988,
:class:`~bgflow_sci.training.InequalityConstraint`): descent on ``θ``, ascent on ``λ``, damping ``c``.

Design choices (the paper's exact formulation is not public):

* **Primary term = transport cost** (not the likelihood of MC under the identity-initialised flow): it is the
  quantity "how much did the event move", has an obvious scale (variance units of the standardised variables) and
  picks the optimal-transport map among all maps that reach data; a likelihood term only penalises volume change
  and would allow any measure-preserving shuffle.
* **Joint MMD on (y', c)**: the MMD compares the pairs (corrected variables, kinematics), so the map must fix the
  *conditional* distributions -- a map ignoring ``c`` that only matches the marginals keeps a non-zero joint MMD.
  Kinematic distributions are assumed equal in MC and data (reweight them first otherwise: the joint MMD would try
  to compensate a kinematic mismatch with the corrected variables).
* **ε = mean of the data-vs-data biased MMD² noise floor** at the training batch size
  (:func:`~bgflow_sci.training.mmd_noise_floor`; ``epsilon="q95"`` for the 95 % quantile).  The multiplier
  integrates ``g`` over many steps, so at equilibrium the *average* MMD² of a training batch equals ε, i.e. morphed MC
  scores against data what data scores against itself; the 95 % quantile would accept a genuine residual difference.
* **Relative constraint** ``g = MMD²/ε − 1`` (``InequalityConstraint(fn=MMD²/ε, bound=1)``): MMD² values are
  O(10⁻³), so with the raw value ``λ`` would need thousands of steps to grow to the size where it balances the
  transport cost; the relative form makes ``g`` and ``λ`` O(1) and the ascent rate and damping problem-independent.
* Multi-scale RBF kernel (median-distance bandwidth of the data, fixed before training, scales 0.5, 1, 2 by
  default), per-event weights in both the cost and the MMD (negative weights allowed; positive totals required).
* **Derived features in the constraint** (optional ``mmd_features``): a differentiable function ``F(x, c)`` of the
  *physical* corrected variables (and physical context) returning extra columns, e.g. an invariant mass that is a
  narrow function of all the variables.  The constraint then compares
  ``(y', c̃, F̃(x'))`` with ``(y_data, c̃_data, F̃(x_data))``, ``x' = P⁻¹(y')``, where ``F̃ = s (F − μ_F)/σ_F`` is
  standardised with the (weighted) data mean and std and scaled by ``feature_weight`` ``s``; gradients flow through
  ``P⁻¹`` and ``F``.  The kernel bandwidth and ε are computed on the same joint features.  The features also get
  a **constraint of their own**, ``MMD²(F̃(x'), F̃(x_data)) ≤ ε_F`` (kernel bandwidth and noise floor ``ε_F`` from the
  data features alone): in the joint MMD over ``d + k + f`` columns a narrow peak in one derived column hardly
  changes the kernel sums, so a map could match the joint MMD while widening the mass peak; the second multiplier
  cannot be satisfied that way.

Identity at initialisation: every conditioner's last layer starts at zero (transformer parameters zero = identity)
and the chain ends with the permutation that undoes the accumulated ones.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..io.checkpoints import load_checkpoint, save_checkpoint
from ..training.mdmm import InequalityConstraint
from ..training.mmd import MultiScaleRBF, NoiseFloor, mmd2, mmd_noise_floor
from ..training.trainer import Trainer
from .variable_model import VariableModel, _weights, conditional_autoregressive_flow

FeatureFn = Callable[[Tensor, Tensor | None], Tensor]
"""``F(x, c) -> (n, f)``: derived features of physical variables ``x (n, d)`` and physical context ``c`` or ``None``."""

__all__ = [
    "FeatureFn",
    "MorphingFlow",
    "MorphingObjective",
    "MorphingResult",
    "conditional_autoregressive_flow",
    "fit_morphing",
]


class MorphingFlow(VariableModel):
    """Conditional morphing ``x' = P⁻¹(f_θ(P(x) | P_c(c)))`` of MC events towards data (see the module docstring).

    Args:
        names: the corrected variables (branch names), ``d`` of them.
        context_names: the kinematic conditioning variables (may be empty: an unconditional morphing).
        kinds, context_kinds: :class:`PhysicsPreprocessor` kinds per column (default ``"identity"``).
        transformer: ``"affine"`` (masked autoregressive affine chain, as in the paper) or ``"spline"``.
        n_layers, hidden, n_bins, bound, scale_bound, seed: see :func:`conditional_autoregressive_flow`.
        derived: derived observables ``{NAME: EXPR}`` over ``names`` and ``context_names``
            (:mod:`bgflow_sci.hep.expressions`, e.g. a dimuon mass), stored in the model: :func:`fit_morphing` adds
            them to the MMD constraint and :meth:`derive` recomputes them from corrected variables.
        holdout: the training split, recorded for reports (plain values, e.g. ``{"fraction": 0.3, "seed": 0, "mc":
            {"file": ..., "tree": ..., "entries": n}, "data": {...}}``, :mod:`bgflow_sci.hep.splits`); ``None``: the
            model was trained on every event.

    The flow runs in IAF mode, so morphing is one pass.  ``model(y, c)`` works in preprocessed coordinates and
    returns ``(y', log|det ∂y'/∂y|)``; :meth:`morph` works on physical values.
    """

    def __init__(
        self,
        names: Sequence[str],
        context_names: Sequence[str] = (),
        kinds: Sequence[Any] | None = None,
        context_kinds: Sequence[Any] | None = None,
        transformer: str = "affine",
        n_layers: int = 4,
        hidden: Sequence[int] = (64, 64),
        n_bins: int = 8,
        bound: float = 5.0,
        scale_bound: float = 3.0,
        seed: int = 0,
        derived: Mapping[str, str] | Sequence[str] | None = None,
        holdout: Mapping[str, Any] | None = None,
    ):
        from .expressions import parse_derived

        super().__init__(names, context_names, kinds, context_kinds)
        self.flow = self._build_flow("iaf", transformer, n_layers, hidden, n_bins, bound, scale_bound, seed)
        self.derived = parse_derived(derived, self.names + self.context_names)
        self.holdout = dict(holdout) if holdout else None
        self._config["derived"] = {k: e.text for k, e in self.derived.items()}
        self._config["holdout"] = self.holdout

    def derive(self, values: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The derived observables ``{NAME: (n,) float64}`` of physical ``values`` ``{name: (n,)}`` (the model's
        variables and context, corrected or not)."""
        with torch.no_grad():
            return {k: e(values).double().cpu().numpy() for k, e in self.derived.items()}

    def feature_fn(self) -> FeatureFn | None:
        """The derived observables as the MDMM constraint's ``F(x, c)`` (``None`` without derived observables)."""
        from .expressions import derived_feature_fn

        return derived_feature_fn(self.derived, self.names, self.context_names) if self.derived else None

    def config(self) -> dict[str, Any]:  # noqa: D102
        return dict(self._config)

    def forward(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Preprocessed coordinates ``y (n, d)`` -> ``(y', log|det ∂y'/∂y|)``."""
        return self.flow(y, context)

    def morph(
        self,
        x: Any,
        context: Any = None,
        names: Sequence[str] | None = None,
        context_names: Sequence[str] | None = None,
        batch_size: int = 65536,
        seed: int = 0,
    ) -> Any:
        """Corrected physical values: numpy in -> numpy ``(n, d)`` out; tensors keep dtype/device; a mapping gives
        ``{name: (n,) array}``.  Spikes are dequantised with ``seed`` and come back exactly on the spike value."""
        xt, ct = self.inputs(x, context, names, context_names)
        gen = torch.Generator(device=xt.device).manual_seed(seed)
        outs = []
        with torch.no_grad():
            for s in range(0, len(xt), batch_size):
                c = None if ct is None else ct[s : s + batch_size]
                y, cc = self.preprocess(xt[s : s + batch_size], c, gen)
                outs.append(self.x_pre.inverse(self.flow(y, cc)[0]))
        out = torch.cat(outs) if outs else xt.clone()
        if isinstance(x, Mapping):
            arr = out.double().cpu().numpy()
            return {n: arr[:, j] for j, n in enumerate(self.names)}
        return out if isinstance(x, Tensor) else out.double().cpu().numpy()


# --------------------------------------------------------------------------------------------- training
class MorphingObjective:
    """Loss factory for training a :class:`MorphingFlow` with the package :class:`~bgflow_sci.training.Trainer`.

    Holds MC and data in preprocessed coordinates.  :meth:`transport` (the primary loss) draws an MC minibatch,
    morphs it and caches ``(y', c̃, w)``; :meth:`mmd2` (the constraint value) scores that cached batch against a fresh
    data minibatch.  The Trainer calls losses before constraints each step, so both use the same morphed batch.

    Args:
        model: a :class:`MorphingFlow` (its preprocessing is fitted on MC here if it is not yet).
        mc, mc_context, data, data_context: physical arrays ``(n, d)``, ``(n, k)``, ``(m, d)``, ``(m, k)`` or
            mappings (see :class:`VariableModel`).
        mc_weights, data_weights: per-event weights (``None``: ones).
        batch_size: events per minibatch (same for MC and data, and for the noise floor).
        scales: kernel bandwidth factors.
        epsilon: ``"mean"`` or ``"q95"`` of the noise floor, or a number (absolute MMD² bound).
        n_boot: bootstrap draws for the noise floor.
        mmd_features: optional differentiable ``F(x, c) -> (n, f)`` of the physical variables ``x (n, d)`` and
            physical context ``c (n, k)`` (``None`` without context): extra MMD columns (module docstring).
        feature_weight: factor ``s`` on the standardised derived features (1: unit variance like the variables).
    """

    def __init__(
        self,
        model: MorphingFlow,
        mc: Any,
        data: Any,
        mc_context: Any = None,
        data_context: Any = None,
        mc_weights: Any = None,
        data_weights: Any = None,
        batch_size: int = 1024,
        scales: Sequence[float] = (0.5, 1.0, 2.0),
        epsilon: str | float = "mean",
        n_boot: int = 200,
        seed: int = 0,
        mmd_features: FeatureFn | None = None,
        feature_weight: float = 1.0,
    ):
        x_mc, c_mc = model.inputs(mc, mc_context)
        x_d, c_d = model.inputs(data, data_context)
        if len(x_mc) < 2 or len(x_d) < 2:
            raise ValueError(f"empty selection: {len(x_mc)} MC and {len(x_d)} data events")
        for t, what in ((x_mc, "mc"), (x_d, "data"), (c_mc, "mc_context"), (c_d, "data_context")):
            if t is not None and not torch.isfinite(t).all():
                raise ValueError(f"{what} has {int((~torch.isfinite(t)).any(1).sum())} non-finite rows")
        self.w_mc = _weights(mc_weights, len(x_mc), "mc_weights", x_mc)
        self.w_data = _weights(data_weights, len(x_d), "data_weights", x_d)
        if not bool(model.x_pre.fitted):
            model.fit_preprocessing(x_mc, c_mc, self.w_mc, seed=seed)
        gen = torch.Generator(device=x_mc.device).manual_seed(seed)
        with torch.no_grad():
            self.y_mc, self.c_mc = model.preprocess(x_mc, c_mc, gen)
            self.y_data, self.c_data = model.preprocess(x_d, c_d, gen)
        self.model, self.batch_size = model, int(batch_size)
        self.features = mmd_features
        self.c_mc_physical = c_mc
        self.f_data: Tensor | None = None
        self._cache_features: tuple[Tensor, Tensor] | None = None
        if mmd_features is not None:
            self._fit_features(x_d, c_d, float(feature_weight))
            self.feature_kernel = MultiScaleRBF.from_data(self.f_data, scales=scales, seed=seed)
            self.feature_noise = mmd_noise_floor(
                self.f_data, self.batch_size, n_boot, self.feature_kernel, self.w_data, seed=seed + 1
            )
            self.feature_epsilon = self._epsilon(self.feature_noise, epsilon)
        joint = self._joint(self.y_data, self.c_data, self.f_data)
        self.kernel = MultiScaleRBF.from_data(joint, scales=scales, seed=seed)
        self.noise: NoiseFloor = mmd_noise_floor(joint, self.batch_size, n_boot, self.kernel, self.w_data, seed=seed)
        self.epsilon = self._epsilon(self.noise, epsilon)
        self._cache: tuple[Tensor, Tensor | None, Tensor | None, Tensor] | None = None

    @staticmethod
    def _epsilon(noise: NoiseFloor, epsilon: str | float) -> float:
        if isinstance(epsilon, str):
            if epsilon not in ("mean", "q95"):
                raise ValueError(f"epsilon must be 'mean', 'q95' or a number, got {epsilon!r}")
            value = noise.mean if epsilon == "mean" else noise.q95
        else:
            value = float(epsilon)
        if not value > 0:
            raise ValueError(f"epsilon must be positive, got {value}")
        return value

    def _fit_features(self, x_d: Tensor, c_d: Tensor | None, weight: float) -> None:
        """Data features ``F(x_d, c_d)`` and their standardisation ``s (F − μ)/σ`` (weighted data mean and std)."""
        if not weight > 0:
            raise ValueError(f"feature_weight must be positive, got {weight}")
        with torch.no_grad():
            f = self._call_features(x_d, c_d)
        if not torch.isfinite(f).all():
            raise ValueError(f"mmd_features gave {int((~torch.isfinite(f)).any(1).sum())} non-finite data rows")
        w = torch.ones(len(f), dtype=f.dtype, device=f.device) if self.w_data is None else self.w_data
        w = w / w.sum()
        mu = w @ f
        sd = torch.sqrt(w @ (f - mu).square())
        sd = torch.where(sd > 0, sd, torch.ones_like(sd))
        self.f_mean, self.f_scale = mu, sd / weight
        self.f_data = (f - mu) / self.f_scale

    def _call_features(self, x: Tensor, c: Tensor | None) -> Tensor:
        f = self.features(x, c)
        if f.dim() == 1:
            f = f[:, None]
        if f.dim() != 2 or len(f) != len(x):
            raise ValueError(f"mmd_features must return ({len(x)}, f) columns, got {tuple(f.shape)}")
        return f.to(x.dtype)

    def derived_features(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        """Standardised derived features ``s (F(x, c) − μ)/σ`` of physical ``x`` (differentiable)."""
        if self.features is None:
            raise ValueError("this objective has no mmd_features")
        return (self._call_features(x, c) - self.f_mean) / self.f_scale

    @staticmethod
    def _joint(y: Tensor, c: Tensor | None, f: Tensor | None = None) -> Tensor:
        return torch.cat([t for t in (y, c, f) if t is not None], 1)

    def _draw(self, n: int) -> Tensor:
        dev = self.y_mc.device
        return (
            torch.randperm(n, device=dev)[: self.batch_size]
            if self.batch_size <= n
            else torch.randint(n, (self.batch_size,), device=dev)
        )

    def transport(self) -> Tensor:
        """Weighted transport cost ``Σ w |y' − y|² / (d Σ w)`` of a fresh morphed MC minibatch."""
        idx = self._draw(len(self.y_mc))
        y = self.y_mc[idx]
        c = None if self.c_mc is None else self.c_mc[idx]
        w = None if self.w_mc is None else self.w_mc[idx]
        y_new, _ = self.model(y, c)
        self._cache = (y_new, c, w, idx)
        cost = (y_new - y).square().mean(1)
        return cost.mean() if w is None else (w * cost).sum() / w.sum()

    def mmd2(self) -> Tensor:
        """Biased MMD² of the cached morphed batch (joint with its context and derived features) against a fresh
        data minibatch."""
        if self._cache is None:
            self.transport()
        y_new, c, w, idx_mc = self._cache
        f_new = self._cached_features() if self.features is not None else None
        idx = self._draw(len(self.y_data))
        c_d = None if self.c_data is None else self.c_data[idx]
        f_d = None if self.f_data is None else self.f_data[idx]
        v = None if self.w_data is None else self.w_data[idx]
        return mmd2(self._joint(y_new, c, f_new), self._joint(self.y_data[idx], c_d, f_d), self.kernel, w, v)

    def relative_mmd2(self) -> Tensor:
        """``MMD² / ε`` (the constraint's value; the bound is 1)."""
        return self.mmd2() / self.epsilon

    def _cached_features(self) -> Tensor:
        """Standardised derived features of the cached morphed batch (computed once per batch)."""
        y_new, _, _, idx_mc = self._cache
        if self._cache_features is None or self._cache_features[0] is not y_new:
            c_phys = None if self.c_mc_physical is None else self.c_mc_physical[idx_mc]
            self._cache_features = (y_new, self.derived_features(self.model.x_pre.inverse(y_new), c_phys))
        return self._cache_features[1]

    def feature_mmd2(self) -> Tensor:
        """Biased MMD² of the derived features alone (own kernel) of the cached morphed batch against a fresh data
        minibatch: a narrow observable such as a mass peak is a small part of the joint MMD, not of this one."""
        if self.features is None:
            raise ValueError("this objective has no mmd_features")
        if self._cache is None:
            self.transport()
        w = self._cache[2]
        idx = self._draw(len(self.f_data))
        v = None if self.w_data is None else self.w_data[idx]
        return mmd2(self._cached_features(), self.f_data[idx], self.feature_kernel, w, v)

    def relative_feature_mmd2(self) -> Tensor:
        """``MMD²_F / ε_F`` (the derived-feature constraint's value; the bound is 1)."""
        return self.feature_mmd2() / self.feature_epsilon

    def constraint(self, damping: float = 2.0, lr: float = 0.1, init: float = 0.0) -> InequalityConstraint:
        """``MMD²/ε ≤ 1`` as an MDMM inequality constraint."""
        return InequalityConstraint(self.relative_mmd2, bound=1.0, damping=damping, lr=lr, init=init)

    def feature_constraint(self, damping: float = 2.0, lr: float = 0.1, init: float = 0.0) -> InequalityConstraint:
        """``MMD²_F/ε_F ≤ 1`` (derived features alone) as an MDMM inequality constraint."""
        return InequalityConstraint(self.relative_feature_mmd2, bound=1.0, damping=damping, lr=lr, init=init)

    @torch.no_grad()
    def evaluate(self, n_batches: int = 50, seed: int = 1) -> dict[str, float]:
        """Average MMD² over ``n_batches`` fresh (morphed MC, data) minibatch pairs vs ε and the noise floor.

        Returns ``{"mmd2", "mmd2_std_error", "epsilon", "noise_mean", "noise_std", "ratio"}`` (``ratio`` =
        mmd2 / ε; ≤ 1 within the standard error means the constraint holds on average).
        """
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            vals, fvals = [], []
            for _ in range(n_batches):
                self.transport()
                vals.append(self.mmd2().item())
                if self.features is not None:
                    fvals.append(self.feature_mmd2().item())
        finally:
            torch.random.set_rng_state(state)
        v = np.asarray(vals)
        out = {
            "mmd2": float(v.mean()),
            "mmd2_std_error": float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0,
            "epsilon": self.epsilon,
            "noise_mean": self.noise.mean,
            "noise_std": self.noise.std,
            "ratio": float(v.mean() / self.epsilon),
        }
        if fvals:
            fv = np.asarray(fvals)
            out.update(
                feature_mmd2=float(fv.mean()),
                feature_mmd2_std_error=float(fv.std(ddof=1) / math.sqrt(len(fv))) if len(fv) > 1 else 0.0,
                feature_epsilon=self.feature_epsilon,
                feature_noise_std=self.feature_noise.std,
                feature_ratio=float(fv.mean() / self.feature_epsilon),
            )
        return out


class MorphingValidation:
    """Model selection on events the training never sees: the score of the current map on fixed validation sets.

    ``score = MMD²(morphed MC, data)/ε + MMD²_F/ε_F`` on the whole validation sets (at most ``max_events`` of each,
    a fixed subsample), with the objective's kernels, standardisation and batch noise floors (so the score is on
    the same scale as the constraints; ``ε_F`` only with derived features).  Deterministic: spikes are dequantised
    with a fixed generator, so a resumed run scores exactly like an uninterrupted one.
    """

    def __init__(
        self,
        objective: MorphingObjective,
        mc: Any,
        data: Any,
        mc_weights: Any = None,
        data_weights: Any = None,
        max_events: int = 2000,
        seed: int = 0,
    ):
        model = objective.model
        x_mc, c_mc = model.inputs(mc)
        x_d, c_d = model.inputs(data)
        rng = np.random.default_rng(seed)
        pick_mc = np.sort(rng.permutation(len(x_mc))[:max_events])
        pick_d = np.sort(rng.permutation(len(x_d))[:max_events])
        w_mc = _weights(mc_weights, len(x_mc), "validation mc_weights", x_mc)
        w_d = _weights(data_weights, len(x_d), "validation data_weights", x_d)
        self.w_mc = None if w_mc is None else w_mc[pick_mc]
        self.w_data = None if w_d is None else w_d[pick_d]
        x_mc, x_d = x_mc[pick_mc], x_d[pick_d]
        c_mc = None if c_mc is None else c_mc[pick_mc]
        c_d = None if c_d is None else c_d[pick_d]
        gen = torch.Generator(device=x_mc.device).manual_seed(seed)
        with torch.no_grad():
            self.y_mc, self.c_mc = model.preprocess(x_mc, c_mc, gen)
            y_d, c_dt = model.preprocess(x_d, c_d, gen)
            f_d = objective.derived_features(x_d, c_d) if objective.features is not None else None
        self.c_mc_physical = c_mc
        self.data_joint = objective._joint(y_d, c_dt, f_d)
        self.f_data = f_d
        self.objective = objective

    @torch.no_grad()
    def score(self) -> dict[str, float]:
        """``{"score", "ratio", "feature_ratio"}`` of the objective's model as it is now (eval mode inside)."""
        obj, model = self.objective, self.objective.model
        was_training = model.training
        model.eval()
        try:
            y_new, _ = model(self.y_mc, self.c_mc)
            f_new = None
            if obj.features is not None:
                f_new = obj.derived_features(model.x_pre.inverse(y_new), self.c_mc_physical)
            joint = obj._joint(y_new, self.c_mc, f_new)
            out = {"ratio": mmd2(joint, self.data_joint, obj.kernel, self.w_mc, self.w_data).item() / obj.epsilon}
            score = out["ratio"]
            if f_new is not None:
                fm = mmd2(f_new, self.f_data, obj.feature_kernel, self.w_mc, self.w_data).item()
                out["feature_ratio"] = fm / obj.feature_epsilon
                score += out["feature_ratio"]
        finally:
            model.train(was_training)
        return {"score": float(score), **out}


@dataclass
class MorphingResult:
    """Output of :func:`fit_morphing`: the trained model, the objective, the trainer and its history."""

    model: MorphingFlow
    objective: MorphingObjective
    trainer: Trainer
    final: dict[str, float] = field(default_factory=dict)
    validation: list[dict[str, float]] = field(default_factory=list)
    best_step: int | None = None

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.trainer.history

    @property
    def multipliers(self) -> np.ndarray:
        """``λ`` at each logged step."""
        return np.array([r["mmd/lambda"] for r in self.history])

    @property
    def satisfied(self) -> bool:
        """The averaged MMD² (and that of the derived features, if constrained) is within ε up to two standard
        errors (and the noise-floor uncertainty)."""
        f = self.final
        ok = f["mmd2"] <= f["epsilon"] + 2.0 * math.hypot(f["mmd2_std_error"], f["noise_std"] / math.sqrt(200))
        if "feature_mmd2" in f and "mmd_derived" in self.trainer.constraints:
            tol = 2.0 * math.hypot(f["feature_mmd2_std_error"], f["feature_noise_std"] / math.sqrt(200))
            ok = ok and f["feature_mmd2"] <= f["feature_epsilon"] + tol
        return ok


def fit_morphing(
    model: MorphingFlow,
    mc: Any,
    data: Any,
    mc_context: Any = None,
    data_context: Any = None,
    mc_weights: Any = None,
    data_weights: Any = None,
    steps: int = 2000,
    batch_size: int = 1024,
    lr: float = 2e-3,
    damping: float = 2.0,
    multiplier_lr: float = 0.1,
    epsilon: str | float = "mean",
    scales: Sequence[float] = (0.5, 1.0, 2.0),
    schedule: str = "cosine",
    log_path: str | os.PathLike | None = None,
    progress: bool = False,
    seed: int = 0,
    n_eval_batches: int = 50,
    callback: Callable[[Trainer], None] | None = None,
    mmd_features: FeatureFn | None = None,
    feature_weight: float = 1.0,
    derived_constraint: bool = True,
    validation: tuple[Any, Any] | None = None,
    validation_weights: tuple[Any, Any] | None = None,
    validate_every: int = 100,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
) -> MorphingResult:
    """Train ``model`` by MDMM: minimise the transport cost subject to ``MMD²/ε ≤ 1`` (see the module docstring).

    The Trainer logs ``loss/transport``, ``mmd/g`` (= MMD²/ε − 1), ``mmd/value`` (= MMD²/ε) and ``mmd/lambda`` every
    step (to ``log_path`` as JSON lines if given).  At the end the constraint is evaluated on ``n_eval_batches``
    fresh minibatch pairs (``result.final``, ``result.satisfied``).  ``mmd_features``/``feature_weight``: derived
    physical features added to the MMD constraint (:class:`MorphingObjective`); with ``derived_constraint`` they
    also get a constraint of their own, ``MMD²_F/ε_F ≤ 1`` on the features alone (own kernel and noise floor,
    logged as ``mmd_derived/*``), because a narrow observable (a mass peak) barely moves the joint MMD in many
    dimensions.  ``validation = (mc, data)``: events kept out of training (physical, like ``mc``/``data``, context
    columns inside mappings) scored every ``validate_every`` steps (:class:`MorphingValidation`); the parameters of
    the best-scoring step are kept (``result.best_step``, scores in ``result.validation``) -- with small samples the
    flow otherwise learns the fluctuations of the training events.  ``checkpoint_path``/
    ``checkpoint_every``: resumable trainer checkpoints (:meth:`Trainer.save_checkpoint`); with ``resume`` and an
    existing checkpoint the run continues from it and ends with the parameters of an uninterrupted run.
    """
    torch.manual_seed(seed)
    if mmd_features is None:  # the model's own derived observables (MorphingFlow(derived=...)), if any
        mmd_features = model.feature_fn()
    objective = MorphingObjective(
        model, mc, data, mc_context, data_context, mc_weights, data_weights, batch_size, scales, epsilon, seed=seed,
        mmd_features=mmd_features, feature_weight=feature_weight,
    )  # fmt: skip
    constraints = {"mmd": objective.constraint(damping=damping, lr=multiplier_lr)}
    if mmd_features is not None and derived_constraint:
        constraints["mmd_derived"] = objective.feature_constraint(damping=damping, lr=multiplier_lr)
    trainer = Trainer(
        model,
        {"transport": objective.transport},
        constraints=constraints,
        lr=lr,
        schedule=schedule,
        total_steps=steps,
        log_path=log_path,
        progress=progress,
        checkpoint_path=checkpoint_path,
        checkpoint_every=checkpoint_every,
    )
    if resume and checkpoint_path is not None and Path(checkpoint_path).is_file():
        trainer.load_checkpoint(checkpoint_path)
    scores: list[dict[str, float]] = []
    best: dict[str, Any] = {"step": None, "score": math.inf, "state": None}
    if validation is None:
        trainer.train(steps - trainer.step)
    else:
        vw = validation_weights or (None, None)
        checker = MorphingValidation(objective, validation[0], validation[1], vw[0], vw[1], seed=seed)
        record = None if checkpoint_path is None else Path(f"{checkpoint_path}.best")
        if resume and record is not None and record.is_file():
            scores, best = _load_best(record, trainer.step)
        every = max(int(validate_every), 1)
        while True:
            if trainer.step % every == 0 or trainer.step == steps:
                if not scores or scores[-1]["step"] < trainer.step:
                    entry = {"step": trainer.step, **checker.score()}
                    scores.append(entry)
                    if entry["score"] < best["score"]:
                        best = {"step": trainer.step, "score": entry["score"], "state": _copy_state(model)}
                    if record is not None:
                        save_checkpoint(record, "morphing_validation", {"scores": scores, **best})
            if trainer.step >= steps:
                break
            trainer.train(min(every - trainer.step % every, steps - trainer.step))
        if best["state"] is None:  # only after an inconsistent resume: keep the final parameters
            warnings.warn("validation: the best state was not recorded; keeping the final parameters", stacklevel=2)
        else:
            model.load_state_dict(best["state"])
    if callback is not None:
        callback(trainer)
    model.eval()
    final = objective.evaluate(n_eval_batches) if n_eval_batches > 0 else {}
    return MorphingResult(model, objective, trainer, final, scores, best["step"])


def _copy_state(model: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _load_best(path: Path, step: int) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """Validation record of an interrupted run, cut to the steps up to the resumed ``step`` (later ones are
    replayed exactly).  If the recorded best lies beyond ``step`` its state is dropped: the replay finds it again."""
    blob = load_checkpoint(path, "morphing_validation")
    scores = [dict(e) for e in blob["scores"] if e["step"] <= step]
    if blob["step"] is not None and blob["step"] <= step:
        return scores, {"step": blob["step"], "score": blob["score"], "state": blob["state"]}
    kept = min(scores, key=lambda e: e["score"], default=None)
    return scores, {
        "step": None if kept is None else kept["step"],
        "score": math.inf if kept is None else kept["score"],
        "state": None,
    }
