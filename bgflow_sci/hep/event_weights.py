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
(:func:`clip_weights`) and normalised; the Kish ESS (:func:`bgflow_sci.reweighting.ess` of the log weights,
``ess(torch.log(torch.as_tensor(w)))`` for non-negative weights ``w``) and a χ²/ndf of the reweighted histograms
against data (:func:`histogram_chi2`) summarise the result.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..training.trainer import Trainer
from .preprocessing import PhysicsPreprocessor
from .quantile_flow import ConditionalDensityFlow, FlowQuantileMorpher

__all__ = [
    "ClassifierReweighter",
    "clip_weights",
    "density_ratio_log_weights",
    "fit_ratio_flows",
    "histogram_chi2",
]


def fit_ratio_flows(
    flows: FlowQuantileMorpher,
    mc: Any,
    data: Any,
    mc_context: Any = None,
    data_context: Any = None,
    mc_weights: Any = None,
    data_weights: Any = None,
    seed: int = 0,
    **train_kwargs: Any,
) -> FlowQuantileMorpher:
    """Fit the two flows of :func:`density_ratio_log_weights`: one preprocessing fitted on the *pooled* MC + data
    sample (each normalised to the same total weight), then each flow by maximum likelihood (``train_kwargs`` to
    :meth:`~bgflow_sci.hep.quantile_flow.ConditionalDensityFlow.fit`).

    The shared preprocessing makes the Jacobians cancel exactly in the ratio; fitting it on both samples (rather
    than on MC, :meth:`FlowQuantileMorpher.fit`'s default for morphing) keeps the tails of *both* samples in the
    splines' range, where both densities are modelled rather than extrapolated.  Use tail-compressing kinds
    (``"log"``, ``"logit"``, ``"spike_asinh"``) for heavy tails.  Returns ``flows``.
    """
    args = (mc, data, mc_context, data_context, mc_weights, data_weights)
    return flows.fit(*args, seed=seed, pooled_preprocessing=True, **train_kwargs)


