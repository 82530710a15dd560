"""Flow quantile morphing: conditional density flows for MC and for data, ``x' = T_data⁻¹(T_MC(x | c) | c)``.

Each sample gets its own conditional normalizing flow ``T: x ↦ z`` (a masked autoregressive chain in MAF mode, so
density evaluation is one pass) with a standard normal latent, trained by maximum likelihood
(:class:`~bgflow_sci.training.MaximumLikelihood` on a :class:`~bgflow_sci.DensityModel`, the package's prior + flow
density model).  ``T_MC(· | c)`` maps MC at kinematics ``c`` to N(0, I) and ``T_data⁻¹(· | c)`` maps
N(0, I) to data at the same ``c``, so the composition transports the MC conditional onto the data conditional: the
multivariate generalisation of 1D conditional quantile mapping (in 1D with a monotone ``T`` it is exactly
``Q_data(F_MC(x | c) | c)``).  Unlike the MDMM morphing it is not the *minimal* such map: it is whatever the two
flows' latent parameterisations happen to align (Knothe–Rosenblatt-like for autoregressive flows).

Both flows share one :class:`~bgflow_sci.hep.preprocessing.PhysicsPreprocessor` (fitted on MC), so their
densities live in the same coordinates -- needed for the density ratio in :mod:`bgflow_sci.hep.event_weights`.
``log_prob`` reports densities of the *physical* variables, ``log q(x) = log q_y(P(x)) + log|det ∂P/∂x|``; spike
columns are dequantised first and contribute the density of the dequantised value (no Jacobian).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..bg import DensityModel
from ..distributions import Normal
from ..io.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from ..training.losses import MaximumLikelihood
from ..training.trainer import Trainer
from .variable_model import VariableModel, _weights

__all__ = ["ConditionalDensityFlow", "FlowQuantileMorpher"]


class _WeightedMaximumLikelihood(MaximumLikelihood):
    """``Σ_b w_b (−log q(x_b | c_b)) / Σ_b w_b`` over a uniformly drawn minibatch (per-event weights)."""

    def __init__(self, model, data: Tensor, weights: Tensor, batch_size: int = 256, context: Tensor | None = None):
        super().__init__(model, data, batch_size, context)
        self.weights = weights

    def __call__(self) -> Tensor:
        idx = torch.randint(len(self.data), (self.batch_size,), device=self.data.device)
        ctx = None if self.context is None else self.context[idx]
        w = self.weights[idx]
        return -(w * self.model.log_prob(self.data[idx], ctx)).sum() / w.sum()


def _normalised(w: Any, n: int) -> np.ndarray:
    """``|w|`` (ones for ``None``) normalised to total 1, shape ``(n,)``."""
    w = np.ones(n) if w is None else np.abs(np.asarray(torch.as_tensor(w).detach().cpu(), np.float64))
    if w.shape != (n,) or not w.sum() > 0:
        raise ValueError(f"weights must have shape ({n},) with a positive total")
    return w / w.sum()


class ConditionalDensityFlow(VariableModel):
    """Conditional density ``q(x | c)`` of named physics variables: preprocessing + MAF chain + N(0, I) latent.

    Args: as :class:`~bgflow_sci.hep.morphing.MorphingFlow` (``transformer`` defaults to ``"spline"``).
    ``self.model`` is the :class:`~bgflow_sci.DensityModel` ``(prior, flow)`` in preprocessed coordinates.
    """

    def __init__(
        self,
        names: Sequence[str],
        context_names: Sequence[str] = (),
        kinds: Sequence[Any] | None = None,
        context_kinds: Sequence[Any] | None = None,
        transformer: str = "spline",
        n_layers: int = 4,
        hidden: Sequence[int] = (64, 64),
        n_bins: int = 8,
        bound: float = 5.0,
        scale_bound: float = 3.0,
        seed: int = 0,
    ):
        super().__init__(names, context_names, kinds, context_kinds)
        flow = self._build_flow("maf", transformer, n_layers, hidden, n_bins, bound, scale_bound, seed)
        self.model = DensityModel(Normal(self.dim), flow)

    def config(self) -> dict[str, Any]:  # noqa: D102
        return dict(self._config)

    @property
    def flow(self):
        return self.model.flow

    def log_prob(
        self,
        x: Any,
        context: Any = None,
        names: Sequence[str] | None = None,
        context_names: Sequence[str] | None = None,
        seed: int = 0,
    ) -> Tensor:
        """``log q(x | c)`` ``(n,)`` of physical values (see the module docstring for spikes)."""
        xt, ct = self.inputs(x, context, names, context_names)
        gen = torch.Generator(device=xt.device).manual_seed(seed)
        y, c = self.preprocess(xt, ct, gen)
        return self.model.log_prob(y, c) + self.x_pre.log_abs_det_jacobian(xt)

    def to_latent(self, x: Tensor, context: Tensor | None, generator: torch.Generator | None = None) -> Tensor:
        """``z = T(x | c)`` for physical tensors (checked shapes)."""
        y, c = self.preprocess(x, context, generator)
        return self.flow.inverse(y, c)[0]

    def from_latent(self, z: Tensor, context: Tensor | None) -> Tensor:
        """``x = T⁻¹(z | c)`` in physical values."""
        c = None if self.c_pre is None else self.c_pre(context)
        return self.x_pre.inverse(self.flow(z, c)[0])

    def fit(
        self,
        x: Any,
        context: Any = None,
        weights: Any = None,
        steps: int = 2000,
        batch_size: int = 512,
        lr: float = 2e-3,
        schedule: str = "cosine",
        log_path: str | os.PathLike | None = None,
        progress: bool = False,
        seed: int = 0,
    ) -> list[dict[str, Any]]:
        """Maximum likelihood on physical ``x (n, d)`` with ``context (n, k)``; fits the preprocessing first if it
        is not fitted.  The spikes are dequantised once (fixed ``seed``).  Returns the Trainer history."""
        xt, ct = self.inputs(x, context)
        if len(xt) == 0:
            raise ValueError("empty selection: no events to fit")
        w = _weights(weights, len(xt), "weights", xt)
        if not bool(self.x_pre.fitted):
            self.fit_preprocessing(xt, ct, w, seed=seed)
        gen = torch.Generator(device=xt.device).manual_seed(seed)
        with torch.no_grad():
            y, c = self.preprocess(xt, ct, gen)
        torch.manual_seed(seed)
        loss = (
            MaximumLikelihood(self.model, y, batch_size, c)
            if w is None
            else _WeightedMaximumLikelihood(self.model, y, w, batch_size, c)
        )
        trainer = Trainer(
            self, {"nll": loss}, lr=lr, schedule=schedule, total_steps=steps, log_path=log_path, progress=progress
        )
        trainer.train(steps)
        self.eval()
        return trainer.history


class FlowQuantileMorpher:
    """``x' = T_data⁻¹(T_MC(x | c) | c)`` with two :class:`ConditionalDensityFlow` s sharing their preprocessing.

    Args:
        names, context_names, kinds, context_kinds, **flow_kwargs: passed to both density flows.
    """

    def __init__(
        self,
        names: Sequence[str],
        context_names: Sequence[str] = (),
        kinds: Sequence[Any] | None = None,
        context_kinds: Sequence[Any] | None = None,
        **flow_kwargs: Any,
    ):
        self.mc = ConditionalDensityFlow(names, context_names, kinds, context_kinds, **flow_kwargs)
        self.data = ConditionalDensityFlow(names, context_names, kinds, context_kinds, **flow_kwargs)

    @classmethod
    def from_models(cls, mc: ConditionalDensityFlow, data: ConditionalDensityFlow) -> FlowQuantileMorpher:
        """Wrap two trained density flows (same variables and preprocessing required)."""
        if mc.names != data.names or mc.context_names != data.context_names:
            raise ValueError(
                f"mismatched variables: {mc.names}|{mc.context_names} vs {data.names}|{data.context_names}"
            )
        out = cls.__new__(cls)
        out.mc, out.data = mc, data
        return out

    @property
    def names(self) -> list[str]:
        return self.mc.names

    @property
    def context_names(self) -> list[str]:
        return self.mc.context_names

    def fit(
        self,
        mc: Any,
        data: Any,
        mc_context: Any = None,
        data_context: Any = None,
        mc_weights: Any = None,
        data_weights: Any = None,
        seed: int = 0,
        pooled_preprocessing: bool = False,
        **train_kwargs: Any,
    ) -> FlowQuantileMorpher:
        """Fit the shared preprocessing, then each flow by maximum likelihood (``train_kwargs`` to
        :meth:`ConditionalDensityFlow.fit`).

        The preprocessing is fitted on MC (morphing maps MC events, so MC defines the range), or with
        ``pooled_preprocessing`` on MC and data pooled, each normalised to the same total weight (density ratios:
        the tails of *both* samples stay inside the splines' range). Either way both flows share it, so their
        Jacobians cancel exactly in a ratio.
        """
        xm, cm = self.mc.inputs(mc, mc_context)
        if pooled_preprocessing:
            xd, cd = self.data.inputs(data, data_context)
            if len(xm) == 0 or len(xd) == 0:
                raise ValueError(f"empty selection: {len(xm)} MC and {len(xd)} data events")
            pooled_w = np.concatenate([_normalised(mc_weights, len(xm)), _normalised(data_weights, len(xd))])
            pooled_c = None if cm is None else torch.cat([cm, cd.to(cm)])
            self.mc.fit_preprocessing(torch.cat([xm, xd.to(xm)]), pooled_c, pooled_w, seed=seed)
            data, data_context = xd, cd
        else:
            wm = _weights(mc_weights, len(xm), "mc_weights", xm) if len(xm) else None
            if len(xm) == 0:
                raise ValueError("empty selection: no MC events")
            self.mc.fit_preprocessing(xm, cm, wm, seed=seed)
        self.data.copy_preprocessing(self.mc)
        self.mc.fit(xm, cm, mc_weights, seed=seed, **train_kwargs)
        self.data.fit(data, data_context, data_weights, seed=seed + 1, **train_kwargs)
        return self

    def morph(
        self,
        x: Any,
        context: Any = None,
        names: Sequence[str] | None = None,
        context_names: Sequence[str] | None = None,
        batch_size: int = 65536,
        seed: int = 0,
    ) -> Any:
        """Corrected physical values (same input/output conventions as :meth:`MorphingFlow.morph`)."""
        xt, ct = self.mc.inputs(x, context, names, context_names)
        gen = torch.Generator(device=xt.device).manual_seed(seed)
        outs = []
        with torch.no_grad():
            for s in range(0, len(xt), batch_size):
                c = None if ct is None else ct[s : s + batch_size]
                z = self.mc.to_latent(xt[s : s + batch_size], c, gen)
                outs.append(self.data.from_latent(z, c))
        out = torch.cat(outs) if outs else xt.clone()
        if isinstance(x, Mapping):
            arr = out.double().cpu().numpy()
            return {n: arr[:, j] for j, n in enumerate(self.names)}
        return out if isinstance(x, Tensor) else out.double().cpu().numpy()

    def save(self, path: str | os.PathLike) -> Path:
        """Both flows (configs, weights, shared preprocessing, variable names) in one ``"quantile_morpher"``
        checkpoint (:mod:`bgflow_sci.io`)."""
        blob = {
            k: {"config": m.config(), "state_dict": m.state_dict()} for k, m in (("mc", self.mc), ("data", self.data))
        }
        return save_checkpoint(path, "quantile_morpher", blob)

    @classmethod
    def load(cls, path: str | os.PathLike) -> FlowQuantileMorpher:
        """Inverse of :meth:`save` (``weights_only``; a corrupt or foreign file raises
        :class:`~bgflow_sci.io.CheckpointError` naming it)."""
        try:
            blob = load_checkpoint(path, "quantile_morpher")
        except CheckpointError as err:
            raise CheckpointError(f"{err} (not a FlowQuantileMorpher written by FlowQuantileMorpher.save)") from err
        models = []
        for k in ("mc", "data"):
            m = ConditionalDensityFlow(**blob[k]["config"])
            m.load_state_dict(blob[k]["state_dict"])
            m.eval()
            models.append(m)
        return cls.from_models(*models)
