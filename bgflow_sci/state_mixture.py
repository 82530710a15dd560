"""One Boltzmann generator per metastable state: a mixture whose components have disjoint supports.

The states ``S_1 ... S_K`` partition configuration space (``assign(x) -> k``); component ``k`` is a generator whose
samples all lie in ``S_k`` (built so, e.g. with a torsion restricted to an arc). With state weights ``π_k``::

    q(x) = Σ_k π_k q_k(x) = π_{k(x)} q_{k(x)}(x)            (disjoint supports: one term is non-zero)

so sampling and density cost one component each, and the weights are exact. Each state's mass is fixed by ``π``
rather than learnt: reverse-KL training cannot drain a rare state, and each component is trained on its own state
(maximum likelihood on the data in ``S_k``, reverse KL against ``u`` restricted to ``S_k``, which is the same
objective since ``q_k`` lives on ``S_k``).  :meth:`StateMixture.calibrate` then sets ``π`` from the components'
importance-sampling estimates of the state partition functions ``Z_k = ∫_{S_k} e^{-u}``.

The weights of the mixture ``w = e^{-u}/q`` have second moment ``Σ_k P_k² m_k / π_k`` (``P_k = Z_k / Z``,
``m_k = 1/ESS_k`` the relative second moment of component ``k``'s weights), smallest for ``π_k ∝ P_k √m_k``: a
component that fits its state worse gets more samples.  ``rule="ess"`` uses this, ``rule="population"``
``π_k = P_k``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ._checks import check_batch
from .bg import ImportanceSampler
from .reweighting import ess, log_mean_exp


class StateMixture(ImportanceSampler):
    """``q = Σ_k π_k q_k`` over components with disjoint supports ``S_k = {x : assign(x) = k}``.

    A :class:`~bgflow_sci.distributions.Distribution` like its components: ``sample(n) -> x``,
    ``sample_with_log_prob(n)`` (differentiable), ``log_prob(x)``, and ``sample_with_log_weights(n)`` ->
    :class:`~bgflow_sci.bg.Samples` against ``target``.

    Args:
        components: one generator (an :class:`~bgflow_sci.bg.ImportanceSampler`) per state, all of the same
            ``dim`` and target; component ``k`` must only produce samples with ``assign(x) == k``.
        assign: maps ``(batch, dim)`` configurations to ``(batch,)`` state indices in ``range(K)``.
        weights: ``π`` (any positive numbers, normalised here); default uniform.
        target: the energy ``u`` (kT) of the importance weights; default the first component's.
    """

    def __init__(
        self,
        components: Sequence[ImportanceSampler],
        assign: Callable[[Tensor], Tensor],
        weights: Sequence[float] | Tensor | None = None,
        target=None,
    ):
        super().__init__()
        if len(components) < 1:
            raise ValueError("a StateMixture needs at least one component")
        dims = {c.dim for c in components}
        if len(dims) != 1:
            raise ValueError(f"components must share one dim, got {sorted(dims)}")
        if any(getattr(c, "context_dim", 0) for c in components):
            raise ValueError("StateMixture does not support conditional components")
        self.components = nn.ModuleList(components)
        self.assign = assign
        self.dim, self.context_dim = dims.pop(), 0
        self.target = target if target is not None else getattr(components[0], "target", None)
        if self.target is None:
            raise ValueError("a StateMixture needs a target energy: pass target= or components that have one")
        self.register_buffer("log_pi", torch.zeros(len(components)))
        self.set_weights(torch.ones(len(components)) if weights is None else weights)

    @property
    def n_states(self) -> int:
        return len(self.components)

    @property
    def weights(self) -> Tensor:
        """``π`` ``(K,)``, summing to one."""
        return self.log_pi.exp()

    def set_weights(self, weights: Sequence[float] | Tensor) -> None:
        """Set ``π`` (positive, finite, one per component; normalised here)."""
        w = torch.as_tensor(weights, dtype=torch.float64).flatten()
        if w.numel() != self.n_states or not torch.isfinite(w).all() or (w <= 0).any():
            raise ValueError(f"weights must be {self.n_states} positive finite numbers, got {w.tolist()}")
        self.log_pi.copy_(torch.log(w / w.sum()).to(self.log_pi))

    def _check_context(self, context: Tensor | None) -> None:
        if context is not None:
            raise ValueError("StateMixture is unconditional: context must be None")

    def _counts(self, n: int) -> list[int]:
        """Samples per component: multinomial in ``π``."""
        pi = self.weights.to(torch.float64)
        return torch.bincount(torch.multinomial(pi.cpu(), n, replacement=True), minlength=self.n_states).tolist()

    def sample(self, n: int, context: Tensor | None = None) -> Tensor:
        """``n`` samples ``(n, dim)`` (component counts multinomial in ``π``, order shuffled), each from its
        component's ``sample`` (no autograd graph)."""
        self._check_context(context)
        if n == 0:
            return self._reference.new_zeros(0, self.dim)
        xs = [component.sample(m) for component, m in zip(self.components, self._counts(n)) if m]
        x = torch.cat(xs)
        return x[torch.randperm(n, device=x.device)]

    def sample_with_log_prob(self, n: int, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``n`` samples (component counts multinomial in ``π``, order shuffled) and ``log q(x)``, differentiable."""
        self._check_context(context)
        xs, log_qs = [], []
        for k, (component, m) in enumerate(zip(self.components, self._counts(n))):
            if m:
                x, log_q = component.sample_with_log_prob(m)
                xs.append(x)
                log_qs.append(log_q + self.log_pi[k].to(log_q))
        x, log_q = torch.cat(xs), torch.cat(log_qs)
        perm = torch.randperm(n, device=x.device)
        return x[perm], log_q[perm]

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``log π_k + log q_k(x)`` with ``k = assign(x)``, each configuration through its own component."""
        self._check_context(context)
        check_batch(x, self.dim)
        state = self._states(x)
        out = x.new_full((x.shape[0],), -math.inf)
        for k, component in enumerate(self.components):
            mask = state == k
            if mask.any():
                out = out.index_put((mask,), component.log_prob(x[mask]) + self.log_pi[k].to(x))
        return out

    def _states(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            state = torch.as_tensor(self.assign(x), device=x.device).long()
        if state.shape != x.shape[:1] or ((state < 0) | (state >= self.n_states)).any():
            raise ValueError(f"assign must map a batch of {x.shape[0]} to indices in range({self.n_states})")
        return state

    def split(self, x: Tensor) -> list[Tensor]:
        """The rows of ``x`` in each state (a list of ``K`` tensors): the training data of each component."""
        state = self._states(x)
        return [x[state == k] for k in range(self.n_states)]

    @torch.no_grad()
    def calibrate(self, n: int = 20_000, rule: str = "ess", batch_size: int = 10_000) -> dict[str, list[float]]:
        """Set ``π`` from ``n`` samples of each component: ``log Z_k = log mean_{q_k} e^{-u - log q_k}``.

        ``rule="population"``: ``π_k ∝ Z_k``; ``rule="ess"`` (default): ``π_k ∝ Z_k / √ESS_k``, which minimises
        the variance of the mixture's importance weights (module docstring).  Returns ``log_z``, ``ess`` (Kish,
        fraction of each component's samples), ``population`` (``Z_k / Σ Z``) and the new ``weights``.
        """
        if rule not in ("ess", "population"):
            raise ValueError(f"rule must be 'ess' or 'population', got {rule!r}")
        if n < 2:
            raise ValueError(f"n must be at least 2, got {n}")
        log_z, fractions = [], []
        for component in self.components:
            log_w = component.sample_with_log_weights(n, batch_size=batch_size).log_weights.to(torch.float64)
            if not torch.isfinite(log_w).any():
                raise RuntimeError("a component produced no sample of finite weight: it cannot be calibrated")
            log_z.append(float(log_mean_exp(log_w)))
            fractions.append(ess(log_w))
            if fractions[-1] * n < 100:
                warnings.warn(
                    f"state {len(log_z) - 1}: Kish ESS {fractions[-1]:.2%} of {n} samples; its log Z is unreliable "
                    "(likely underestimated: the flow misses part of its state) and so are the state weights",
                    RuntimeWarning,
                    stacklevel=3,  # the caller of calibrate (no_grad's wrapper is one frame)
                )
        lz = torch.tensor(log_z, dtype=torch.float64)
        log_pop = lz - torch.logsumexp(lz, 0)
        log_w = log_pop - 0.5 * torch.log(torch.tensor(fractions, dtype=torch.float64)) if rule == "ess" else log_pop
        self.set_weights(torch.exp(log_w - log_w.max()))
        return {
            "log_z": log_z,
            "ess": fractions,
            "population": log_pop.exp().tolist(),
            "weights": self.weights.tolist(),
        }