def density_ratio_log_weights(
    mc_model: ConditionalDensityFlow,
    data_model: ConditionalDensityFlow,
    x: Any,
    context: Any = None,
    names: Sequence[str] | None = None,
    context_names: Sequence[str] | None = None,
    context_models: tuple[ConditionalDensityFlow, ConditionalDensityFlow] | None = None,
    seed: int = 0,
    n_dequantization: int = 1,
) -> Tensor:
    """``log q_data(x | c) − log q_MC(x | c)`` ``(n,)`` (+ the kinematic ratio with ``context_models =
    (mc_context_model, data_context_model)``, unconditional flows over the context variables).

    Spike columns are dequantised ``n_dequantization`` times (draws ``u_k``) and each flow's density is averaged
    over the draws before the ratio, ``log mean_k q_data(x_k) − log mean_k q_MC(x_k)``: a Monte Carlo estimate of the
    ratio of the spike probabilities that is less noisy than a single draw.
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
        if n_dequantization < 1:
            raise ValueError(f"n_dequantization must be >= 1, got {n_dequantization}")
        ld = torch.stack([data_model.log_prob(xt, ct, seed=seed + k) for k in range(n_dequantization)])
        lm = torch.stack([mc_model.log_prob(xt, ct, seed=seed + k) for k in range(n_dequantization)])
        lw = torch.logsumexp(ld, 0) - torch.logsumexp(lm, 0)
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


def histogram_chi2(
    mc: Any,
    data: Any,
    mc_weights: Any = None,
    data_weights: Any = None,
    bins: int = 40,
    quantiles: tuple[float, float] = (0.005, 0.995),
    n_bootstrap: int | None = None,
    min_count: float = 10.0,
    binning: str = "uniform",
) -> dict[str, Any]:
    """χ² test of a (weighted) MC histogram against the data histogram of one variable.

    Bins between the ``quantiles`` of data: ``binning="uniform"``: ``bins`` equal widths; ``"quantile"``: edges at
    ``bins + 1`` equally spaced data quantiles (equiprobable bins, each holding ≈ 1/bins of data, so that every bin
    has enough MC events for the normal approximation even where the weights are large; coinciding edges, e.g. at a
    spike, are merged, so there can be fewer bins).  Per bin ``k``, with ``W_k = Σ w`` and
    ``V_k = Σ w²`` over the MC events in it (``D_k``, ``E_k`` likewise for data; unweighted: ``D_k`` = count =
    ``E_k``), MC is normalised to the data total ``s = Σ_k D_k / Σ_k W_k`` over the used bins (those with at
    least ``min_count`` data events) and

        χ² = Σ_k (s W_k − D_k)² / (s² V_k + E_k),   ndf = (number of used bins) − 1,

    i.e. Poisson errors of data and ``sqrt(Σw²)`` errors of the weighted MC (the weighted-vs-unweighted test of
    Gagunashvili, arXiv:physics/0605123, in its normal approximation; ``n_bootstrap`` is ignored, kept for
    compatibility).  Returns ``{"chi2", "ndf", "chi2_ndf", "p_value", "edges", "mc", "mc_err", "data",
    "data_err"}`` (the last four: normalised densities and their errors per bin, ``nan`` in unused bins).
    """
    from scipy.stats import chi2 as chi2_dist

    def prep(x, w, what):
        x = np.asarray(x.detach().cpu().numpy() if isinstance(x, Tensor) else x, np.float64).reshape(-1)
        w = np.ones_like(x) if w is None else np.asarray(w.detach().cpu() if isinstance(w, Tensor) else w, np.float64)
        if w.shape != x.shape:
            raise ValueError(f"{what} weights must have shape ({len(x)},), got {w.shape}")
        if (w < 0).any():
            raise ValueError("histogram_chi2 needs non-negative weights")
        ok = np.isfinite(x) & np.isfinite(w)
        return x[ok], w[ok]

    xm, wm = prep(mc, mc_weights, "mc")
    xd, wd = prep(data, data_weights, "data")
    if len(xm) == 0 or len(xd) == 0:
        raise ValueError(f"empty selection: {len(xm)} MC and {len(xd)} data values")
    if binning not in ("uniform", "quantile"):
        raise ValueError(f"binning must be 'uniform' or 'quantile', got {binning!r}")
    if int(bins) < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    lo, hi = np.quantile(xd, quantiles)
    if binning == "quantile" and hi > lo:
        edges = np.unique(np.quantile(xd, np.linspace(quantiles[0], quantiles[1], int(bins) + 1)))
    else:
        if not hi > lo:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, int(bins) + 1)
    sw, _ = np.histogram(xm, edges, weights=wm)
    sw2, _ = np.histogram(xm, edges, weights=wm * wm)
    d, _ = np.histogram(xd, edges, weights=wd)
    d2, _ = np.histogram(xd, edges, weights=wd * wd)
    counts, _ = np.histogram(xd, edges)
    use = counts >= min_count
    if not use.any() or not sw[use].sum() > 0:
        raise ValueError("no bin has enough data events (or MC weight) for the χ² test")
    s = d[use].sum() / sw[use].sum()
    var = s * s * sw2 + d2
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(var > 0, (s * sw - d) ** 2 / var, 0.0)
    chi2 = float(terms[use].sum())
    ndf = int(use.sum()) - 1
    norm = d[use].sum() * np.diff(edges)
    nan = np.where(use, 1.0, np.nan)
    return {
        "chi2": chi2,
        "ndf": ndf,
        "chi2_ndf": chi2 / max(ndf, 1),
        "p_value": float(chi2_dist.sf(chi2, ndf)) if ndf > 0 else float("nan"),
        "edges": edges,
        "mc": nan * s * sw / norm,
        "mc_err": nan * s * np.sqrt(sw2) / norm,
        "data": nan * d / norm,
        "data_err": nan * np.sqrt(d2) / norm,
    }


def _feature_kinds(kinds: Sequence[Any]) -> tuple[list[Any], list[tuple[int, float]]]:
    """Classifier features: spike columns (``"spike"``, ``"spike_asinh"``) stay linear (``"identity"``) and get an
    indicator ``x == at`` appended."""
    pre, spikes = [], []
    for j, k in enumerate(kinds):
        name = k if isinstance(k, str) else k[0]
        if name in ("spike", "spike_asinh"):
            spikes.append((j, float(k[1]) if not isinstance(k, str) and len(k) > 1 else 0.0))
            pre.append("identity")
        else:
            pre.append(k)
    return pre, spikes


class ClassifierReweighter(nn.Module):
    """MLP ``s(x, c)`` with ``w = exp(s) = p / (1 − p)`` from a class-balanced classifier (see module docstring).

    Args:
        n_features: input width (variables and context concatenated).
        hidden: hidden widths.
        kinds: optional per-column :class:`~bgflow_sci.hep.preprocessing.PhysicsPreprocessor` kinds of the features
            (``"log"`` momenta, ``"logit"`` bounded variables, ...); a ``"spike"`` column is kept linear and gets an
            extra indicator feature ``x == at``, so the ratio of the spike probabilities is a free step.  Without
            ``kinds`` the inputs are only standardised.
        n_models: ensemble size.  Member ``k`` is trained on all events but the ``k``-th of ``n_models`` random folds
            (with ``n_models = 1`` and a ``validation_fraction``, on all but that fraction), early-stopped on the
            held-out fold's balanced cross-entropy; the ensemble logit is the mean of the members' logits.
    """

    def __init__(
        self, n_features: int, hidden: Sequence[int] = (64, 64), kinds: Sequence[Any] | None = None, n_models: int = 1
    ):
        super().__init__()
        if n_features < 1 or n_models < 1:
            raise ValueError(f"n_features and n_models must be >= 1, got {n_features}, {n_models}")
        self.n_features = int(n_features)
        self.pre: PhysicsPreprocessor | None = None
        self._spikes: list[tuple[int, float]] = []
        if kinds is not None:
            if len(kinds) != n_features:
                raise ValueError(f"{len(kinds)} kinds for {n_features} features")
            pre, self._spikes = _feature_kinds(kinds)
            self.pre = PhysicsPreprocessor(pre)
        width0 = n_features + len(self._spikes)
        nets = []
        for _ in range(n_models):
            layers: list[nn.Module] = []
            width = width0
            for h in hidden:
                layers += [nn.Linear(width, h), nn.SiLU()]
                width = h
            nets.append(nn.Sequential(*layers, nn.Linear(width, 1)))
        self.nets = nn.ModuleList(nets)
        self.register_buffer("mean", torch.zeros(width0))
        self.register_buffer("std", torch.ones(width0))
        self.history: list[dict[str, float]] = []

    @property
    def net(self) -> nn.Module:
        """The first ensemble member (the only one with ``n_models = 1``)."""
        return self.nets[0]

    def features(self, x: Tensor) -> Tensor:
        """Standardised classifier features ``(n, n_features + number of spike columns)`` of raw inputs ``(n, f)``."""
        if x.dim() != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected inputs of shape (n, {self.n_features}), got {tuple(x.shape)}")
        f = x
        if self.pre is not None:
            f = torch.cat([self.pre(x)] + [(x[:, j] == at).to(x)[:, None] for j, at in self._spikes], 1)
        return (f - self.mean.to(x)) / self.std.to(x)

    def forward(self, x: Tensor, member: int | None = None) -> Tensor:
        """The logit ``s = log(p/(1 − p))`` ``(n,)``: ensemble mean, or one ``member``."""
        f = self.features(x)
        if member is not None:
            return self.nets[member](f).squeeze(-1)
        return torch.stack([net(f).squeeze(-1) for net in self.nets]).mean(0)

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
        validation_fraction: float = 0.0,
        eval_every: int = 100,
    ) -> ClassifierReweighter:
        """Train on MC ``(n, f)`` (label 0) and data ``(m, f)`` (label 1); each minibatch has ``batch_size`` events
        of each class, the per-event weights normalised within the class (the balanced loss).

        Each member runs ``steps`` steps (cosine schedule); with held-out events (``n_models > 1`` or
        ``validation_fraction > 0``) the held-out balanced cross-entropy is evaluated every ``eval_every`` steps and
        the member's best state is kept (early stopping); ``self.history`` records it.
        """
        ref = self.mean
        xm = torch.as_tensor(np.asarray(mc, np.float64)).to(ref)
        xd = torch.as_tensor(np.asarray(data, np.float64)).to(ref)
        f = self.n_features
        if xm.dim() != 2 or xd.dim() != 2 or xm.shape[1] != f or xd.shape[1] != f:
            raise ValueError(f"mc and data must have shape (n, {f}), got {tuple(xm.shape)}, {tuple(xd.shape)}")
        if len(xm) == 0 or len(xd) == 0:
            raise ValueError(f"empty selection: {len(xm)} MC and {len(xd)} data events")
        if not 0 <= validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
        wm = torch.ones(len(xm)).to(ref) if mc_weights is None else torch.as_tensor(np.asarray(mc_weights)).to(ref)
        wd = torch.ones(len(xd)).to(ref) if data_weights is None else torch.as_tensor(np.asarray(data_weights)).to(ref)
        if wm.shape != (len(xm),) or wd.shape != (len(xd),):
            raise ValueError(f"weights must have shapes ({len(xm)},) and ({len(xd)},)")
        pooled = torch.cat([xm, xd])
        if self.pre is not None:
            self.pre.fit(pooled.detach().double().cpu())
        self.mean.zero_()
        self.std.fill_(1.0)
        feats = self.features(pooled)
        self.mean.copy_(feats.mean(0))
        self.std.copy_(feats.std(0).clamp(min=1e-12))
        bce = nn.functional.binary_cross_entropy_with_logits
        n_models = len(self.nets)
        gen = torch.Generator().manual_seed(seed)
        fold_m = torch.randperm(len(xm), generator=gen) % max(n_models, 1)
        fold_d = torch.randperm(len(xd), generator=gen) % max(n_models, 1)
        if n_models == 1:
            fold_m = (torch.rand(len(xm), generator=gen) < validation_fraction).long() - 1  # -1 train, 0 held out
            fold_d = (torch.rand(len(xd), generator=gen) < validation_fraction).long() - 1
        self.history = []

        def balanced(k: int, a: Tensor, b: Tensor, va: Tensor, vb: Tensor) -> Tensor:
            lm = (va * bce(self(a, k), torch.zeros(len(a)).to(ref), reduction="none")).sum() / va.sum()
            ld = (vb * bce(self(b, k), torch.ones(len(b)).to(ref), reduction="none")).sum() / vb.sum()
            return 0.5 * (lm + ld)

        for k in range(n_models):
            tm, td = (fold_m != k).nonzero().squeeze(-1), (fold_d != k).nonzero().squeeze(-1)
            vm, vd = (fold_m == k).nonzero().squeeze(-1), (fold_d == k).nonzero().squeeze(-1)
            if len(tm) == 0 or len(td) == 0:
                raise ValueError("too few events for the training folds")
            held_out = len(vm) > 0 and len(vd) > 0

            def loss(k=k, tm=tm, td=td) -> Tensor:
                im = tm[torch.randint(len(tm), (batch_size,))]
                idd = td[torch.randint(len(td), (batch_size,))]
                return balanced(k, xm[im], xd[idd], wm[im], wd[idd])

            torch.manual_seed(seed + k)
            trainer = Trainer(
                self.nets[k],
                {"bce": loss},
                lr=lr,
                weight_decay=weight_decay,
                schedule="cosine",
                total_steps=steps,
                progress=progress,
            )
            best, best_state, done = math.inf, None, 0
            while done < steps:
                n = min(eval_every if held_out else steps, steps - done)
                trainer.train(n)
                done += n
                if held_out:
                    with torch.no_grad():
                        v = float(balanced(k, xm[vm], xd[vd], wm[vm], wd[vd]))
                    self.history.append({"member": k, "step": done, "val_bce": v})
                    if v < best:
                        best, best_state = v, copy.deepcopy(self.nets[k].state_dict())
            if best_state is not None:
                self.nets[k].load_state_dict(best_state)
        self.eval()
        return self

    def log_weights(self, x: Any, batch_size: int = 65536) -> Tensor:
        """``log w = s(x)`` ``(n,)``."""
        xt = torch.as_tensor(np.asarray(x, np.float64)).to(self.mean)
        with torch.no_grad():
            outs = [self(xt[i : i + batch_size]) for i in range(0, len(xt), batch_size)]
        return torch.cat(outs) if outs else xt.new_zeros(0)
