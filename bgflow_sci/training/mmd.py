"""Maximum mean discrepancy (Gretton et al., JMLR 2012) with multi-scale RBF kernels: a metric and a training loss.

For samples ``x ~ P`` (weights ``w``) and ``y ~ Q`` (weights ``v``), with normalised weights and kernel ``k``

    MMD²  = E_PP k(x, x') + E_QQ k(y, y') − 2 E_PQ k(x, y)

*biased* (V-statistic): all pairs including ``i = j``, ``Σ_ij w_i w_j k_ij / (Σw)²``; ≥ 0, and > 0 in expectation
even for ``P = Q`` (its data-vs-data mean is the noise floor used as the MDMM bound ε).
*unbiased* (U-statistic): the ``i = j`` terms of the within-sample sums are dropped,
``(Σ_ij w_i w_j k_ij − Σ_i w_i² k_ii) / ((Σw)² − Σw²)``; zero in expectation for ``P = Q``, can be negative.  With
equal weights both reduce to the textbook estimators.  Weights may be negative (NLO generator weights) as long as
each sample's total weight is positive.

Kernel: ``k(x, y) = (1/S) Σ_s exp(−|x − y|² / (2 (a_s h)²))`` with scales ``a_s ∈ {0.5, 1, 2}`` and ``h`` the
median pairwise distance of the pooled samples (median heuristic), fixed once (:meth:`MultiScaleRBF.from_data`) when
MMD is a training loss so that the objective does not move with the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "MMDLoss",
    "MultiScaleRBF",
    "NoiseFloor",
    "median_distance",
    "mmd2",
    "mmd_noise_floor",
    "mmd_permutation_test",
]


def _as_tensor(x, name: str, like: Tensor | None = None) -> Tensor:
    if not isinstance(x, Tensor):
        x = torch.as_tensor(np.asarray(x), dtype=torch.float64 if like is None else like.dtype)
        if like is not None:
            x = x.to(like.device)
    if x.dim() == 1:
        x = x[:, None]
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (n, dim) or (n,), got {tuple(x.shape)}")
    return x


def _weights(w, n: int, name: str, like: Tensor) -> Tensor | None:
    if w is None:
        return None
    w = torch.as_tensor(w, dtype=like.dtype, device=like.device) if not isinstance(w, Tensor) else w.to(like)
    if w.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(w.shape)}")
    return w


def median_distance(x: Tensor, y: Tensor | None = None, max_points: int = 2000, seed: int = 0) -> Tensor:
    """Median Euclidean distance between distinct points of the pooled sample (at most ``max_points``, subsampled)."""
    x = _as_tensor(x, "x")
    z = x if y is None else torch.cat([x, _as_tensor(y, "y", like=x)])
    if len(z) < 2:
        raise ValueError(f"median distance needs at least 2 points, got {len(z)}")
    if len(z) > max_points:
        gen = torch.Generator().manual_seed(seed)
        z = z[torch.randperm(len(z), generator=gen)[:max_points].to(z.device)]
    d = torch.cdist(z, z)
    iu = torch.triu_indices(len(z), len(z), offset=1, device=z.device)
    h = torch.quantile(d[iu[0], iu[1]], 0.5)  # the usual median (mean of the two middle values)
    if not torch.isfinite(h) or h <= 0:
        raise ValueError(f"median pairwise distance is {h.item()}; the samples are degenerate or not finite")
    return h


class MultiScaleRBF:
    """``k(x, y) = mean_s exp(−|x − y|² / (2 (a_s h)²))``; ``k(x, x) = 1``.

    Args:
        bandwidth: ``h`` (same units as the data; standardise variables first).
        scales: the factors ``a_s``.
    """

    def __init__(self, bandwidth: float | Tensor, scales: Sequence[float] = (0.5, 1.0, 2.0)):
        bandwidth = float(bandwidth)
        if not (np.isfinite(bandwidth) and bandwidth > 0) or len(scales) == 0 or min(scales) <= 0:
            raise ValueError(f"bandwidth and scales must be positive, got {bandwidth}, {tuple(scales)}")
        self.bandwidth = bandwidth
        self.scales = tuple(float(s) for s in scales)

    @classmethod
    def from_data(cls, x, y=None, scales: Sequence[float] = (0.5, 1.0, 2.0), max_points: int = 2000, seed: int = 0):
        """Median-distance bandwidth of ``x`` (pooled with ``y``)."""
        return cls(median_distance(x, y, max_points, seed), scales)

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """Kernel matrix ``(len(x), len(y))``."""
        d2 = torch.cdist(x, y).square()
        k = sum(torch.exp(-d2 / (2.0 * (s * self.bandwidth) ** 2)) for s in self.scales)
        return k / len(self.scales)

    def __repr__(self) -> str:
        return f"MultiScaleRBF(bandwidth={self.bandwidth:.4g}, scales={self.scales})"


def _mean_kernel(k: Tensor, w: Tensor | None, v: Tensor | None) -> Tensor:
    """``Σ_ij w_i v_j k_ij / (Σw Σv)`` (plain mean without weights)."""
    if w is None and v is None:
        return k.mean()
    w = torch.ones(k.shape[0], dtype=k.dtype, device=k.device) if w is None else w
    v = torch.ones(k.shape[1], dtype=k.dtype, device=k.device) if v is None else v
    return (w @ k @ v) / (w.sum() * v.sum())


def _within(k: Tensor, w: Tensor | None, unbiased: bool) -> Tensor:
    if not unbiased:
        return _mean_kernel(k, w, w)
    n = k.shape[0]
    if w is None:
        return (k.sum() - k.diagonal().sum()) / (n * (n - 1))
    s = w.sum()
    return (w @ k @ w - (w * w * k.diagonal()).sum()) / (s * s - (w * w).sum())


def mmd2(
    x,
    y,
    kernel: MultiScaleRBF | None = None,
    x_weights=None,
    y_weights=None,
    estimator: str = "biased",
) -> Tensor:
    """MMD² between samples ``x (n, d)`` and ``y (m, d)``; differentiable in ``x``, ``y`` and the weights.

    Args:
        kernel: default :meth:`MultiScaleRBF.from_data` on the pooled samples (fix it for training).
        x_weights, y_weights: per-sample weights ``(n,)``, ``(m,)``; totals must be positive.
        estimator: ``"biased"`` (V-statistic, ≥ 0) or ``"unbiased"`` (U-statistic, needs n, m ≥ 2).

    Returns a scalar tensor with ``x``'s dtype and device.
    """
    if estimator not in ("biased", "unbiased"):
        raise ValueError(f"estimator must be 'biased' or 'unbiased', got {estimator!r}")
    x = _as_tensor(x, "x")
    y = _as_tensor(y, "y", like=x)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same number of variables, got {x.shape[1]} and {y.shape[1]}")
    unbiased = estimator == "unbiased"
    need = 2 if unbiased else 1
    if len(x) < need or len(y) < need:
        raise ValueError(f"{estimator} MMD² needs at least {need} samples each, got {len(x)} and {len(y)}")
    w = _weights(x_weights, len(x), "x_weights", x)
    v = _weights(y_weights, len(y), "y_weights", x)
    for name, ww in (("x_weights", w), ("y_weights", v)):
        if ww is not None and not ww.sum() > 0:
            raise ValueError(f"{name} must have a positive total, got {ww.sum().item()}")
    kernel = MultiScaleRBF.from_data(x.detach(), y.detach()) if kernel is None else kernel
    kxx = _within(kernel(x, x), w, unbiased)
    kyy = _within(kernel(y, y), v, unbiased)
    kxy = _mean_kernel(kernel(x, y), w, v)
    return kxx + kyy - 2.0 * kxy


def mmd_permutation_test(
    x,
    y,
    kernel: MultiScaleRBF | None = None,
    x_weights=None,
    y_weights=None,
    n_permutations: int = 200,
    seed: int = 0,
) -> tuple[float, float]:
    """Permutation test of ``P = Q`` with the biased MMD² statistic; returns ``(mmd2, p_value)``.

    The pooled kernel matrix is computed once; each permutation reassigns the labels (weights travel with their
    samples).  ``p = (1 + #{MMD²_perm ≥ MMD²_obs}) / (1 + n_permutations)``.
    """
    x = _as_tensor(x, "x")
    y = _as_tensor(y, "y", like=x)
    n, m = len(x), len(y)
    if n == 0 or m == 0:
        raise ValueError(f"permutation test needs non-empty samples, got {n} and {m}")
    w = _weights(x_weights, n, "x_weights", x)
    v = _weights(y_weights, m, "y_weights", x)
    w = torch.ones(n, dtype=x.dtype, device=x.device) if w is None else w
    v = torch.ones(m, dtype=x.dtype, device=x.device) if v is None else v
    z = torch.cat([x, y]).detach()
    u = torch.cat([w, v]).detach()
    kernel = MultiScaleRBF.from_data(x, y) if kernel is None else kernel
    k = kernel(z, z)
    gen = torch.Generator().manual_seed(seed)
    perms = [torch.arange(n + m)] + [torch.randperm(n + m, generator=gen) for _ in range(n_permutations)]
    idx = torch.stack(perms).to(z.device)  # row r: a relabelling; its first n entries form the "x" sample
    in_x = torch.zeros(idx.shape, dtype=torch.bool, device=z.device)
    in_x.scatter_(1, idx[:, :n], True)
    ux = torch.where(in_x, u, torch.zeros_like(u))
    uy = u - ux
    a = ux / ux.sum(1, keepdim=True) - uy / uy.sum(1, keepdim=True)  # signed normalised weights (R, n + m)
    stats = ((a @ k) * a).sum(1)  # biased MMD² = aᵀ K a
    obs = stats[0]
    p = (1.0 + (stats[1:] >= obs).sum().item()) / (1.0 + n_permutations)
    return float(obs), float(p)


@dataclass(frozen=True)
class NoiseFloor:
    """Bootstrap distribution of data-vs-data MMD² at one batch size; ``float(floor)`` is its mean."""

    mean: float
    std: float
    q95: float
    values: np.ndarray

    def __float__(self) -> float:
        return self.mean


def mmd_noise_floor(
    data,
    batch_size: int,
    n_boot: int = 100,
    kernel: MultiScaleRBF | None = None,
    weights=None,
    estimator: str = "biased",
    seed: int = 0,
) -> NoiseFloor:
    """MMD² between two independent batches of ``data`` of size ``batch_size``, over ``n_boot`` bootstrap draws.

    The two batches are disjoint draws without replacement when ``2 batch_size ≤ len(data)`` (with replacement
    otherwise).  Use the same kernel, estimator and batch size as the training constraint: the mean is the MDMM
    bound ε for "MMD²(morphed MC, data) ≤ ε" (what two data batches score against each other by chance).
    """
    data = _as_tensor(data, "data")
    n = len(data)
    if n < 2 or batch_size < 1:
        raise ValueError(f"noise floor needs at least 2 data points and batch_size >= 1, got {n}, {batch_size}")
    w = _weights(weights, n, "weights", data)
    kernel = MultiScaleRBF.from_data(data) if kernel is None else kernel
    gen = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(n_boot):
        if 2 * batch_size <= n:
            perm = torch.randperm(n, generator=gen)
            i, j = perm[:batch_size], perm[batch_size : 2 * batch_size]
        else:
            i, j = torch.randint(n, (batch_size,), generator=gen), torch.randint(n, (batch_size,), generator=gen)
        i, j = i.to(data.device), j.to(data.device)
        wi = None if w is None else w[i]
        wj = None if w is None else w[j]
        values.append(mmd2(data[i], data[j], kernel, wi, wj, estimator).item())
    vals = np.asarray(values)
    return NoiseFloor(
        float(vals.mean()), float(vals.std(ddof=1)) if n_boot > 1 else 0.0, float(np.quantile(vals, 0.95)), vals
    )


class MMDLoss:
    """Training loss ``MMD²(model_samples(), data batch)`` as a zero-argument callable for :class:`Trainer`.

    Args:
        samples: zero-argument callable returning ``(x, weights or None)`` for the model side (e.g. morphed MC).
        data: ``(n, d)`` target sample; a minibatch of ``batch_size`` is drawn with the global torch RNG each call.
        kernel: fixed kernel (default: median heuristic on ``data``).
        data_weights: optional ``(n,)`` weights of ``data``.
    """

    def __init__(
        self, samples, data: Tensor, batch_size: int = 512, kernel=None, data_weights=None, estimator="biased"
    ):
        self.samples, self.data, self.batch_size, self.estimator = (
            samples,
            _as_tensor(data, "data"),
            batch_size,
            estimator,
        )
        self.kernel = MultiScaleRBF.from_data(self.data) if kernel is None else kernel
        self.data_weights = _weights(data_weights, len(self.data), "data_weights", self.data)

    def __call__(self) -> Tensor:
        x, w = self.samples()
        n = len(self.data)
        if self.batch_size <= n:  # without replacement, like mmd_noise_floor
            idx = torch.randperm(n, device=self.data.device)[: self.batch_size]
        else:
            idx = torch.randint(n, (self.batch_size,), device=self.data.device)
        v = None if self.data_weights is None else self.data_weights[idx]
        return mmd2(x, self.data[idx].to(x), self.kernel, w, v, self.estimator)
