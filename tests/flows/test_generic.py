"""One test for every exported Flow: invertibility, log-det against the autograd Jacobian, inverse log-det.

Every class exported from ``bgflow_sci.flows`` must have a factory in ``EXAMPLES``; a new class without
one fails ``test_every_exported_flow_has_an_example``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import pytest
import torch

import bgflow_sci.flows as F
from bgflow_sci.flows import Flow
from bgflow_sci.flows.transformers import Domain

DIM, CONTEXT_DIM, BATCH = 4, 3, 6

# factory(context_dim) -> Flow; classes that take no context ignore context_dim (and the context tests skip them)
EXAMPLES: dict[type, Callable[[int], Flow]] = {
    F.AffineCoupling: lambda c: F.AffineCoupling(DIM, [True, False, True, False], hidden=(16,), context_dim=c),
    F.ActNorm: lambda c: F.ActNorm(DIM),
    F.Permutation: lambda c: F.Permutation(DIM, seed=3),
    F.Swap: lambda c: F.Swap(DIM),
    F.Sequential: lambda c: F.Sequential(
        F.AffineCoupling(DIM, hidden=(16,), context_dim=c), F.Swap(DIM), F.ActNorm(DIM), F.Permutation(DIM)
    ),
    F.Inverse: lambda c: F.Inverse(F.AffineCoupling(DIM, hidden=(16,), context_dim=c)),
    F.PositionsOnly: lambda c: F.PositionsOnly(F.AffineCoupling(DIM // 2, hidden=(8,), context_dim=c), DIM // 2),
    F.ContinuousFlow: lambda c: F.ContinuousFlow(F.VectorField(DIM, c, hidden=(16,)), atol=1e-9, rtol=1e-9),
    F.Coupling: lambda c: F.Coupling(
        DIM, F.RationalQuadraticSpline(MIXED, n_bins=5, bound=2.0), [True, False, True, False], (16,), c
    ),
    F.MaskedAutoregressive: lambda c: F.Sequential(
        F.MaskedAutoregressive(DIM, F.RationalQuadraticSpline(MIXED, 5, 2.0), (16,), c, mode="maf"),
        F.MaskedAutoregressive(DIM, F.RationalQuadraticSpline(MIXED, 5, 2.0), (16,), c, [2, 0, 3, 1], mode="iaf"),
    ),
    F.Elementwise: lambda c: F.Elementwise(DIM, F.RationalQuadraticSpline(MIXED, 5, 2.0), c, hidden=(8,)),
    F.CircularShift: lambda c: F.CircularShift(DIM, [2], Domain.circle()),
    F.LULinear: lambda c: F.LULinear(DIM, permutation=[2, 0, 3, 1]),
}

# coordinates of MIXED: real, interval [0, 1], circle [-pi, pi) (drawn over two periods: wrapping), real
MIXED = [Domain.real(), Domain.interval(0.0, 1.0), Domain.circle(), Domain.real()]


def mixed_inputs(n: int, device: torch.device) -> torch.Tensor:
    x = torch.randn(n, DIM, dtype=torch.float64, device=device)
    x[:, 1] = torch.rand(n, dtype=torch.float64, device=device)
    x[:, 2] = 2 * math.pi * (2 * torch.rand(n, dtype=torch.float64, device=device) - 1)
    return x


# optional per-example input sampler (n, device) -> (n, DIM) float64 for flows whose coordinates have domains
INPUTS: dict[type, Callable[[int, torch.device], torch.Tensor]] = {
    F.Coupling: mixed_inputs,
    F.MaskedAutoregressive: mixed_inputs,
    F.Elementwise: mixed_inputs,
    F.CircularShift: mixed_inputs,
}


# SmoothMixture (smooth flows) inside the generic layers; each variant is keyed by a trivial labelled subclass
SMOOTH = [Domain.interval(0.0, 1.0), Domain.circle(), Domain.interval(-1.0, 2.0), Domain.circle(0.0, 1.0)]
SmoothCoupling = type("SmoothCoupling", (F.Coupling,), {})
SmoothAutoregressive = type("SmoothAutoregressive", (F.MaskedAutoregressive,), {})
SmoothElementwise = type("SmoothElementwise", (F.Elementwise,), {})


def smooth_inputs(n: int, device: torch.device) -> torch.Tensor:
    u = torch.rand(n, DIM, dtype=torch.float64, device=device)
    return torch.stack([u[:, 0], 2 * math.pi * (2 * u[:, 1] - 1), 3 * u[:, 2] - 1, 2 * u[:, 3] - 0.5], dim=1)


EXAMPLES.update(
    {
        SmoothCoupling: lambda c: SmoothCoupling(DIM, F.SmoothMixture(MIXED, 3), [False, True, True, False], (16,), c),
        SmoothAutoregressive: lambda c: F.Sequential(
            SmoothAutoregressive(DIM, F.SmoothMixture(SMOOTH, 3), (16,), c, mode="maf"),
            SmoothAutoregressive(DIM, F.SmoothMixture(SMOOTH, 3, beta=2), (16,), c, [2, 0, 3, 1], mode="iaf"),
        ),
        SmoothElementwise: lambda c: SmoothElementwise(DIM, F.SmoothMixture(SMOOTH, 3), c, hidden=(8,)),
    }
)
INPUTS.update({SmoothCoupling: mixed_inputs, SmoothAutoregressive: smooth_inputs, SmoothElementwise: smooth_inputs})


def draw_inputs(cls: type, device: torch.device) -> torch.Tensor:
    if cls in INPUTS:
        return INPUTS[cls](BATCH, device)
    return torch.randn(BATCH, DIM, dtype=torch.float64, device=device)


# per-example tolerances where the map is only solved to a tolerance: an ODE flow (adaptive dopri5 at 1e-9) is
# invertible and matches its autograd Jacobian to ~1e-8, not to round-off; 1e-12 solves would take minutes here
TOLERANCES: dict[type, float] = {F.ContinuousFlow: 1e-7}


def exported_flow_classes() -> list[type]:
    return [
        obj
        for name in F.__all__
        if inspect.isclass(obj := getattr(F, name)) and issubclass(obj, Flow) and obj is not Flow
    ]


# Flows whose contract differs from a square bijection are checked by their own tests:
# internal coordinates change dimension (log-det checked against the autograd Jacobian of the free Cartesian
# coordinates), stochastic blocks are Markov kernels (path entropies checked against exact partition functions).
TESTED_ELSEWHERE = {
    F.InternalCoordinates: "tests/flows/test_internal.py",
    F.OverdampedLangevinBlock: "tests/flows/test_stochastic.py",
    F.UnderdampedLangevinBlock: "tests/flows/test_stochastic.py",
    F.MetropolisMC: "tests/flows/test_stochastic.py",
    # manifold flows on (S^3)^n: log-dets with respect to the sphere volume, checked in the tangent spaces
    F.DoubleMobius: "tests/flows/test_sphere.py",
    F.QuaternionRotation: "tests/flows/test_sphere.py",
    # many rigid bodies (periodic positions + (S^3)^n): tangent-space log-dets in tests/flows/test_rigid.py
    F.PositionCoupling: "tests/flows/test_rigid.py",
    F.OrientationCoupling: "tests/flows/test_rigid.py",
}


def test_every_exported_flow_has_an_example():
    missing = [c.__name__ for c in exported_flow_classes() if c not in EXAMPLES and c not in TESTED_ELSEWHERE]
    assert not missing, f"add a factory to EXAMPLES for: {missing}"


def make(cls: type, with_context: bool, device: torch.device) -> tuple[Flow, torch.Tensor | None]:
    flow = EXAMPLES[cls](CONTEXT_DIM if with_context else 0).to(device=device, dtype=torch.float64)
    if with_context and flow.context_dim == 0:
        pytest.skip(f"{cls.__name__} takes no context")
    with torch.no_grad():  # move away from the identity initialisation so the test means something
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    context = torch.randn(BATCH, CONTEXT_DIM, dtype=torch.float64, device=device) if with_context else None
    return flow.eval(), context


@pytest.mark.parametrize("with_context", [False, True], ids=["plain", "context"])
@pytest.mark.parametrize("cls", list(EXAMPLES), ids=lambda c: c.__name__)
def test_flow_contract(cls, with_context, device):
    flow, context = make(cls, with_context, device)
    x = draw_inputs(cls, device)

    y, logdet = flow(x, context)
    assert y.shape == x.shape and logdet.shape == (BATCH,)
    x_back, logdet_inv = flow.inverse(y, context)
    tol, jac_tol = TOLERANCES.get(cls, 1e-9), TOLERANCES.get(cls, 1e-8)
    torch.testing.assert_close(x_back, x, atol=tol, rtol=tol)
    torch.testing.assert_close(logdet_inv, -logdet, atol=tol, rtol=tol)

    for i in range(BATCH):
        ctx_i = None if context is None else context[i : i + 1]
        jac = torch.autograd.functional.jacobian(lambda v, c=ctx_i: flow(v[None], c)[0][0], x[i])
        torch.testing.assert_close(logdet[i], torch.linalg.slogdet(jac)[1], atol=jac_tol, rtol=jac_tol)

    y2 = draw_inputs(cls, device)
    x2, _ = flow.inverse(y2, context)
    torch.testing.assert_close(flow(x2, context)[0], y2, atol=tol, rtol=tol)


@pytest.mark.parametrize("cls", list(EXAMPLES), ids=lambda c: c.__name__)
def test_flow_rejects_wrong_shape_and_handles_empty_batch(cls, device):
    flow = EXAMPLES[cls](0).to(device)
    with pytest.raises(ValueError, match=r"\(batch, 4\)"):
        flow(torch.randn(5, DIM + 1, device=device))
    y, logdet = flow(torch.zeros(0, DIM, device=device))
    assert y.shape == (0, DIM) and logdet.shape == (0,)


def test_context_is_required_and_checked(device):
    flow = F.AffineCoupling(DIM, context_dim=CONTEXT_DIM).to(device)
    x = torch.randn(BATCH, DIM, device=device)
    with pytest.raises(ValueError, match="needs a context"):
        flow(x)
    with pytest.raises(ValueError, match="context must have shape"):
        flow(x, torch.randn(BATCH, CONTEXT_DIM + 1, device=device))


def test_context_changes_the_map(device):
    flow = F.AffineCoupling(DIM, hidden=(16,), context_dim=CONTEXT_DIM).to(device)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(1, DIM, device=device).expand(2, DIM)
    y, _ = flow(x, torch.randn(2, CONTEXT_DIM, device=device))
    assert not torch.allclose(y[0], y[1])


def test_actnorm_data_dependent_init_standardises_data(dtype, device):
    data = 3.0 + 2.5 * torch.randn(4000, DIM, dtype=dtype, device=device)
    act = F.ActNorm(DIM).to(device=device, dtype=dtype)
    z, _ = act.inverse(data)
    assert bool(act.initialized)
    torch.testing.assert_close(z.mean(0), torch.zeros(DIM, dtype=dtype, device=device), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(DIM, dtype=dtype, device=device), atol=1e-4, rtol=0)
    # a second batch does not re-initialise
    act.inverse(data[:100] + 10.0)
    torch.testing.assert_close(act.shift.detach(), data.mean(0))


def test_permutation_rejects_non_permutation():
    with pytest.raises(ValueError, match="permutation"):
        F.Permutation(3, [0, 0, 1])


def test_real_nvp_factory_is_identity_at_init_and_float32(device):
    flow = F.real_nvp(DIM, 4, hidden=(8,), actnorm=True).to(device)
    x = torch.randn(BATCH, DIM, device=device)
    y, logdet = flow(x)
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(logdet, torch.zeros(BATCH, device=device))
