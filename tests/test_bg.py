import math

import pytest
import torch

from bgflow_sci import BoltzmannGenerator
from bgflow_sci.distributions import Normal
from bgflow_sci.energies import Energy
from bgflow_sci.flows import ActNorm, real_nvp
from bgflow_sci.reweighting import ess
from bgflow_sci.training import MaximumLikelihood, ReverseKL


class Quadratic(Energy):
    """u(x) = |x - m|^2 / (2 s^2): a Gaussian target with log Z = (d/2) log(2 pi s^2)."""

    def __init__(self, dim: int, m: float, s: float):
        super().__init__(dim)
        self.m, self.s = m, s

    def _energy(self, x):
        return ((x - self.m) ** 2).sum(-1) / (2 * self.s**2)


def test_log_prob_is_change_of_variables(dtype, device):
    act = ActNorm(2).to(device, dtype)
    with torch.no_grad():
        act.shift.copy_(torch.tensor([1.0, -2.0]))
        act.log_scale.copy_(torch.tensor([0.5, -0.3]))
        act.initialized.fill_(True)  # parameters set by hand: no data-dependent initialisation
    bg = BoltzmannGenerator(Normal(2).to(device, dtype), act, Quadratic(2, 0.0, 1.0)).to(device, dtype)
    x = torch.randn(10, 2, dtype=dtype, device=device)
    ref = torch.distributions.Normal(act.shift, act.log_scale.exp()).log_prob(x).sum(-1)
    torch.testing.assert_close(bg.log_prob(x), ref.detach())
    xs, log_q = bg.sample_with_log_prob(10)
    torch.testing.assert_close(log_q, bg.log_prob(xs))


def test_sample_returns_log_weights(dtype, device):
    target = Quadratic(2, 0.3, 0.8)
    bg = BoltzmannGenerator(Normal(2), real_nvp(2, n_blocks=1, hidden=(8,)), target).to(device, dtype)
    x, log_w = bg.sample(100, batch_size=33)
    assert x.shape == (100, 2) and log_w.shape == (100,) and not x.requires_grad
    torch.testing.assert_close(log_w, -target.energy(x) - bg.log_prob(x).detach())
    # identity flow, Gaussian prior: log w = -u - log N(x; 0, 1), exactly
    expected = -target.energy(x) + 0.5 * (x**2).sum(-1) + math.log(2 * math.pi)
    torch.testing.assert_close(log_w, expected)


def test_invalid_samples_get_zero_weight_and_are_counted(device):
    class Clashing(Quadratic):
        def _energy(self, x):
            u = super()._energy(x)
            return torch.where(x[:, 0] > 0, torch.full_like(u, float("nan")), u)

    target = Clashing(2, 0.0, 1.0)
    bg = BoltzmannGenerator(Normal(2), ActNorm(2), target).to(device)
    x, log_w = bg.sample(1000)
    invalid = x[:, 0] > 0
    assert torch.isneginf(log_w[invalid]).all() and torch.isfinite(log_w[~invalid]).all()
    assert int(target.n_invalid) == int(invalid.sum())


def test_dimension_mismatch_and_empty():
    with pytest.raises(ValueError, match="dim"):
        BoltzmannGenerator(Normal(2), ActNorm(2), Quadratic(3, 0.0, 1.0))
    bg = BoltzmannGenerator(Normal(2), ActNorm(2), Quadratic(2, 0.0, 1.0))
    x, log_w = bg.sample(0)
    assert x.shape == (0, 2) and log_w.shape == (0,)
    with pytest.raises(ValueError, match=r"\(batch, 2\)"):
        bg.log_prob(torch.zeros(4, 5))


