"""StateMixture: exact density of disjoint-support components, state weights from importance sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bgflow_sci import BoltzmannGenerator, DensityModel
from bgflow_sci.distributions import UniformBox
from bgflow_sci.energies import DoubleWell2D
from bgflow_sci.flows import ActNorm
from bgflow_sci.reweighting import ess
from bgflow_sci.state_mixture import StateMixture

# two states of the double well, split at x1 = 0; x2 is cut at ±7 (mass outside < 1e-11)
BOXES = [([-3.5, -7.0], [0.0, 7.0]), ([0.0, -7.0], [3.0, 7.0])]


def identity_flow() -> ActNorm:
    flow = ActNorm(2)
    flow.initialized.fill_(True)  # no data-dependent initialisation: the identity until trained
    return flow


def mixture(weights=(0.3, 0.7)) -> StateMixture:
    target = DoubleWell2D().double()
    components = [
        BoltzmannGenerator(UniformBox(torch.tensor(lo), torch.tensor(hi)), identity_flow(), target).double()
        for lo, hi in BOXES
    ]
    return StateMixture(components, lambda x: (x[:, 0] >= 0).long(), weights).double()


def exact_population_right() -> float:
    energy = DoubleWell2D()
    x1 = np.linspace(-3.5, 3.0, 400_001)
    p = np.exp(-energy.energy_x1(x1) - (-energy.energy_x1(x1)).max())
    return float(p[x1 >= 0].sum() / p.sum())


def test_density_is_exact_and_samples_stay_in_their_state():
    torch.manual_seed(0)
    mix = mixture()
    x, log_q = mix.sample_with_log_prob(4000)
    state = (x[:, 0] >= 0).long()
    volumes = torch.tensor([3.5 * 14.0, 3.0 * 14.0], dtype=torch.float64)
    expected = torch.log(torch.tensor([0.3, 0.7], dtype=torch.float64))[state] - torch.log(volumes)[state]
    torch.testing.assert_close(log_q, expected)
    torch.testing.assert_close(mix.log_prob(x), expected)
    # component counts are multinomial in π: 0.7 * 4000 = 2800 ± 29
    assert abs(int(state.sum()) - 2800) < 5 * math.sqrt(4000 * 0.21)
    # the density integrates to one: a grid over both boxes
    g1, g2 = torch.linspace(-3.5, 3.0, 651, dtype=torch.float64), torch.linspace(-7, 7, 141, dtype=torch.float64)
    grid = torch.cartesian_prod(g1[:-1] + 0.005, g2[:-1] + 0.05)
    with torch.no_grad():
        total = float(mix.log_prob(grid).exp().sum() * 0.01 * 0.1)
    assert total == pytest.approx(1.0, abs=1e-9)


def test_calibrated_weights_are_the_state_populations():
    torch.manual_seed(1)
    mix = mixture()
    report = mix.calibrate(40_000, rule="population")
    p_right = exact_population_right()
    assert report["population"][1] == pytest.approx(p_right, abs=0.01)
    torch.testing.assert_close(mix.weights, torch.tensor(report["population"], dtype=torch.float64))
    # reweighted mixture samples recover the population of each state
    x, log_w = mix.sample_with_log_weights(40_000)
    w = torch.softmax(log_w, 0)
    standard_error = math.sqrt(p_right * (1 - p_right) / (ess(log_w) * 40_000))  # 0.0073 measured (ESS 6.1 %)
    assert standard_error < 0.022, standard_error
    assert float(w[x[:, 0] >= 0].sum()) == pytest.approx(p_right, abs=4 * standard_error)


def test_ess_rule_minimises_the_weight_variance():
    torch.manual_seed(2)
    mix = mixture()
    report = mix.calibrate(40_000, rule="ess")
    pop, frac = np.array(report["population"]), np.array(report["ess"])
    expected = pop / np.sqrt(frac)
    np.testing.assert_allclose(report["weights"], expected / expected.sum(), rtol=1e-6)

    def predicted_ess(pi):  # 1 / ESS = Σ P_k² m_k / π_k with m_k = 1 / ESS_k
        return 1.0 / float(np.sum(pop**2 / frac / np.asarray(pi)))

    assert predicted_ess(report["weights"]) >= predicted_ess(pop)
    # the prediction is the Kish ESS the mixture delivers (40,000 samples: a few per cent)
    delivered = ess(mix.sample_with_log_weights(40_000).log_weights)
    assert delivered == pytest.approx(predicted_ess(report["weights"]), rel=0.05)


def test_sample_draws_through_the_components_without_a_graph():
    """``sample(n) -> x`` uses the components' ``sample``: the same draws as ``sample_with_log_prob`` for one seed
    (counts, component draws and shuffle in the same order), no autograd graph; ``sample_with_log_weights`` gives
    ``log w = -u - log q`` of those draws."""
    mix = mixture()
    torch.manual_seed(5)
    x = mix.sample(3000)
    torch.manual_seed(5)
    x_ref, log_q = mix.sample_with_log_prob(3000)
    assert x.shape == (3000, 2) and not x.requires_grad and log_q.requires_grad
    torch.testing.assert_close(x, x_ref.detach(), rtol=0.0, atol=0.0)
    torch.manual_seed(5)
    x_w, log_w = mix.sample_with_log_weights(3000, batch_size=3000)
    torch.testing.assert_close(x_w, x, rtol=0.0, atol=0.0)
    torch.testing.assert_close(log_w, -mix.target.energy(x) - log_q.detach())
    assert mix.sample(0).shape == (0, 2)
    with pytest.raises(ValueError, match="unconditional"):
        mix.sample(4, context=torch.zeros(4, 1))


def test_gradients_reach_every_component():
    torch.manual_seed(3)
    mix = mixture()
    x, log_q = mix.sample_with_log_prob(256)
    (log_q + mix.target.energy(x)).mean().backward()
    for component in mix.components:
        assert component.flow.log_scale.grad is not None and component.flow.log_scale.grad.abs().sum() > 0


def test_bad_input_raises():
    mix = mixture()
    with pytest.raises(ValueError, match="2 positive finite"):
        mix.set_weights([1.0, -1.0])
    with pytest.raises(ValueError, match="2 positive finite"):
        mix.set_weights([1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="unconditional"):
        mix.sample_with_log_prob(4, context=torch.zeros(4, 1))
    with pytest.raises(ValueError, match="rule"):
        mix.calibrate(100, rule="median")
    bad = StateMixture(list(mix.components), lambda x: torch.full((len(x),), 5), target=mix.target)
    with pytest.raises(ValueError, match=r"range\(2\)"):
        bad.log_prob(torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="one dim"):
        StateMixture([mix.components[0], DensityModel(UniformBox(0.0, 1.0, dim=3), ActNorm(3))], lambda x: x)
    with pytest.raises(ValueError, match="target energy"):
        StateMixture([DensityModel(UniformBox(0.0, 1.0, dim=2), ActNorm(2))], lambda x: torch.zeros(len(x)).long())


def test_calibration_warns_when_a_component_misses_its_state():
    """A component whose proposal barely overlaps its state (here: a box far wider than the well) has a tiny ESS;
    its log Z estimate is then unreliable, and calibrate says so."""
    torch.manual_seed(4)
    target = DoubleWell2D().double()
    wide = BoltzmannGenerator(
        UniformBox(torch.tensor([0.0, -300.0]), torch.tensor([3.0, 300.0])), identity_flow(), target
    )
    mix = StateMixture([mixture().components[0], wide.double()], lambda x: (x[:, 0] >= 0).long()).double()
    with pytest.warns(RuntimeWarning, match="state 1: Kish ESS"):
        report = mix.calibrate(2000)
    assert report["ess"][1] * 2000 < 100 <= report["ess"][0] * 2000
