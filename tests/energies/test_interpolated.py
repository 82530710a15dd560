"""The interpolated energy ``u_λ = (1 - λ) u_start + λ u_end`` of stochastic flows and annealing."""

from __future__ import annotations

import math

import pytest
import torch

from bgflow_sci.distributions import Normal
from bgflow_sci.energies import DoubleWell2D, Energy, FunctionEnergy, InterpolatedEnergy


class Counting(Energy):
    """A quadratic that counts its evaluations and is ``+inf`` for ``x_0 > wall``."""

    def __init__(self, dim: int, wall: float = math.inf):
        super().__init__(dim)
        self.calls, self.wall = 0, wall

    def _energy(self, x):
        self.calls += 1
        return torch.where(x[:, 0] > self.wall, torch.inf, 0.5 * ((x - 1.0) ** 2).sum(-1))


class AnalyticQuadratic(Energy):
    """``u = |x - 1|² / 2`` with its analytic ``energy_and_force`` (the way TorchForceField and OpenMM provide one)."""

    def __init__(self, dim: int, wall: float = math.inf):
        super().__init__(dim)
        self.wall, self.calls = wall, 0

    def _energy(self, x):
        return torch.where(x[:, 0] > self.wall, torch.inf, 0.5 * ((x - 1.0) ** 2).sum(-1))

    def energy_and_force(self, x, create_graph=False):
        self.calls += 1
        u = self.energy(x)
        ok = torch.isfinite(u)[:, None]
        return u, torch.where(ok, 1.0 - x, torch.zeros_like(x))


def _x(device, n=8, dim=2):
    return (1.5 * torch.randn(n, dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)).to(device)


@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_endpoints_are_one_component_even_where_the_other_is_infinite(lam, device):
    x = _x(device)
    live, dead = DoubleWell2D().double(), Counting(2, wall=-math.inf)  # dead: +inf everywhere
    start, end = (live, dead) if lam == 0.0 else (dead, live)
    path = InterpolatedEnergy(start, end, lam)
    u, f = path.energy_and_force(x)
    u_ref, f_ref = live.energy_and_force(x)
    assert torch.equal(u, u_ref) and torch.equal(f, f_ref) and torch.equal(path.energy(x), live.energy(x))
    assert dead.calls == 0  # the switched-off term is not even evaluated
    u2, f2 = path.components(x)
    assert u2.shape == (8, 2) and f2.shape == (8, 2, 2) and dead.calls == 1  # components: both, always
    torch.testing.assert_close(path.combine(u2[:, 0], u2[:, 1]), u_ref)
    torch.testing.assert_close(path.combine(f2[:, 0], f2[:, 1]), f_ref)


def test_in_between_energies_and_forces_are_mixed(device):
    x = _x(device)
    prior, well = Normal(2).double().to(device), DoubleWell2D().double()
    lam = 0.3
    path = InterpolatedEnergy(prior.energy, well, lam)  # dim from the target
    assert path.dim == 2 and isinstance(path.start, FunctionEnergy) and path.end is well
    u, f = path.energy_and_force(x)
    torch.testing.assert_close(u, 0.7 * prior.energy(x) + 0.3 * well.energy(x))
    torch.testing.assert_close(f, 0.7 * (-x) + 0.3 * well.force(x))
    torch.testing.assert_close(path.energy(x), u)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(path.energy(xg).sum(), xg)
    torch.testing.assert_close(f, -grad)
    # differentiable forces, as the Langevin blocks of stochastic flows need them
    u_g, f_g = path.energy_and_force(xg, create_graph=True)
    assert f_g.requires_grad
    (h,) = torch.autograd.grad(f_g.sum(), xg)
    assert torch.isfinite(h).all()


def test_in_between_mixes_analytic_component_forces(device):
    x = _x(device)
    prior, quad = Normal(2).double().to(device), AnalyticQuadratic(2)
    path = InterpolatedEnergy(prior, quad, 0.8)
    u, f = path.energy_and_force(x)
    assert quad.calls == 1  # the component's own forces are used
    torch.testing.assert_close(u, 0.2 * prior.energy(x) + 0.8 * quad.energy(x))
    torch.testing.assert_close(f, 0.2 * (-x) + 0.8 * (1.0 - x))
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(path.energy(xg).sum(), xg)
    torch.testing.assert_close(f, -grad)


@pytest.mark.parametrize("walled_cls", [Counting, AnalyticQuadratic], ids=["autograd", "analytic"])
def test_infinite_components_in_between(walled_cls, device):
    x = _x(device)
    walled = walled_cls(2, wall=0.0)
    path = InterpolatedEnergy(Normal(2).double().to(device), walled, 0.5)
    u, f = path.energy_and_force(x)
    blocked = x[:, 0] > 0
    assert blocked.any() and (~blocked).any()
    assert (u[blocked] == math.inf).all() and (f[blocked] == 0).all() and torch.isfinite(u[~blocked]).all()

    minus_inf = FunctionEnergy(lambda y: torch.full_like(y[:, 0], -math.inf), 2)
    u, f = InterpolatedEnergy(walled, minus_inf, 0.5).energy_and_force(x)  # +inf against -inf: NaN -> +inf
    assert (u[blocked] == math.inf).all() and (f[blocked] == 0).all()


def test_set_lambda_and_bad_arguments():
    path = InterpolatedEnergy(DoubleWell2D(), Normal(2))
    assert path.lam == 0.0
    path.set_lambda(0.25)
    assert path.lam == 0.25
    with pytest.raises(ValueError, match="beta must lie in"):
        path.set_lambda(1.5, "beta")
    with pytest.raises(ValueError, match="lambda must lie in"):
        InterpolatedEnergy(DoubleWell2D(), DoubleWell2D(), -0.1)
    with pytest.raises(ValueError, match="pass dim"):
        InterpolatedEnergy(lambda x: x.sum(-1), lambda x: x.sum(-1), 0.5)
    assert InterpolatedEnergy(lambda x: x.sum(-1), lambda x: x.sum(-1), 0.5, dim=3).dim == 3
    with pytest.raises(ValueError, match="dim"):
        InterpolatedEnergy(DoubleWell2D(), Normal(3), 0.5)
