"""Mixture of diagonal Gaussians: a multimodal prior (one mode per metastable state, say).

The prior (a :class:`Distribution`, optionally trainable, with temperature) is :class:`NormalMixture`; the same
density as a target energy ``u = -log p`` with exact samples is :class:`bgflow_sci.energies.GaussianMixture`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._checks import check_batch
from .base import Distribution

__all__ = ["NormalMixture"]


def _as_matrix(values: float | Tensor, n_components: int, dim: int, name: str) -> Tensor:
    """Broadcast a scalar, ``(K,)`` or ``(K, dim)`` tensor to ``(K, dim)`` in the default dtype."""
    t = torch.as_tensor(values, dtype=torch.get_default_dtype()).detach()
    if t.dim() == 1 and t.shape[0] == n_components:
        t = t[:, None]
    elif t.dim() not in (0, 2) or (t.dim() == 2 and tuple(t.shape) != (n_components, dim)):
        raise ValueError(f"{name} must be a scalar, ({n_components},) or ({n_components}, {dim}), got {tuple(t.shape)}")
    return t.expand(n_components, dim).clone()


class NormalMixture(Distribution):
    """``p(x) = Σ_k w_k N(x; μ_k, diag(σ_k²) T)`` on ``R^dim`` with ``K`` components.

    Args:
        means: ``(K, dim)`` component means ``μ_k``.
        scales: standard deviations ``σ_k``: a scalar (all components, all coordinates), ``(K,)`` (isotropic per
            component) or ``(K, dim)``; positive.
        weights: ``(K,)`` positive mixture weights (normalised here to sum to one; default: equal weights).
        temperature: scales every component's variance, ``σ_k -> σ_k √T`` (as :class:`Normal` does); the weights
            are kept, so this is *not* ``p(x)^{1/T}`` but the usual wider/narrower-prior trick.
        trainable: store ``μ_k``, ``log σ_k`` and the logits ``log w_k`` as ``nn.Parameter`` (learned together
            with a flow); otherwise they are buffers (moved by ``.to(device, dtype)`` but not optimised).

    ``sample`` draws the component index from ``w`` and then the Gaussian by reparameterisation, so samples are
    differentiable in ``μ`` and ``σ`` but not in ``w``; ``log_prob`` (a ``logsumexp`` over components) is
    differentiable in all three.
    """

    def __init__(
        self,
        means: Tensor,
        scales: float | Tensor = 1.0,
        weights: Tensor | None = None,
        temperature: float = 1.0,
        trainable: bool = False,
    ):
        super().__init__()
        mu = torch.as_tensor(means, dtype=torch.get_default_dtype()).detach().clone()
        if mu.dim() != 2 or mu.shape[0] < 1 or mu.shape[1] < 1:
            raise ValueError(f"means must have shape (n_components, dim) with both positive, got {tuple(mu.shape)}")
        k, dim = mu.shape
        sigma = _as_matrix(scales, k, dim, "scales")
        w = torch.full((k,), 1.0 / k) if weights is None else torch.as_tensor(weights, dtype=mu.dtype).detach()
        if tuple(w.shape) != (k,):
            raise ValueError(f"weights must have shape ({k},), got {tuple(w.shape)}")
        if not (torch.isfinite(mu).all() and torch.isfinite(sigma).all() and torch.isfinite(w).all()):
            raise ValueError("means, scales and weights must be finite")
        if (sigma <= 0).any() or (w <= 0).any() or temperature <= 0:
            raise ValueError("scales, weights and temperature must be positive")
        self.dim, self.n_components = int(dim), int(k)
        self.temperature, self.trainable = float(temperature), bool(trainable)
        log_scale, logits = sigma.log(), (w / w.sum()).log()
        if trainable:
            self.means, self.log_scales, self.logits = nn.Parameter(mu), nn.Parameter(log_scale), nn.Parameter(logits)
        else:
            self.register_buffer("means", mu)
            self.register_buffer("log_scales", log_scale)
            self.register_buffer("logits", logits)

    @property
    def scales(self) -> Tensor:
        """``(K, dim)`` component standard deviations ``σ_k`` at ``T = 1``."""
        return self.log_scales.exp()

    @property
    def weights(self) -> Tensor:
        """``(K,)`` normalised mixture weights ``w_k``."""
        return torch.softmax(self.logits, dim=0)

    def _log_scales(self, temperature: float | None) -> Tensor:
        t = self.temperature if temperature is None else float(temperature)
        if t <= 0:
            raise ValueError(f"temperature must be positive, got {t}")
        return self.log_scales + 0.5 * math.log(t)

    def component_log_probs(self, x: Tensor, temperature: float | None = None) -> Tensor:
        """``(batch, K)``: ``log w_k + log N(x; μ_k, σ_k² T)`` (``logsumexp`` over ``K`` gives :meth:`log_prob`)."""
        check_batch(x, self.dim)
        log_s = self._log_scales(temperature)
        z = (x[:, None, :] - self.means) * torch.exp(-log_s)
        log_normal = -0.5 * z.pow(2).sum(-1) - log_s.sum(-1) - 0.5 * self.dim * math.log(2 * math.pi)
        return torch.log_softmax(self.logits, dim=0) + log_normal

    def log_prob(self, x: Tensor, context: Tensor | None = None, temperature: float | None = None) -> Tensor:
        """``(batch,)`` normalised log density ``log Σ_k w_k N(x; μ_k, σ_k² T)``."""
        return torch.logsumexp(self.component_log_probs(x, temperature), dim=-1)

    def responsibilities(self, x: Tensor, temperature: float | None = None) -> Tensor:
        """``(batch, K)`` posterior component probabilities ``p(k | x)`` (rows sum to one)."""
        return torch.softmax(self.component_log_probs(x, temperature), dim=-1)

    def sample_components(self, n: int, temperature: float | None = None) -> tuple[Tensor, Tensor]:
        """``(x, k)``: ``n`` samples ``(n, dim)`` and the ``(n,)`` index of the component each came from."""
        if n < 0:
            raise ValueError(f"n must be non-negative, got {n}")
        probs = self.weights.detach()
        k = torch.multinomial(probs, n, replacement=True) if n > 0 else torch.zeros(0, dtype=torch.long)
        k = k.to(self.means.device)
        eps = torch.randn(n, self.dim, dtype=self.means.dtype, device=self.means.device)
        return self.means[k] + torch.exp(self._log_scales(temperature))[k] * eps, k

    def sample(self, n: int, context: Tensor | None = None, temperature: float | None = None) -> Tensor:
        """``(n, dim)`` samples: a component ``k ~ w``, then ``μ_k + σ_k √T ε`` with ``ε ~ N(0, I)``."""
        return self.sample_components(n, temperature)[0]

    def sample_with_log_prob(
        self, n: int, context: Tensor | None = None, temperature: float | None = None
    ) -> tuple[Tensor, Tensor]:
        """``n`` samples and their log densities (both at the same temperature)."""
        x = self.sample(n, context, temperature)
        return x, self.log_prob(x, context, temperature)

    def extra_repr(self) -> str:
        return f"n_components={self.n_components}, dim={self.dim}, temperature={self.temperature}, " + (
            f"trainable={self.trainable}"
        )