def test_losses_have_their_exact_values_for_the_identity_flow(device):
    """ML = cross-entropy of N(m, s^2) data under N(0,1); reverse KL = E_q[u + log q] = KL(q||p) - log Z."""
    torch.manual_seed(1)
    m, s, n = 0.5, 1.3, 200_000
    target = Quadratic(2, m, s)
    bg = BoltzmannGenerator(Normal(2), ActNorm(2), target).to(device).eval()  # eval: no ActNorm data init
    data = m + s * torch.randn(n, 2, device=device)
    ml = MaximumLikelihood(bg, data, batch_size=n)()
    exact_ml = 2 * (0.5 * math.log(2 * math.pi) + 0.5 * (s**2 + m**2))
    assert ml.item() == pytest.approx(exact_ml, abs=0.02)
    kl = ReverseKL(bg, batch_size=n)()
    log_z = math.log(2 * math.pi * s**2)
    exact_kl = 2 * (math.log(s) + (1 + m**2) / (2 * s**2) - 0.5)
    assert (kl + log_z).item() == pytest.approx(exact_kl, abs=0.02)


def test_reverse_kl_reports_the_batch_ess_and_the_trainer_logs_it(tmp_path):
    """ESS of q = N(0, 1) against p = N(m, s^2) per dimension is 1 / ∫ p²/q dx (independent dims multiply)."""
    torch.manual_seed(2)
    m, s = 0.3, 1.1
    bg = BoltzmannGenerator(Normal(2), ActNorm(2), Quadratic(2, m, s)).eval()
    loss = ReverseKL(bg, batch_size=400_000)
    loss()
    grid = torch.linspace(-12, 12, 200_001, dtype=torch.float64)
    p = torch.exp(-0.5 * ((grid - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))
    q = torch.exp(-0.5 * grid**2) / math.sqrt(2 * math.pi)
    exact = 1.0 / float(torch.trapezoid(p**2 / q, grid)) ** 2
    assert float(loss.log_values()["ess"]) == pytest.approx(exact, abs=0.01)
    assert float(loss.log_values()["ess"]) == pytest.approx(ess(loss.last_log_weights), rel=1e-6)

    from bgflow_sci.training import ml_then_kl

    bg.train()
    trainer = ml_then_kl(bg, m + s * torch.randn(1000, 2), 3, 4, batch_size=64, progress=False)
    history = trainer.train(7)
    assert all("kl/ess" not in r for r in history[:3])
    assert all(0.0 < r["kl/ess"] <= 1.0 for r in history[3:])
    ml_only = ml_then_kl(bg, m + s * torch.randn(1000, 2), 5, 0, batch_size=64, progress=False)  # no KL phase
    assert len(ml_only.train(5)) == 5 and all(r.get("loss/kl") is None for r in ml_only.history)


def test_biased_energy_and_reverse_kl_against_it():
    """``BiasedEnergy`` adds the bias to energies and its gradient to forces; ReverseKL(target=...) uses it while
    the generator keeps its exact target for the weights."""
    from bgflow_sci.energies import BiasedEnergy

    torch.manual_seed(3)
    base = Quadratic(2, 0.3, 0.8)
    biased = BiasedEnergy(base, lambda x: 0.5 * x[:, 0] ** 3)
    x = torch.randn(64, 2, dtype=torch.float64)
    torch.testing.assert_close(biased.energy(x), base.energy(x) + 0.5 * x[:, 0] ** 3)
    expected = base.force(x) - torch.stack([1.5 * x[:, 0] ** 2, torch.zeros(64, dtype=x.dtype)], 1)
    torch.testing.assert_close(biased.force(x), expected)
    assert torch.isinf(biased.energy(torch.tensor([[float("nan"), 0.0]], dtype=torch.float64))).all()
    with pytest.raises(ValueError, match="bias must return"):
        BiasedEnergy(base, lambda x: x).energy(x)

    bg = BoltzmannGenerator(Normal(2), ActNorm(2), base).eval()
    torch.manual_seed(4)
    loss = ReverseKL(bg, batch_size=1000, target=biased)()
    torch.manual_seed(4)
    z, log_q = bg.sample_with_log_prob(1000)
    torch.testing.assert_close(loss, (biased.energy(z) + log_q).mean())
    assert bg.target is base
