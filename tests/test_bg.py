import math

import pytest
import torch

from bgflow_sci import BoltzmannGenerator, DensityModel
from bgflow_sci.bg import ImportanceSampler, Samples
from bgflow_sci.distributions import Distribution, Joint, Normal, NormalMixture, UniformBox
from bgflow_sci.energies import Energy
from bgflow_sci.flows import ActNorm, MaskedAutoregressive, RationalQuadraticSpline, real_nvp
from bgflow_sci.flows.transformers import Domain
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
    bg = BoltzmannGenerator(Normal(2), real_nvp(2, 2, hidden=(8,)), target).to(device, dtype)
    x, log_w = bg.sample_with_log_weights(100, batch_size=33)
    assert x.shape == (100, 2) and log_w.shape == (100,) and not x.requires_grad
    torch.testing.assert_close(log_w, -target.energy(x) - bg.log_prob(x).detach())
    # identity flow, Gaussian prior: log w = -u - log N(x; 0, 1), exactly
    expected = -target.energy(x) + 0.5 * (x**2).sum(-1) + math.log(2 * math.pi)
    torch.testing.assert_close(log_w, expected)


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    return {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 1e-9, "rtol": 1e-9}


def random_real_nvp(dim: int = 2, seed: int = 0):
    """A RealNVP (zero-initialised: the identity) with perturbed parameters, so that it is not the identity."""
    torch.manual_seed(seed)
    flow = real_nvp(dim, 4, hidden=(8,))
    with torch.no_grad():
        for q in flow.parameters():
            q.add_(0.3 * torch.randn_like(q))
    return flow


def test_density_model_sample_and_log_prob_agree(dtype, device):
    """``log_prob`` of the draws of ``sample_with_log_prob`` is the ``log q`` it returned (a non-trivial flow); the
    graph reaches the flow's parameters; ``sample`` gives the same draws for the same seed, without a graph."""
    model = DensityModel(Normal(2), random_real_nvp()).to(device, dtype)
    torch.manual_seed(1)
    x, log_q = model.sample_with_log_prob(500)
    assert x.shape == (500, 2) and log_q.shape == (500,) and x.dtype == dtype
    assert log_q.requires_grad and x.std(0).min() > 0.1
    torch.testing.assert_close(model.log_prob(x), log_q, **tolerance(dtype))
    ref = torch.distributions.Normal(torch.zeros(2, dtype=dtype, device=device), 1.0).log_prob(x).sum(-1)
    assert (log_q - ref).abs().max() > 0.05  # the flow is not the identity: the check above is not trivial
    log_q.sum().backward()
    assert all(q.grad is not None for q in model.flow.parameters())
    torch.manual_seed(1)
    xs = model.sample(500)
    assert not xs.requires_grad
    torch.testing.assert_close(xs, x.detach(), rtol=0.0, atol=0.0)
    assert (model.dim, model.latent_dim, model.context_dim) == (2, 2, 0)
    assert not hasattr(model, "sample_with_log_weights")  # weights need a target: a BoltzmannGenerator


def test_conditional_density_model(dtype):
    """``context`` reaches the flow: ``log_prob(x | c)`` of the draws at ``c`` is their ``log q``, and differs from
    the density at another ``c``."""
    torch.manual_seed(2)
    maf = MaskedAutoregressive(2, RationalQuadraticSpline(Domain(), 4, 5.0), (16,), context_dim=1)
    with torch.no_grad():
        for q in maf.parameters():
            q.add_(0.3 * torch.randn_like(q))
    model = DensityModel(Normal(2), maf).to(dtype)
    assert model.context_dim == 1
    c = torch.linspace(-1, 1, 64, dtype=dtype)[:, None]
    x, log_q = model.sample_with_log_prob(64, c)
    torch.testing.assert_close(model.log_prob(x, c), log_q, **tolerance(dtype))
    assert (model.log_prob(x, c.flip(0)) - log_q).abs().max() > 1e-3
    assert model.sample(64, c, batch_size=10).shape == (64, 2)


def test_boltzmann_generator_is_a_density_model_and_a_distribution():
    target = Quadratic(2, 0.0, 1.0)
    bg = BoltzmannGenerator(Normal(2), random_real_nvp(), target)
    assert isinstance(bg, DensityModel) and isinstance(bg, ImportanceSampler) and isinstance(bg, Distribution)
    torch.manual_seed(3)
    draw = bg.sample_with_log_weights(200)
    assert isinstance(draw, Samples)
    torch.manual_seed(3)
    torch.testing.assert_close(bg.sample(200), draw.x, rtol=0.0, atol=0.0)  # the same draws, without weights
    x = torch.randn(7, 2)
    torch.testing.assert_close(bg.log_prob(x), DensityModel(bg.prior, bg.flow).log_prob(x))
    torch.testing.assert_close(bg.energy(x), -bg.log_prob(x))  # the Distribution's energy: -log q


