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
  ``P⁻¹`` and ``F``.  The kernel bandwidth and ε are computed on the same joint features.

Identity at initialisation: every conditioner's last layer starts at zero (transformer parameters zero = identity)
and the chain ends with the permutation that undoes the accumulated ones.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

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
    ):
        from .expressions import parse_derived

        super().__init__(names, context_names, kinds, context_kinds)
        self.flow = self._build_flow("iaf", transformer, n_layers, hidden, n_bins, bound, scale_bound, seed)
        self.derived = parse_derived(derived, self.names + self.context_names)
        self._config["derived"] = {k: e.text for k, e in self.derived.items()}

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
        if mmd_features is not None:
            self._fit_features(x_d, c_d, float(feature_weight))
        joint = self._joint(self.y_data, self.c_data, self.f_data)
        self.kernel = MultiScaleRBF.from_data(joint, scales=scales, seed=seed)
        self.noise: NoiseFloor = mmd_noise_floor(joint, self.batch_size, n_boot, self.kernel, self.w_data, seed=seed)
        if isinstance(epsilon, str):
            if epsilon not in ("mean", "q95"):
                raise ValueError(f"epsilon must be 'mean', 'q95' or a number, got {epsilon!r}")
            self.epsilon = self.noise.mean if epsilon == "mean" else self.noise.q95
        else:
            self.epsilon = float(epsilon)
        if not self.epsilon > 0:
            raise ValueError(f"epsilon must be positive, got {self.epsilon}")
        self._cache: tuple[Tensor, Tensor | None, Tensor | None, Tensor] | None = None

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
        self._cache = None
        f_new = None
        if self.features is not None:
            c_phys = None if self.c_mc_physical is None else self.c_mc_physical[idx_mc]
            f_new = self.derived_features(self.model.x_pre.inverse(y_new), c_phys)
        idx = self._draw(len(self.y_data))
        c_d = None if self.c_data is None else self.c_data[idx]
        f_d = None if self.f_data is None else self.f_data[idx]
        v = None if self.w_data is None else self.w_data[idx]
        return mmd2(self._joint(y_new, c, f_new), self._joint(self.y_data[idx], c_d, f_d), self.kernel, w, v)

    def relative_mmd2(self) -> Tensor:
        """``MMD² / ε`` (the constraint's value; the bound is 1)."""
        return self.mmd2() / self.epsilon

    def constraint(self, damping: float = 2.0, lr: float = 0.1, init: float = 0.0) -> InequalityConstraint:
        """``MMD²/ε ≤ 1`` as an MDMM inequality constraint."""
        return InequalityConstraint(self.relative_mmd2, bound=1.0, damping=damping, lr=lr, init=init)

    @torch.no_grad()
    def evaluate(self, n_batches: int = 50, seed: int = 1) -> dict[str, float]:
        """Average MMD² over ``n_batches`` fresh (morphed MC, data) minibatch pairs vs ε and the noise floor.

        Returns ``{"mmd2", "mmd2_std_error", "epsilon", "noise_mean", "noise_std", "ratio"}`` (``ratio`` =
        mmd2 / ε; ≤ 1 within the standard error means the constraint holds on average).
        """
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            vals = []
            for _ in range(n_batches):
                self.transport()
                vals.append(self.mmd2().item())
        finally:
            torch.random.set_rng_state(state)
        v = np.asarray(vals)
        return {
            "mmd2": float(v.mean()),
            "mmd2_std_error": float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0,
            "epsilon": self.epsilon,
            "noise_mean": self.noise.mean,
            "noise_std": self.noise.std,
            "ratio": float(v.mean() / self.epsilon),
        }


@dataclass
class MorphingResult:
    """Output of :func:`fit_morphing`: the trained model, the objective, the trainer and its history."""

    model: MorphingFlow
    objective: MorphingObjective
    trainer: Trainer
    final: dict[str, float] = field(default_factory=dict)

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.trainer.history

    @property
    def multipliers(self) -> np.ndarray:
        """``λ`` at each logged step."""
        return np.array([r["mmd/lambda"] for r in self.history])

    @property
    def satisfied(self) -> bool:
        """The averaged MMD² is within ε up to two standard errors (and the noise-floor uncertainty)."""
        f = self.final
        tol = 2.0 * math.hypot(f["mmd2_std_error"], f["noise_std"] / math.sqrt(200))
        return f["mmd2"] <= f["epsilon"] + tol


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
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
) -> MorphingResult:
    """Train ``model`` by MDMM: minimise the transport cost subject to ``MMD²/ε ≤ 1`` (see the module docstring).

    The Trainer logs ``loss/transport``, ``mmd/g`` (= MMD²/ε − 1), ``mmd/value`` (= MMD²/ε) and ``mmd/lambda`` every
    step (to ``log_path`` as JSON lines if given).  At the end the constraint is evaluated on ``n_eval_batches``
    fresh minibatch pairs (``result.final``, ``result.satisfied``).  ``mmd_features``/``feature_weight``: derived
    physical features added to the MMD constraint (:class:`MorphingObjective`). ``checkpoint_path``/
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
    constraint = objective.constraint(damping=damping, lr=multiplier_lr)
    trainer = Trainer(
        model,
        {"transport": objective.transport},
        constraints={"mmd": constraint},
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
    trainer.train(steps - trainer.step)
    if callback is not None:
        callback(trainer)
    model.eval()
    final = objective.evaluate(n_eval_batches) if n_eval_batches > 0 else {}
    return MorphingResult(model, objective, trainer, final)
