"""Continuous normalizing flows and flow matching: NFE, Hutchinson divergence, adjoint gradients, OT coupling,
and a trained 2D flow whose density integrates to one.  (The Flow contract itself is in ``test_generic.py``.)

Runtime: ~20 s on one idle CPU core (the trained-flow tests dominate).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from bgflow_sci import BoltzmannGenerator
from bgflow_sci.distributions import Normal
from bgflow_sci.energies import DoubleWell2D
from bgflow_sci.flows import ActNorm, ContinuousFlow, Inverse, Sequential, VectorField
from bgflow_sci.flows.continuous import exact_divergence, hutchinson_divergence
from bgflow_sci.training import FlowMatching, Trainer, ot_pairing


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: intra-op threads only contend on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def perturbed_field(dim: int, context_dim: int = 0, scale: float = 0.3, dtype=torch.float64) -> VectorField:
    field = VectorField(dim, context_dim, hidden=(16,)).to(dtype)
    with torch.no_grad():
        for p in field.parameters():
            p.add_(scale * torch.randn_like(p))
    return field


def test_identity_at_initialisation(dtype, device):
    flow = ContinuousFlow(VectorField(3, hidden=(8,)), solver="rk4", n_steps=3).to(device=device, dtype=dtype)
    x = torch.randn(5, 3, dtype=dtype, device=device)
    y, logdet = flow(x)
    assert y.dtype == dtype and y.device == x.device
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(logdet, torch.zeros(5, dtype=dtype, device=device))


@pytest.mark.parametrize(("solver", "per_step"), [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_nfe_of_fixed_step_solvers(solver, per_step, device):
    flow = ContinuousFlow(perturbed_field(2), solver=solver, n_steps=5).to(device)
    x = torch.randn(4, 2, dtype=torch.float64, device=device)
    with torch.no_grad():
        y, _ = flow(x)
        assert flow.nfe == 5 * per_step
        flow.inverse(y)
        assert flow.nfe == 5 * per_step


def test_adaptive_solver_reports_nfe_and_tolerance_controls_it(device):
    x = torch.randn(4, 2, dtype=torch.float64, device=device)
    field = perturbed_field(2).to(device)
    nfe = []
    for tol in (1e-3, 1e-8):
        flow = ContinuousFlow(field, atol=tol, rtol=tol)
        with torch.no_grad():
            flow(x)
        nfe.append(flow.nfe)
    assert 0 < nfe[0] < nfe[1]


def test_fixed_step_rk4_converges_to_adaptive_solution(device):
    field = perturbed_field(2).to(device)
    x = torch.randn(8, 2, dtype=torch.float64, device=device)
    with torch.no_grad():
        y_ref, ld_ref = ContinuousFlow(field, atol=1e-10, rtol=1e-10)(x)
        errors = [(ContinuousFlow(field, solver="rk4", n_steps=n)(x)[0] - y_ref).abs().max().item() for n in (4, 8)]
        y16, ld16 = ContinuousFlow(field, solver="rk4", n_steps=16)(x)
    assert errors[1] < errors[0] / 8  # fourth order: halving the step divides the error by ~16
    torch.testing.assert_close(y16, y_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(ld16, ld_ref, atol=1e-5, rtol=0)


def test_exact_divergence_matches_jacobian_trace(device):
    field = perturbed_field(3, context_dim=2).to(device)
    x = torch.randn(4, 3, dtype=torch.float64, device=device, requires_grad=True)
    c = torch.randn(4, 2, dtype=torch.float64, device=device)
    div = exact_divergence(field(0.4, x, c), x, create_graph=False)
    for i in range(4):
        jac = torch.autograd.functional.jacobian(lambda v, i=i: field(0.4, v[None], c[i : i + 1])[0], x[i].detach())
        torch.testing.assert_close(div[i], torch.trace(jac))


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_estimator_is_unbiased(noise, device):
    dim, n = 3, 20_000
    field = perturbed_field(dim, scale=0.5).to(device)
    x0 = torch.randn(1, dim, dtype=torch.float64, device=device)

    # one vector field evaluation: mean of ε^T J ε over many ε equals tr J
    x = x0.expand(n, dim).clone().requires_grad_(True)
    v = field(0.3, x)
    exact = exact_divergence(v[:1], x, create_graph=False)[0]
    eps = torch.randn(n, dim, dtype=torch.float64, device=device)
    if noise == "rademacher":
        eps = eps.sign()
    est = hutchinson_divergence(v, x, eps, create_graph=False)
    assert est.std() < 5.0  # measured 1.72 (gaussian) and 1.75 (rademacher)
    assert abs(est.mean() - exact) < 4 * est.std() / math.sqrt(n) + 1e-12

    # the whole flow: noise fixed per solve, the mean log-det over many draws equals the exact one
    flows = {
        d: ContinuousFlow(field, solver="rk4", n_steps=4, divergence=d, noise=noise) for d in ("exact", "hutchinson")
    }
    batch = x0.expand(4000, dim)
    with torch.no_grad():
        _, ld_exact = flows["exact"](x0)
        y, ld_hutch = flows["hutchinson"](batch)
    torch.testing.assert_close(y, flows["exact"](x0)[0].expand_as(y))  # the trajectory ignores the noise
    assert 0 < ld_hutch.std() < 3.2  # it is an estimate (measured std 1.05 and 1.08) ...
    assert abs(ld_hutch.mean() - ld_exact[0]) < 4 * ld_hutch.std() / math.sqrt(len(batch))  # ... without bias


def test_adjoint_gradients_match_backpropagation(device):
    field = perturbed_field(2, context_dim=1).to(device)
    x = torch.randn(5, 2, dtype=torch.float64, device=device)
    c = torch.randn(5, 1, dtype=torch.float64, device=device)
    grads = []
    for adjoint in (False, True):
        flow = ContinuousFlow(field, atol=1e-8, rtol=1e-8, adjoint=adjoint)
        y, logdet = flow(x, c)
        loss = (y**2).sum() + logdet.sum()
        grads.append(torch.autograd.grad(loss, list(field.parameters())))
    for g_direct, g_adjoint in zip(grads[0], grads[1]):
        torch.testing.assert_close(g_adjoint, g_direct, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------- sample-only path
class CountingField(torch.nn.Module):
    """Wraps a vector field and counts its calls."""

    def __init__(self, field: VectorField):
        super().__init__()
        self.field, self.dim, self.context_dim, self.calls = field, field.dim, field.context_dim, 0

    def forward(self, t, x, context=None):
        self.calls += 1
        return self.field(t, x, context)


@pytest.mark.parametrize(("solver", "per_step"), [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_sample_only_path_gives_the_full_path_y_with_nfe_plain_calls(solver, per_step, dtype, device, monkeypatch):
    field = CountingField(perturbed_field(3, context_dim=2).to(device, dtype))
    flow = ContinuousFlow(field, solver=solver, n_steps=7)
    x = torch.randn(16, 3, dtype=dtype, device=device)
    c = torch.randn(16, 2, dtype=dtype, device=device)
    with torch.no_grad():
        y_full, _ = flow(x, c)
        x_full, _ = flow.inverse(y_full, c)
    field.calls = 0
    refused = []
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: refused.append(1))
    with torch.no_grad():
        y = flow.transform(x, c)
        assert field.calls == flow.nfe == 7 * per_step
        x_back = flow.inverse_transform(y, c)
        assert field.calls == 2 * 7 * per_step and flow.nfe == 7 * per_step
    assert not refused
    tol = {"atol": 1e-6, "rtol": 1e-6} if dtype == torch.float32 else {"atol": 1e-13, "rtol": 1e-13}
    torch.testing.assert_close(y, y_full, **tol)
    torch.testing.assert_close(x_back, x_full, **tol)


def test_sample_only_path_adaptive_solver_agrees_within_tolerance(device, monkeypatch):
    flow = ContinuousFlow(perturbed_field(2).to(device), atol=1e-9, rtol=1e-9)
    x = torch.randn(32, 2, dtype=torch.float64, device=device)
    with torch.no_grad():
        y_full, _ = flow(x)
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: pytest.fail("divergence computed"))
    with torch.no_grad():
        y = flow.transform(x)
    assert flow.nfe > 0
    torch.testing.assert_close(y, y_full, atol=1e-7, rtol=0)


def test_sample_only_path_is_differentiable_like_the_full_path(device):
    field = perturbed_field(2, context_dim=1).to(device)
    x = torch.randn(6, 2, dtype=torch.float64, device=device)
    c = torch.randn(6, 1, dtype=torch.float64, device=device)

    def grads(flow, path):
        y = flow(x, c)[0] if path == "full" else flow.transform(x, c)
        return torch.autograd.grad((y**2).sum(), list(field.parameters()))

    fixed = ContinuousFlow(field, solver="rk4", n_steps=6)
    for g_sample, g_full in zip(grads(fixed, "sample"), grads(fixed, "full")):
        torch.testing.assert_close(g_sample, g_full, atol=1e-12, rtol=1e-12)
    direct = grads(ContinuousFlow(field, atol=1e-8, rtol=1e-8), "sample")
    adjoint = grads(ContinuousFlow(field, atol=1e-8, rtol=1e-8, adjoint=True), "sample")
    for g_adjoint, g_direct in zip(adjoint, direct):
        torch.testing.assert_close(g_adjoint, g_direct, atol=1e-5, rtol=1e-5)


def test_transform_composes_through_sequential_and_inverse(device, monkeypatch):
    cnf = ContinuousFlow(perturbed_field(2).to(device), solver="midpoint", n_steps=5)
    norm = ActNorm(2).double().to(device)
    norm.initialized.fill_(True)
    with torch.no_grad():
        norm.shift.fill_(0.3)
        norm.log_scale.fill_(-0.2)
    flow = Sequential(norm, cnf, Inverse(norm))
    x = torch.randn(10, 2, dtype=torch.float64, device=device)
    with torch.no_grad():
        y_full = flow(x)[0]
        x_full = flow.inverse(y_full)[0]
        inv_full = Inverse(cnf)(x)[0]
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: pytest.fail("divergence computed"))
    with torch.no_grad():
        torch.testing.assert_close(flow.transform(x), y_full, atol=1e-13, rtol=1e-13)
        torch.testing.assert_close(flow.inverse_transform(y_full), x_full, atol=1e-13, rtol=1e-13)
        torch.testing.assert_close(Inverse(cnf).transform(x), inv_full, atol=1e-13, rtol=1e-13)
        assert flow.transform(x[:0]).shape == (0, 2)


def test_bad_arguments_raise():
    field = VectorField(2, context_dim=1)
    with pytest.raises(ValueError, match="unknown solver"):
        ContinuousFlow(field, solver="leapfrog")
    with pytest.raises(ValueError, match="context_dim"):
        ContinuousFlow(field, context_dim=3)
    with pytest.raises(ValueError, match=r"context of shape \(batch, 1\)"):
        ContinuousFlow(field)(torch.randn(3, 2))
    with pytest.raises(ValueError, match=r"\(batch, 2\)"):
        FlowMatching(VectorField(2), Normal(2), torch.randn(10, 3))
    with pytest.raises(ValueError, match="coupling"):
        FlowMatching(VectorField(2), Normal(2), torch.randn(10, 2), coupling="sinkhorn")
    with pytest.raises(ValueError, match="context"):
        FlowMatching(field, Normal(2), torch.randn(10, 2))  # the field needs a context


# ---------------------------------------------------------------------------------------------- coupling
def test_ot_pairing_is_the_exact_optimum():
    x0, x1 = torch.randn(6, 2, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
    rows, cols = ot_pairing(x0, x1)
    cost = ((x0[rows] - x1[cols]) ** 2).sum()
    brute = min(((x0 - x1[list(p)]) ** 2).sum() for p in itertools.permutations(range(6)))
    torch.testing.assert_close(cost, brute)


def test_ot_coupling_shortens_pairs_and_keeps_marginals():
    data = DoubleWell2D().sample_exact(5000, generator=torch.Generator().manual_seed(0))
    costs = {}
    for coupling in ("independent", "ot"):
        fm = FlowMatching(VectorField(2), Normal(2), data, batch_size=256, coupling=coupling)
        torch.manual_seed(3)
        x0, x1, _ = fm.sample_pairs()
        costs[coupling] = ((x0 - x1) ** 2).sum(-1).mean().item()
        torch.manual_seed(3)  # same draws without re-pairing: OT only permutes the prior samples
        idx = torch.randint(len(data), (256,))
        prior_draw = Normal(2).sample(256)
        torch.testing.assert_close(x1, data[idx])
        torch.testing.assert_close(x0.sort(0).values, prior_draw.sort(0).values)
    assert costs["ot"] < 0.5 * costs["independent"]


def test_ot_coupling_with_context_pairs_within_groups_and_keeps_context():
    data = torch.randn(400, 2)
    context = (torch.arange(400) % 2).float()[:, None]  # two discrete context values
    data = data + 4 * context  # context 1 shifts the data
    fm = FlowMatching(VectorField(2, context_dim=1), Normal(2), data, 64, coupling="ot", context=context)
    torch.manual_seed(5)
    x0, x1, c = fm.sample_pairs()
    torch.manual_seed(5)
    idx = torch.randint(400, (64,))
    prior_draw = Normal(2).sample(64)
    torch.testing.assert_close(c, context[idx])  # each x1 keeps its own context
    for value in (0.0, 1.0):
        group = c[:, 0] == value
        # the group's x0 are the prior draws of that group's rows, optimally re-paired among themselves
        torch.testing.assert_close(x0[group].sort(0).values, prior_draw[group].sort(0).values)
        rows, cols = ot_pairing(x0[group], x1[group])
        best = ((x0[group][rows] - x1[group][cols]) ** 2).sum()
        torch.testing.assert_close(((x0[group] - x1[group]) ** 2).sum(), best)


# ------------------------------------------------------------------------------------------ trained flows
@pytest.fixture(scope="module")
def trained_double_well():
    torch.manual_seed(0)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    target = DoubleWell2D()
    data = target.sample_exact(4000, generator=torch.Generator().manual_seed(1))
    field = VectorField(2, hidden=(64, 64))
    bg = BoltzmannGenerator(Normal(2), ContinuousFlow(field, atol=1e-5, rtol=1e-5), target)
    loss = FlowMatching(field, bg.prior, data, batch_size=256)
    trainer = Trainer(field, {"fm": loss}, lr=3e-3, schedule="cosine", total_steps=400, progress=False, seed=0)
    trainer.train(400)
    torch.set_num_threads(n)
    return bg, trainer


def test_trained_continuous_flow_density_integrates_to_one(trained_double_well):
    bg, trainer = trained_double_well
    assert trainer.history[-1]["loss/fm"] < 0.6 * trainer.history[0]["loss/fm"]
    g1, g2 = torch.linspace(-3.5, 3.5, 71), torch.linspace(-5.0, 5.0, 101)
    grid = torch.stack(torch.meshgrid(g1, g2, indexing="ij"), dim=-1).reshape(-1, 2)
    with torch.no_grad():
        density = bg.log_prob(grid).exp().reshape(len(g1), len(g2))
    integral = torch.trapezoid(torch.trapezoid(density, g2, dim=1), g1).item()
    assert abs(integral - 1.0) < 0.02
    # and the density is the target's, roughly: most of the flow mass lies where the target's does
    target_density = torch.exp(-bg.target.energy(grid) - bg.target.log_z()).reshape(len(g1), len(g2))
    overlap = torch.trapezoid(torch.trapezoid(torch.minimum(density, target_density), g2, dim=1), g1).item()
    assert overlap > 0.7


def test_trained_continuous_flow_is_a_boltzmann_generator(trained_double_well):
    bg, _ = trained_double_well
    x, log_w = bg.sample_with_log_weights(500)
    assert x.shape == (500, 2) and log_w.shape == (500,) and torch.isfinite(log_w).all()
    assert bg.flow.nfe > 0
    with torch.no_grad():
        z = bg.prior.sample(200)
        x, logdet = bg.flow(z)
        z_back, logdet_inv = bg.flow.inverse(x)
        log_q = bg.prior.log_prob(z) - logdet
    torch.testing.assert_close(z_back, z, atol=1e-3, rtol=0)
    torch.testing.assert_close(logdet_inv, -logdet, atol=1e-3, rtol=0)
    torch.testing.assert_close(bg.log_prob(x), log_q, atol=1e-3, rtol=0)
    # the right well (c < 0 tilt) carries most of the mass: exact P(x1 > 0) from the quadrature reference
    p_right = 1.0 / (1.0 + math.exp(bg.target.free_energy_difference_exact()))
    assert abs((x[:, 0] > 0).double().mean().item() - p_right) < 0.1


def test_conditional_flow_matching_follows_the_context():
    torch.manual_seed(0)
    context = (torch.arange(2000) % 2).float()[:, None] * 2 - 1  # c = ±1
    data = 2.0 * context + 0.3 * torch.randn(2000, 1)
    field = VectorField(1, context_dim=1, hidden=(32, 32))
    loss = FlowMatching(field, Normal(1), data, batch_size=128, coupling="ot", context=context)
    Trainer(field, {"fm": loss}, lr=3e-3, progress=False).train(300)
    flow = ContinuousFlow(field, solver="midpoint", n_steps=10)
    with torch.no_grad():
        for c in (-1.0, 1.0):
            x, _ = flow(torch.randn(1000, 1), torch.full((1000, 1), c))
            assert abs(x.mean().item() - 2.0 * c) < 0.15
            assert abs(x.std().item() - 0.3) < 0.15
