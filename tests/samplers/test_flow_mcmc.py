"""Flow MCMC keeps the exact target with a mediocre proposal: double-well x1 marginal (KS test at fixed seeds).

The proposal is an untrained Boltzmann generator (a fixed random affine coupling and a fixed elementwise scaling), so
acceptance is well below 1 and its own samples fail the KS test; the chains started from it pass, and the same
test rejects a kernel fed a wrong proposal density. Runtime ~11 s of CPU (one thread).
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import kstest

from bgflow_sci import BoltzmannGenerator
from bgflow_sci.distributions import Normal
from bgflow_sci.energies import DoubleWell2D
from bgflow_sci.flows import ActNorm, AffineCoupling, Sequential, half_mask
from bgflow_sci.samplers import (
    HMC,
    ISIR,
    MALA,
    GlobalLocal,
    IndependentMetropolis,
    LatentEnergy,
    Sampler,
)

from ._targets import double_well_x1_cdf

N_CHAINS = 3000


def mediocre_bg(well: DoubleWell2D) -> BoltzmannGenerator:
    """``x = s ⊙ c(z) + b`` with a randomly perturbed affine coupling ``c``, ``s = (2, 1)`` and ``b = (0.7, 0)``."""
    torch.manual_seed(0)  # the coupling's initial weights
    gen = torch.Generator().manual_seed(0)
    coupling = AffineCoupling(2, half_mask(2, True), hidden=(8,))
    scale = ActNorm(2)
    with torch.no_grad():
        for p in coupling.parameters():
            p.add_(0.6 * torch.randn(p.shape, generator=gen))
        scale.log_scale.copy_(torch.tensor([math.log(2.0), 0.0]))
        scale.shift.copy_(torch.tensor([0.7, 0.0]))
    scale.initialized.fill_(True)
    return BoltzmannGenerator(Normal(2), Sequential(coupling, scale), well).double().eval()


def _ks(x1: torch.Tensor, well: DoubleWell2D) -> float:
    return kstest(x1.cpu().numpy(), double_well_x1_cdf(well)).pvalue


@pytest.fixture(scope="module")
def setup(device):
    well = DoubleWell2D().to(device)
    bg = mediocre_bg(well).to(device)
    torch.manual_seed(1)
    with torch.no_grad():
        x0, _ = bg.sample_with_log_prob(N_CHAINS)
    assert _ks(x0[:, 0], well) < 1e-6  # the proposal alone is visibly wrong: the test below has power
    return well, bg, x0


KERNELS = {
    "imh": lambda well, bg: IndependentMetropolis(well, bg),
    "isir": lambda well, bg: ISIR(well, bg, n_proposals=4),
    "imh+mala": lambda well, bg: GlobalLocal(IndependentMetropolis(well, bg), MALA(well, 0.05, adapt=False)),
    "isir+hmc": lambda well, bg: GlobalLocal(ISIR(well, bg, 2), HMC(well, 0.1, n_leapfrog=3, adapt=False), 2),
}


@pytest.mark.parametrize("name", list(KERNELS))
def test_flow_kernels_reach_exact_double_well_marginal(setup, name):
    well, bg, x0 = setup
    kernel = KERNELS[name](well, bg)
    samples, _, diag = Sampler(kernel, x0, seed=2).run(60, thin=60, progress=False)
    assert _ks(samples[-1, :, 0], well) > 0.01
    assert 0.05 < diag["mean_acceptance"] < 0.9, diag["mean_acceptance"]  # a mediocre proposal: acceptance < 1
    assert int(diag["n_reset"].sum()) == 0
    if name.endswith("mala") or name.endswith("hmc"):
        assert diag["mean_local_acceptance"] > 0.5


def x0_device(bg: BoltzmannGenerator) -> torch.device:
    return next(bg.parameters()).device


class _Forgetful(torch.nn.Module):
    """The proposal with a wrong density ``log q = 0``: flow MCMC must then sample ``exp(-u) q``, not ``exp(-u)``."""

    def __init__(self, bg):
        super().__init__()
        self.bg, self.dim = bg, bg.dim

    def sample_with_log_prob(self, n):
        x, log_q = self.bg.sample_with_log_prob(n)
        return x, torch.zeros_like(log_q)

    def log_prob(self, x):
        return x.new_zeros(x.shape[0])


@pytest.mark.parametrize("kernel", [IndependentMetropolis, ISIR])
def test_marginal_test_detects_a_wrong_proposal_density(setup, kernel):
    well, bg, x0 = setup
    samples, _, _ = Sampler(kernel(well, _Forgetful(bg)), x0, seed=2).run(60, thin=60, progress=False)
    assert _ks(samples[-1, :, 0], well) < 1e-6


def test_independent_mh_with_exact_proposal_accepts_everything(device):
    target = Normal(2, 0.5, 1.5).double().to(device)  # a normalised density used as the target energy -log p
    x0 = target.sample(500)
    _, _, diag = Sampler(IndependentMetropolis(target, target), x0, seed=3).run(20, progress=False)
    assert torch.all(diag["acceptance"] == 1.0)
    other = Normal(2).double().to(device)
    _, _, diag = Sampler(IndependentMetropolis(target, other), x0, seed=3).run(20, progress=False)
    assert diag["mean_acceptance"] < 0.9


def test_neutra_latent_energy_matches_jacobian_and_samples_target(setup):
    well, bg, _ = setup
    latent = LatentEnergy(bg)
    z = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4)).to(x0_device(bg))
    jac = torch.stack([torch.autograd.functional.jacobian(lambda v: bg.flow(v[None])[0][0], zi) for zi in z])
    ref = well.energy(latent.push_forward(z)) - torch.linalg.slogdet(jac).logabsdet
    torch.testing.assert_close(latent.energy(z), ref)
    logdet = bg.flow(z)[1]
    assert logdet.std() > 0.1  # the Jacobian is not constant: dropping it biases x1 (KS p ~ 1e-6 at these seeds)
    torch.testing.assert_close(latent.pull_back(latent.push_forward(z)), z)

    x_exact = well.sample_exact(N_CHAINS, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x_exact = x_exact.to(x0_device(bg))
    sampler = Sampler(MALA(latent, 0.1), latent.pull_back(x_exact), seed=6)
    z_samples, _, diag = sampler.run(60, thin=60, burn_in=20, progress=False)
    x = latent.push_forward(z_samples)
    assert x.shape == z_samples.shape
    assert _ks(x[-1, :, 0], well) > 0.01
    assert diag["mean_acceptance"] > 0.3


def test_global_local_checkpoint_resumes_bit_for_bit(setup):
    well, bg, x0 = setup

    def make():
        kernel = GlobalLocal(ISIR(well, bg, 3), MALA(well, 0.05), n_local=2)
        return Sampler(kernel, x0[:64], seed=7)

    ref = make()
    ref.run(5, burn_in=5, progress=False)
    ckpt = ref.state_dict()
    expected, _, diag_ref = ref.run(6, progress=False)
    resumed = make()
    resumed.load_state_dict(ckpt)
    got, _, diag = resumed.run(6, progress=False)
    assert torch.equal(got, expected)
    assert torch.equal(diag["acceptance"], diag_ref["acceptance"])


def test_proposals_do_not_touch_global_rng(setup):
    well, bg, x0 = setup
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    Sampler(IndependentMetropolis(well, bg), x0[:16], seed=8).run(3, progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_invalid_proposals_are_rejected_not_propagated(device):
    """A target with an infinite wall: proposals beyond it get zero weight and are never accepted."""
    well = DoubleWell2D()

    class Walled(DoubleWell2D):
        def _energy(self, x):
            return torch.where(x[:, 0] > 2.0, torch.nan, super()._energy(x))

    target = Walled()
    x0 = well.sample_exact(400, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    x0 = x0[x0[:, 0] <= 2.0].to(device)
    with pytest.warns(RuntimeWarning, match="rejected"):
        kernel = ISIR(target, mediocre_bg(well).to(device), 3)
        samples, _, diag = Sampler(kernel, x0, seed=10).run(10, progress=False)
    assert bool((samples[..., 0] <= 2.0).all()) and bool(torch.isfinite(samples).all())
    assert int(diag["n_invalid"].sum()) > 0 and int(diag["n_reset"].sum()) == 0


def test_bad_arguments(setup):
    well, bg, _ = setup
    with pytest.raises(ValueError, match="dim"):
        IndependentMetropolis(well, Normal(3))
    with pytest.raises(TypeError, match="log_prob"):
        IndependentMetropolis(well, well)
    with pytest.raises(ValueError, match="n_proposals"):
        ISIR(well, bg, n_proposals=0)
    with pytest.raises(ValueError, match="GlobalLocal"):
        GlobalLocal(MALA(well, 0.1), MALA(well, 0.1))
    with pytest.raises(ValueError, match="target energy"):
        LatentEnergy(bg.flow)
