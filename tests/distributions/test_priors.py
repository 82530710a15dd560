import math

import pytest
import torch

from bgflow_sci.distributions import Normal, UniformBox


def test_normal_log_prob_matches_torch(dtype, device):
    prior = Normal(3, mean=torch.tensor([0.5, -1.0, 2.0]), std=torch.tensor([1.0, 2.0, 0.5])).to(device, dtype)
    x = torch.randn(7, 3, dtype=dtype, device=device)
    ref = torch.distributions.Normal(prior.mean, prior.std).log_prob(x).sum(-1)
    torch.testing.assert_close(prior.log_prob(x), ref)
    s, lp = prior.sample_with_log_prob(5)
    assert s.dtype == dtype and s.device.type == device.type and lp.shape == (5,)


def test_normal_temperature_scales_the_variance(device):
    prior = Normal(2, temperature=4.0).to(device)
    x = prior.sample(200_000)
    torch.testing.assert_close(x.var(0), torch.full((2,), 4.0, device=device), rtol=0.02, atol=0)
    # explicit temperature overrides; log_prob normalised at that temperature
    x0 = torch.zeros(1, 2, device=device)
    assert prior.log_prob(x0, temperature=1.0).item() == pytest.approx(-math.log(2 * math.pi), rel=1e-6)


def test_normal_rejects_bad_arguments():
    with pytest.raises(ValueError):
        Normal(0)
    with pytest.raises(ValueError):
        Normal(2, std=-1.0)
    with pytest.raises(ValueError, match=r"\(batch, 2\)"):
        Normal(2).log_prob(torch.zeros(3, 3))


def test_uniform_box(dtype, device):
    box = UniformBox(torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 3.0])).to(device, dtype)
    x = box.sample(1000)
    assert ((x >= box.low) & (x <= box.high)).all()
    lp = box.log_prob(torch.tensor([[0.0, 1.0], [2.0, 1.0]], dtype=dtype, device=device))
    assert lp[0].item() == pytest.approx(-math.log(6.0), rel=1e-6) and lp[1].item() == -math.inf
    with pytest.raises(ValueError):
        UniformBox(1.0, 0.0, dim=2)


def test_empty_batch(device):
    prior = Normal(2).to(device)
    assert prior.sample(0).shape == (0, 2)
    assert prior.log_prob(torch.zeros(0, 2, device=device)).shape == (0,)
