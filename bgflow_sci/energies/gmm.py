"""Diagonal Gaussian mixtures as energies ``u = -log p`` (normalised, so ``log Z = 0``)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Energy


class GaussianMixture(Energy):
    """``u(x) = -log Σ_k w_k N(x; μ_k, diag σ_k^2)``, an exactly normalised density (``log Z = 0``).

    Parameters: ``means`` ``(K, d)``, ``scales`` ``(K, d)`` standard deviations (or ``(K,)`` / scalar,
    broadcast), ``weights`` ``(K,)`` non-negative (normalised here; equal when ``None``).  Stored in
    float64; ``_energy`` casts them to the input's dtype and device.
    """

    def __init__(self, means: Tensor, scales: Tensor | float, weights: Tensor | None = None):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.dim() != 2:
            raise ValueError(f"means must have shape (K, d), got {tuple(means.shape)}")
        n_comp, dim = means.shape
        scales = torch.as_tensor(scales, dtype=torch.float64)
        if scales.dim() == 1:
            scales = scales[:, None]
        scales = scales.expand(n_comp, dim).clone()
        if not (scales > 0).all():
            raise ValueError("scales must be positive")
        weights = torch.ones(n_comp, dtype=torch.float64) if weights is None else torch.as_tensor(weights).double()
        if weights.shape != (n_comp,) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"weights must be non-negative of shape ({n_comp},) with a positive sum")
        super().__init__(dim)
        self.n_components = n_comp
        self.register_buffer("means", means.clone())
        self.register_buffer("scales", scales)
        self.register_buffer("log_weights", torch.log(weights / weights.sum()))

    def component_log_prob(self, x: Tensor) -> Tensor:
        """``log w_k + log N(x; μ_k, σ_k)`` of shape ``(batch, K)``."""
        mu, sigma, log_w = self.means.to(x), self.scales.to(x), self.log_weights.to(x)
        z = (x[:, None, :] - mu) / sigma
        log_norm = torch.log(sigma).sum(-1) + 0.5 * self.dim * math.log(2.0 * math.pi)
        return log_w - 0.5 * (z**2).sum(-1) - log_norm

    def _energy(self, x: Tensor) -> Tensor:
        return -torch.logsumexp(self.component_log_prob(x), dim=-1)

    def log_prob(self, x: Tensor) -> Tensor:
        """Normalised ``log p(x) = -u(x)``."""
        return -self.energy(x)

    def log_z(self) -> float:
        """Exactly 0: the mixture is normalised."""
        return 0.0

    def mean(self) -> Tensor:
        """Exact mixture mean ``Σ_k w_k μ_k`` (float64)."""
        return (self.log_weights.exp()[:, None] * self.means).sum(0)

    def covariance(self) -> Tensor:
        """Exact mixture covariance ``Σ_k w_k (diag σ_k^2 + μ_k μ_kᵀ) - m mᵀ`` (float64)."""
        w = self.log_weights.exp()
        second = torch.einsum("k,ki,kj->ij", w, self.means, self.means) + torch.diag(
            (w[:, None] * self.scales**2).sum(0)
        )
        m = self.mean()
        return second - torch.outer(m, m)

    def sample_exact(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """``n`` exact samples ``(n, d)``: a component by its weight, then its Gaussian."""
        dev = torch.device(device) if device is not None else self.means.device
        gen_dev = generator.device if generator is not None else dev
        probs = self.log_weights.exp().to(gen_dev)
        k = torch.multinomial(probs, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, generator=generator, dtype=torch.float64, device=gen_dev)
        x = self.means.to(gen_dev)[k] + self.scales.to(gen_dev)[k] * eps
        return x.to(device=dev, dtype=dtype or torch.get_default_dtype())


class GaussianMixture40(GaussianMixture):
    """The 40-mode mixture benchmark of FAB (Midgley et al., ICLR 2023), in 2D by default.

    ``n_components = 40`` equally weighted components with means uniform in ``[-loc_scaling, loc_scaling]^d``
    (``loc_scaling = 40``) and per-dimension standard deviation ``softplus(log_var_scaling) =
    log(1 + e) ≈ 1.3133`` (``log_var_scaling = 1``), as in FAB's code: there the means are
    ``(torch.rand((40, 2)) - 0.5) * 2 * 40`` right after ``torch.manual_seed(0)``, and the ``softplus`` value
    is used as the diagonal of the Cholesky factor, i.e. as a standard deviation.  The means here are drawn
    the same way from a ``torch.Generator`` seeded with ``seed`` (float32 draw, as FAB), which on the CPU
    reproduces FAB's means for ``seed = 0``; the scale is computed in float64.
    """

    def __init__(
        self,
        seed: int = 0,
        n_components: int = 40,
        dim: int = 2,
        loc_scaling: float = 40.0,
        log_var_scaling: float = 1.0,
    ):
        gen = torch.Generator().manual_seed(int(seed))
        means = (torch.rand((n_components, dim), generator=gen) - 0.5) * 2 * loc_scaling
        scale = torch.nn.functional.softplus(torch.tensor(float(log_var_scaling), dtype=torch.float64))
        super().__init__(means.double(), scale.expand(n_components, dim))
        self.seed, self.loc_scaling, self.log_var_scaling = int(seed), float(loc_scaling), float(log_var_scaling)
