"""NormalMixture: log density against scipy, normalisation, exact sample moments, gradients when trainable."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from bgflow_sci.distributions import Distribution, NormalMixture

MEANS = torch.tensor([[-2.0, 0.5], [1.5, -1.0], [0.0, 2.5]], dtype=torch.float64)
SCALES = torch.tensor([[0.5, 1.0], [0.8, 0.3], [1.2, 0.7]], dtype=torch.float64)
WEIGHTS = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)


def mixture(**kwargs) -> NormalMixture:
    return NormalMixture(MEANS, kwargs.pop("scales", SCALES), kwargs.pop("weights", WEIGHTS), **kwargs).double()


def scipy_log_prob(x: np.ndarray, gm: NormalMixture, temperature: float = 1.0) -> np.ndarray:
    """The mixture density of ``gm``'s own parameters (float32-rounded at construction, like ``Normal``'s)."""
    means, scales, weights = (t.detach().cpu().double().numpy() for t in (gm.means, gm.scales, gm.weights))
    densities = [
        w * multivariate_normal(m, np.diag(s**2 * temperature)).pdf(x) for m, s, w in zip(means, scales, weights)
    ]
    return np.log(np.sum(densities, axis=0))


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_log_prob_matches_scipy_in_float64(temperature, device):
    gm = mixture(temperature=temperature).to(device)
    x = torch.randn(50, 2, dtype=torch.float64, device=device) * 2
    ref = scipy_log_prob(x.cpu().numpy(), gm, temperature)
    torch.testing.assert_close(gm.means.cpu(), MEANS, rtol=1e-7, atol=0.0)
    np.testing.assert_allclose(gm.log_prob(x).cpu().numpy(), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gm.energy(x).cpu().numpy(), -ref, rtol=1e-12, atol=1e-12)
    # an explicit temperature overrides the stored one
    np.testing.assert_allclose(
        gm.log_prob(x, temperature=2.0).cpu().numpy(),
        scipy_log_prob(x.cpu().numpy(), gm, 2.0),
        rtol=1e-12,
        atol=1e-12,
    )


@pytest.mark.parametrize(
    ("scales", "expanded"),
    [(0.7, torch.full((3, 2), 0.7)), (torch.tensor([0.5, 1.0, 2.0]), torch.tensor([[0.5] * 2, [1.0] * 2, [2.0] * 2]))],
    ids=["scalar", "per-component"],
)
def test_scale_shapes_broadcast(scales, expanded):
    gm = mixture(scales=scales)
    torch.testing.assert_close(gm.scales, expanded.double(), rtol=1e-6, atol=0.0)
    x = torch.randn(20, 2, dtype=torch.float64)
    ref = scipy_log_prob(x.numpy(), gm)
    np.testing.assert_allclose(gm.log_prob(x).numpy(), ref, rtol=1e-12, atol=1e-12)


def test_density_integrates_to_one_on_a_grid():
    gm = mixture()
    g1, g2 = torch.linspace(-7, 7, 561, dtype=torch.float64), torch.linspace(-6, 8, 561, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(g1, g2, indexing="ij"), dim=-1).reshape(-1, 2)
    density = gm.log_prob(grid).exp().reshape(len(g1), len(g2))
    integral = torch.trapezoid(torch.trapezoid(density, g2, dim=1), g1).item()
    assert integral == pytest.approx(1.0, abs=1e-6)


def test_sample_moments_match_the_exact_ones(dtype, device):
    gm = mixture().to(device, dtype)
    n = 400_000
    x, k = gm.sample_components(n)
    assert x.shape == (n, 2) and x.dtype == dtype and x.device.type == device.type
    w = WEIGHTS.to(device, dtype)
    mu, var = MEANS.to(device, dtype), SCALES.to(device, dtype) ** 2
    mean_exact = (w[:, None] * mu).sum(0)
    second = (w[:, None, None] * (torch.diag_embed(var) + mu[:, :, None] * mu[:, None, :])).sum(0)
    cov_exact = second - mean_exact[:, None] * mean_exact[None, :]
    # component frequencies: binomial standard errors, 5 sigma
    freq = torch.bincount(k, minlength=3).to(dtype) / n
    assert ((freq - w).abs() < 5 * torch.sqrt(w * (1 - w) / n)).all()
    # mean: standard error sqrt(diag(cov) / n); covariance within 2% of its scale
    assert ((x.mean(0) - mean_exact).abs() < 5 * torch.sqrt(torch.diagonal(cov_exact) / n)).all()
    torch.testing.assert_close(torch.cov(x.T), cov_exact, atol=0.03, rtol=0.0)
    # each component's samples carry that component's mean and width
    for j in range(3):
        xj = x[k == j]
        torch.testing.assert_close(xj.mean(0), mu[j], atol=0.02, rtol=0.0)
        torch.testing.assert_close(xj.std(0), var[j].sqrt(), atol=0.02, rtol=0.0)


def test_temperature_scales_the_component_widths():
    gm = NormalMixture(torch.zeros(1, 3), 2.0, temperature=0.25)
    x = gm.sample(100_000)
    torch.testing.assert_close(x.std(0), torch.full((3,), 1.0), atol=0.02, rtol=0.0)
    torch.testing.assert_close(gm.sample(100_000, temperature=4.0).std(0), torch.full((3,), 4.0), atol=0.08, rtol=0.0)


def test_sample_with_log_prob_and_distribution_protocol(device):
    gm = mixture().to(device)
    assert isinstance(gm, Distribution) and gm.dim == 2 and gm.n_components == 3
    x, lp = gm.sample_with_log_prob(64)
    assert x.shape == (64, 2) and lp.shape == (64,)
    torch.testing.assert_close(lp, gm.log_prob(x))
    assert gm.sample(0).shape == (0, 2) and gm.log_prob(x[:0]).shape == (0,)
    r = gm.responsibilities(x)
    torch.testing.assert_close(r.sum(-1), torch.ones(64, dtype=torch.float64, device=device))


def test_fixed_mixture_has_buffers_and_follows_to():
    gm = mixture()
    assert list(gm.parameters()) == []
    names = {name for name, _ in gm.named_buffers()}
    assert names == {"means", "log_scales", "logits"}
    gm32 = gm.float()
    assert gm32.sample(3).dtype == torch.float32 and gm32.log_prob(torch.zeros(2, 2)).dtype == torch.float32


def test_trainable_gradients_match_finite_differences():
    gm = mixture(trainable=True)
    assert {name for name, _ in gm.named_parameters()} == {"means", "log_scales", "logits"}
    x = torch.randn(30, 2, dtype=torch.float64) * 2
    loss = -gm.log_prob(x).mean()
    grads = torch.autograd.grad(loss, [gm.means, gm.log_scales, gm.logits])
    # analytic gradients of the mean NLL: d/dμ_k = -E[r_k (x - μ_k) / σ_k²], d/dlogit_k = -E[r_k - w_k]
    with torch.no_grad():
        r = gm.responsibilities(x)
        d_mu = -(r[:, :, None] * (x[:, None, :] - gm.means) / gm.scales**2).mean(0)
        d_logit = -(r - gm.weights).mean(0)
    torch.testing.assert_close(grads[0], d_mu, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grads[2], d_logit, rtol=1e-10, atol=1e-12)
    # log-scale gradient against central finite differences
    eps = 1e-6
    for idx in [(0, 0), (1, 1), (2, 0)]:
        with torch.no_grad():
            gm.log_scales[idx] += eps
            up = -gm.log_prob(x).mean()
            gm.log_scales[idx] -= 2 * eps
            down = -gm.log_prob(x).mean()
            gm.log_scales[idx] += eps
        assert grads[1][idx].item() == pytest.approx(((up - down) / (2 * eps)).item(), rel=1e-6, abs=1e-9)
    # samples are reparameterised in μ and σ: d mean(x) / d μ_k equals the share of component k
    xs, k = gm.sample_components(1000)
    (g_mu,) = torch.autograd.grad(xs.sum(0)[0], gm.means)
    counts = torch.bincount(k, minlength=3).double()
    torch.testing.assert_close(g_mu[:, 0], counts)


def test_maximum_likelihood_recovers_the_mixture():
    torch.manual_seed(1)
    data = mixture().sample(20_000)
    gm = NormalMixture(MEANS + 0.3, 1.0, None, trainable=True).double()
    opt = torch.optim.Adam(gm.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        (-gm.log_prob(data).mean()).backward()
        opt.step()
    torch.testing.assert_close(gm.weights, WEIGHTS, atol=0.02, rtol=0.0)
    torch.testing.assert_close(gm.means, MEANS, atol=0.05, rtol=0.0)
    torch.testing.assert_close(gm.scales, SCALES, atol=0.05, rtol=0.0)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="means"):
        NormalMixture(torch.zeros(3))
    with pytest.raises(ValueError, match="scales"):
        NormalMixture(torch.zeros(3, 2), torch.ones(2, 2))
    with pytest.raises(ValueError, match="weights"):
        NormalMixture(torch.zeros(3, 2), 1.0, torch.ones(2))
    with pytest.raises(ValueError, match="positive"):
        NormalMixture(torch.zeros(2, 2), 1.0, torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="positive"):
        NormalMixture(torch.zeros(2, 2), -1.0)
    with pytest.raises(ValueError, match=r"\(batch, 2\)"):
        NormalMixture(torch.zeros(2, 2)).log_prob(torch.zeros(4, 3))
    assert math.isfinite(NormalMixture(torch.zeros(1, 1)).log_prob(torch.full((1, 1), 40.0)).item())


def test_same_density_as_the_mixture_target_energy():
    """The prior and :class:`bgflow_sci.energies.GaussianMixture` (a target ``u = -log p``) are one density."""
    from bgflow_sci.energies import GaussianMixture

    gm = mixture()
    target = GaussianMixture(gm.means, gm.scales, gm.weights)
    x = torch.randn(40, 2, dtype=torch.float64) * 2
    torch.testing.assert_close(gm.energy(x), target.energy(x), rtol=1e-12, atol=1e-12)