def test_boltzmann_generator_without_target_points_to_density_model():
    for build in (
        lambda: BoltzmannGenerator(Normal(2), ActNorm(2)),
        lambda: BoltzmannGenerator(Normal(2), ActNorm(2), None),
    ):
        with pytest.raises(TypeError, match=r"needs a target energy.*DensityModel\(prior, flow\)"):
            build()


def _identity_actnorm(dim: int) -> ActNorm:
    flow = ActNorm(dim)
    flow.initialized.fill_(True)
    return flow


def _state_mixture():
    from bgflow_sci.state_mixture import StateMixture

    target = Quadratic(2, 0.0, 1.0)
    parts = [BoltzmannGenerator(UniformBox([-3.0, -3.0], [0.0, 3.0]), _identity_actnorm(2), target)]
    parts.append(BoltzmannGenerator(UniformBox([0.0, -3.0], [3.0, 3.0]), _identity_actnorm(2), target))
    return StateMixture(parts, lambda x: (x[:, 0] >= 0).long())


SAMPLE_CONTRACT = {
    "Normal": lambda: Normal(3, mean=1.0, std=2.0),
    "UniformBox": lambda: UniformBox(-1.0, 2.0, dim=3),
    "Joint": lambda: Joint(Normal(2), UniformBox(0.0, 1.0, dim=1)),
    "NormalMixture": lambda: NormalMixture(torch.tensor([[0.0, 0.0, 0.0], [3.0, 3.0, 3.0]]), trainable=True),
    "DensityModel": lambda: DensityModel(Normal(3), random_real_nvp(3)),
    "BoltzmannGenerator": lambda: BoltzmannGenerator(Normal(3), random_real_nvp(3), Quadratic(3, 0.0, 1.0)),
    "StateMixture": _state_mixture,
}


@pytest.mark.parametrize("name", list(SAMPLE_CONTRACT))
def test_every_distribution_samples_a_tensor(name):
    """One contract: ``sample(n) -> (n, dim)`` tensor, ``sample_with_log_prob(n) -> ((n, dim), (n,))`` whose log
    densities are ``log_prob`` of the draws, for priors, density models, generators and mixtures alike."""
    dist = SAMPLE_CONTRACT[name]()
    torch.manual_seed(4)
    x = dist.sample(50)
    assert isinstance(x, torch.Tensor) and x.shape == (50, dist.dim) and torch.isfinite(x).all()
    y, log_p = dist.sample_with_log_prob(50)
    assert y.shape == (50, dist.dim) and log_p.shape == (50,)
    torch.testing.assert_close(dist.log_prob(y), log_p, atol=1e-5, rtol=1e-5)
    assert dist.sample(0).shape == (0, dist.dim)


def test_distribution_hooks_derive_each_other():
    """A subclass implements ``log_prob`` and one of ``sample`` / ``sample_with_log_prob``; the other is derived,
    and a subclass with neither says so instead of recursing."""

    class Direct(Distribution):
        dim = 2

        def sample(self, n, context=None):
            return torch.zeros(n, 2)

        def log_prob(self, x, context=None):
            return x.new_full((len(x),), -1.5)

    class WithDensity(Distribution):
        dim = 2

        def sample_with_log_prob(self, n, context=None):
            return torch.ones(n, 2), torch.full((n,), -0.5)

    x, log_p = Direct().sample_with_log_prob(3)
    assert x.shape == (3, 2) and torch.equal(log_p, torch.full((3,), -1.5))
    assert torch.equal(WithDensity().sample(4), torch.ones(4, 2))

    class Neither(Distribution):
        dim = 2

    with pytest.raises(NotImplementedError, match="neither sample nor sample_with_log_prob"):
        Neither().sample(2)
    with pytest.raises(NotImplementedError, match="neither sample nor sample_with_log_prob"):
        Neither().sample_with_log_prob(2)


def test_invalid_samples_get_zero_weight_and_are_counted(device):
    class Clashing(Quadratic):
        def _energy(self, x):
            u = super()._energy(x)
            return torch.where(x[:, 0] > 0, torch.full_like(u, float("nan")), u)

    target = Clashing(2, 0.0, 1.0)
    bg = BoltzmannGenerator(Normal(2), ActNorm(2), target).to(device)
    x, log_w = bg.sample_with_log_weights(1000)
    invalid = x[:, 0] > 0
    assert torch.isneginf(log_w[invalid]).all() and torch.isfinite(log_w[~invalid]).all()
    assert int(target.n_invalid) == int(invalid.sum())


def test_dimension_mismatch_and_empty():
    with pytest.raises(ValueError, match="dim"):
        BoltzmannGenerator(Normal(2), ActNorm(2), Quadratic(3, 0.0, 1.0))
    bg = BoltzmannGenerator(Normal(2), ActNorm(2), Quadratic(2, 0.0, 1.0))
    x, log_w = bg.sample_with_log_weights(0)
    assert x.shape == (0, 2) and log_w.shape == (0,)
    assert bg.sample(0).shape == (0, 2)
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
