"""Step-size adaptation towards a target acceptance rate by dual averaging (warm-up only)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


class DualAveraging:
    """Nesterov dual averaging of ``log ε`` as in NUTS (Hoffman & Gelman, JMLR 2014, Algorithm 5), batched.

    With ``H̄_t = (1 - 1/(t+t0)) H̄_{t-1} + (δ - α_t)/(t+t0)`` the iterate is ``log ε_t = μ - √t/γ H̄_t`` and
    the averaged ``log ε̄_t = t^{-κ} log ε_t + (1 - t^{-κ}) log ε̄_{t-1}``, ``μ = log(10 ε_0)``. ``α_t`` is the
    Metropolis acceptance probability of each chain (``per_chain=True``) or its mean over chains (one global step
    size). After warm-up the kernel freezes ``ε = ε̄``, so the chain it then runs is an exact Markov chain.
    """

    def __init__(
        self,
        target_acceptance: float,
        per_chain: bool = True,
        gamma: float = 0.05,
        t0: float = 10.0,
        kappa: float = 0.75,
    ):
        if not 0.0 < target_acceptance < 1.0:
            raise ValueError(f"target_acceptance must lie in (0, 1), got {target_acceptance}")
        self.target, self.per_chain = float(target_acceptance), bool(per_chain)
        self.gamma, self.t0, self.kappa = float(gamma), float(t0), float(kappa)
        self.t = 0
        self.mu = self.h_bar = self.log_eps_bar = None

    def start(self, step_size: Tensor) -> None:
        """Begin at the current step sizes ``(n,)``."""
        self.t = 0
        self.mu = torch.log(10.0 * step_size)
        self.h_bar = torch.zeros_like(step_size)
        self.log_eps_bar = torch.log(step_size)

    def update(self, accept_prob: Tensor) -> Tensor:
        """One adaptation step from acceptance probabilities ``(n,)``; returns the new step sizes ``(n,)``."""
        alpha = accept_prob if self.per_chain else accept_prob.mean().expand_as(accept_prob)
        self.t += 1
        w = 1.0 / (self.t + self.t0)
        self.h_bar = (1.0 - w) * self.h_bar + w * (self.target - alpha)
        log_eps = self.mu - math.sqrt(self.t) / self.gamma * self.h_bar
        eta = self.t ** (-self.kappa)
        self.log_eps_bar = eta * log_eps + (1.0 - eta) * self.log_eps_bar
        return torch.exp(log_eps)

    def final(self) -> Tensor:
        """The averaged step sizes ``ε̄`` ``(n,)`` to freeze after warm-up."""
        return torch.exp(self.log_eps_bar)

    def state_dict(self) -> dict:
        return {"t": self.t, "mu": self.mu, "h_bar": self.h_bar, "log_eps_bar": self.log_eps_bar}

    def load_state_dict(self, d: dict) -> None:
        self.t, self.mu, self.h_bar, self.log_eps_bar = d["t"], d["mu"], d["h_bar"], d["log_eps_bar"]
