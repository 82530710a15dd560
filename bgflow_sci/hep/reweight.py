"""Per-event weights that reweight MC to data: flow density ratio, and a classifier as a cross-check.

**Density ratio of two conditional flows.**  With :class:`~bgflow_sci.hep.quantile_flow.ConditionalDensityFlow` s
``q_data(x | c)`` and ``q_MC(x | c)`` (sharing their preprocessing, e.g. the two halves of a trained
:class:`~bgflow_sci.hep.quantile_flow.FlowQuantileMorpher`)

    log w(x, c) = log q_data(x | c) − log q_MC(x | c)  [ + log p_data(c) − log p_MC(c) ]

The bracket is the kinematic marginal ratio, needed only if the kinematics are distributed differently in MC and
data (pass two unconditional density flows over the context as ``context_models``); on samples whose kinematics
agree (the synthetic sample: same generator for both) it is 1 and left out.  Spike columns are dequantised with the
same widths in both flows, so the ratio of the dequantised densities is the ratio of the spike probabilities.

**Classifier.**  A small MLP ``s(x, c)`` trained with the class-balanced binary cross-entropy (data label 1, each
class normalised to the same total weight) converges to ``s = log(p_data / p_MC)`` of the *joint* (x, c), so
``w = p / (1 − p) = exp(s)`` (Cranmer, Pavez, Louppe, arXiv:1506.02169).  It is trained with the package
:class:`~bgflow_sci.training.Trainer`.

Final event weights are ``w_event · w`` (MC generator weights, possibly negative, are kept), optionally clipped
(:func:`clip_weights`) and normalised; the Kish ESS (:func:`bgflow_sci.reweighting.ess`) and a χ²/ndf of the
reweighted histograms against data (:func:`histogram_chi2`) summarise the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..reweighting import ess
from ..reweighting.histogram import reweighted_histogram
from ..training.trainer import Trainer
from .quantile_flow import ConditionalDensityFlow

__all__ = [
    "ClassifierReweighter",
    "clip_weights",
    "density_ratio_log_weights",
    "effective_sample_size",
    "histogram_chi2",
]


def density_ratio_log_weights(
    mc_model: ConditionalDensityFlow,
    data_model: ConditionalDensityFlow,
    x: Any,
    context: Any = None,
    names: Sequence[str] | None = None,
    context_names: Sequence[str] | None = None,
    context_models: tuple[ConditionalDensityFlow, ConditionalDensityFlow] | None = None,
    seed: int = 0,
) -> Tensor:
    """``log q_data(x | c) − log q_MC(x | c)`` ``(n,)`` (+ the kinematic ratio with ``context_models =
    (mc_context_model, data_context_model)``, unconditional flows over the context variables).

    Both flows must use the same variables and preprocessing; a wrong variable list raises ``ValueError``.
    Events with a non-finite log-ratio get ``-inf`` (zero weight).
    """
    if mc_model.names != data_model.names or mc_model.context_names != data_model.context_names:
        raise ValueError(f"mismatched flows: {mc_model.names}|{mc_model.context_names} vs {data_model.names}")
    for a, b in zip(mc_model.x_pre.state_dict().values(), data_model.x_pre.state_dict().values()):
        if not torch.equal(a, b):
            raise ValueError("the two flows must share their preprocessing (FlowQuantileMorpher.fit does this)")
    xt, ct = mc_model.inputs(x, context, names, context_names)
    with torch.no_grad():
        lw = data_model.log_prob(xt, ct, seed=seed) - mc_model.log_prob(xt, ct, seed=seed)
        if context_models is not None:
            cm, cd = context_models
            if ct is None or cm.names != mc_model.context_names or cd.names != mc_model.context_names:
                raise ValueError(f"context_models must be density flows over {mc_model.context_names}")
            lw = lw + cd.log_prob(ct, seed=seed) - cm.log_prob(ct, seed=seed)
    return torch.where(torch.isfinite(lw), lw, torch.full_like(lw, -torch.inf))


def clip_weights(
    weights: Any, max_weight: float | None = None, max_quantile: float | None = None, normalize: bool = True
) -> np.ndarray:
    """Clip density-ratio weights ``(n,)`` from above at ``max_weight`` and/or at their ``max_quantile`` quantile
    (e.g. 0.999), then (``normalize``) rescale to mean 1.  Clipping trades a small bias for variance."""
    w = np.asarray(weights.detach().cpu().numpy() if isinstance(weights, Tensor) else weights, dtype=np.float64)
    if w.ndim != 1:
        raise ValueError(f"weights must have shape (n,), got {w.shape}")
    w = np.where(np.isfinite(w), w, 0.0)
    if max_quantile is not None:
        if not 0 < max_quantile <= 1:
            raise ValueError(f"max_quantile must be in (0, 1], got {max_quantile}")
        w = np.minimum(w, np.quantile(w, max_quantile))
    if max_weight is not None:
        w = np.minimum(w, max_weight)
    if normalize and len(w):
        total = w.sum()
        if not total > 0:
            raise ValueError("the weights have no positive total")
        w = w * (len(w) / total)
    return w


def effective_sample_size(weights: Any) -> float:
    """Kish ESS as a fraction of ``n``, ``(Σw)² / (n Σw²)``; non-negative weights go through
    :func:`bgflow_sci.reweighting.ess`, signed ones (negative generator weights) use the formula directly."""
    w = torch.as_tensor(np.asarray(weights.detach().cpu() if isinstance(weights, Tensor) else weights, np.float64))
    if len(w) and (w < 0).any():
        return float(w.sum() ** 2 / (len(w) * (w * w).sum()))
    with np.errstate(divide="ignore"):
        return ess(torch.log(w))


def histogram_chi2(
    mc: Any,
    data: Any,
    mc_weights: Any = None,
    data_weights: Any = None,
    bins: int = 40,
    quantiles: tuple[float, float] = (0.005, 0.995),
    n_bootstrap: int = 100,
    min_count: float = 10.0,
) -> dict[str, Any]:
    """χ² between the (weighted) MC and data normalised histograms of one variable, with bootstrap errors.

    Bins span the ``quantiles`` of data; densities and errors from :func:`bgflow_sci.reweighting.reweighted_histogram`
    (both normalised to unit area over all events); ``χ² = Σ_k (p_MC − p_data)² / (σ_MC² + σ_data²)`` over bins with
    at least ``min_count`` data events; ``ndf`` = number of such bins − 1 (the common normalisation).
    Returns ``{"chi2", "ndf", "chi2_ndf", "edges", "mc", "mc_err", "data", "data_err"}``.
    """

    def prep(x, w):
        x = torch.as_tensor(np.ascontiguousarray(np.asarray(x, np.float64).reshape(-1)))
        if w is None:
            return x, None
        w = torch.as_tensor(np.ascontiguousarray(np.asarray(w, np.float64).reshape(-1)))
        if (w < 0).any():
            raise ValueError("histogram_chi2 needs non-negative weights")
        with np.errstate(divide="ignore"):
            return x, torch.log(w)

    xm, lwm = prep(mc, mc_weights)
    xd, lwd = prep(data, data_weights)
    lo, hi = np.quantile(xd.numpy(), quantiles)
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    gen = torch.Generator().manual_seed(0)
    hm = reweighted_histogram(xm, lwm, bins, (float(lo), float(hi)), n_bootstrap, gen)
    hd = reweighted_histogram(xd, lwd, bins, (float(lo), float(hi)), n_bootstrap, gen)
    counts, _ = np.histogram(xd.numpy(), hm.edges.numpy())
    use = counts >= min_count
    pm, em, pd, ed = (t.numpy() for t in (hm.density, hm.error, hd.density, hd.error))
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = float((((pm - pd) ** 2) / (em**2 + ed**2))[use].sum())
    ndf = int(use.sum()) - 1
    return {
        "chi2": chi2,
        "ndf": ndf,
        "chi2_ndf": chi2 / max(ndf, 1),
        "edges": hm.edges.numpy(),
        "mc": pm,
        "mc_err": em,
        "data": pd,
        "data_err": ed,
    }


class ClassifierReweighter(nn.Module):
    """MLP ``s(x, c)`` with ``w = exp(s) = p / (1 − p)`` from a class-balanced classifier (see module docstring).

    Args:
        n_features: input width (variables and context concatenated).
        hidden: hidden widths.
    """

    def __init__(self, n_features: int, hidden: Sequence[int] = (64, 64)):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.SiLU()]
            width = h
        self.net = nn.Sequential(*layers, nn.Linear(width, 1))
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))

    def forward(self, x: Tensor) -> Tensor:
        """The logit ``s = log(p/(1 − p))`` ``(n,)``."""
        return self.net((x - self.mean.to(x)) / self.std.to(x)).squeeze(-1)

    def fit(
        self,
        mc: Any,
        data: Any,
        mc_weights: Any = None,
        data_weights: Any = None,
        steps: int = 3000,
        batch_size: int = 512,
        lr: float = 2e-3,
        weight_decay: float = 1e-5,
        progress: bool = False,
        seed: int = 0,
    ) -> ClassifierReweighter:
        """Train on MC ``(n, f)`` (label 0) and data ``(m, f)`` (label 1); each minibatch has ``batch_size`` events
        of each class, the per-event weights normalised within the class (the balanced loss)."""
        ref = self.mean
        xm = torch.as_tensor(np.asarray(mc, np.float64)).to(ref)
        xd = torch.as_tensor(np.asarray(data, np.float64)).to(ref)
        if xm.dim() != 2 or xd.dim() != 2 or xm.shape[1] != self.mean.numel() or xd.shape[1] != self.mean.numel():
            raise ValueError(f"mc and data must have shape (n, {self.mean.numel()}), got {xm.shape}, {xd.shape}")
        if len(xm) == 0 or len(xd) == 0:
            raise ValueError(f"empty selection: {len(xm)} MC and {len(xd)} data events")
        wm = torch.ones(len(xm)).to(ref) if mc_weights is None else torch.as_tensor(np.asarray(mc_weights)).to(ref)
        wd = torch.ones(len(xd)).to(ref) if data_weights is None else torch.as_tensor(np.asarray(data_weights)).to(ref)
        pooled = torch.cat([xm, xd])
        self.mean.copy_(pooled.mean(0))
        self.std.copy_(pooled.std(0).clamp(min=1e-12))
        bce = nn.functional.binary_cross_entropy_with_logits

        def loss() -> Tensor:
            im = torch.randint(len(xm), (batch_size,))
            idd = torch.randint(len(xd), (batch_size,))
            a, b = wm[im], wd[idd]
            lm = (a * bce(self(xm[im]), torch.zeros(batch_size).to(ref), reduction="none")).sum() / a.sum()
            ld = (b * bce(self(xd[idd]), torch.ones(batch_size).to(ref), reduction="none")).sum() / b.sum()
            return 0.5 * (lm + ld)

        torch.manual_seed(seed)
        Trainer(
            self,
            {"bce": loss},
            lr=lr,
            weight_decay=weight_decay,
            schedule="cosine",
            total_steps=steps,
            progress=progress,
        ).train(steps)
        self.eval()
        return self

    def log_weights(self, x: Any) -> Tensor:
        """``log w = s(x)`` ``(n,)``."""
        with torch.no_grad():
            return self(torch.as_tensor(np.asarray(x, np.float64)).to(self.mean))
