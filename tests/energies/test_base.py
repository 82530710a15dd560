"""The one energy API: ``Energy.energy_and_force`` on every energy of the package, ``as_energy``, and a source scan
that keeps force-by-autograd in one place."""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import bgflow_sci
from bgflow_sci import energies as E
from bgflow_sci.distributions import Normal

# energy class -> (factory, typical configurations (batch, generator) in float64 on the CPU)
_GEN = Callable[[int, torch.Generator], torch.Tensor]


def _lattice(n: int, spacing: float, spatial_dim: int = 3) -> _GEN:
    pts = torch.stack(torch.meshgrid(*[torch.arange(3.0, dtype=torch.float64)] * spatial_dim, indexing="ij"), -1)
    pts = pts.reshape(-1, spatial_dim)[:n] * spacing

    def draw(b: int, g: torch.Generator) -> torch.Tensor:
        return (pts[None] + 0.05 * torch.randn(b, n, spatial_dim, generator=g, dtype=torch.float64)).reshape(b, -1)

    return draw


def _normal(scale: float, dim: int, shift: float = 0.0) -> _GEN:
    return lambda b, g: shift + scale * torch.randn(b, dim, generator=g, dtype=torch.float64)


def _gauss(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((x - 0.3) ** 2).sum(-1)


CASES: dict[str, tuple[type, Callable[[], E.Energy], _GEN]] = {
    "double_well": (E.DoubleWell2D, E.DoubleWell2D, _normal(1.5, 2)),
    "mueller_brown": (E.MuellerBrown, E.MuellerBrown, _normal(0.8, 2, 0.3)),
    "gmm": (
        E.GaussianMixture,
        lambda: E.GaussianMixture(torch.tensor([[0.0, 1.0], [2.0, -1.0]]), torch.tensor([0.5, 1.5])),
        _normal(2.0, 2),
    ),
    "gmm40": (E.GaussianMixture40, E.GaussianMixture40, _normal(20.0, 2)),
    "many_well": (E.ManyWell, lambda: E.ManyWell(n_copies=3), _normal(1.5, 6)),
    "many_well32": (E.ManyWell32, E.ManyWell32, _normal(1.5, 32)),
    "dw_particles": (E.DoubleWellParticles, lambda: E.DoubleWellParticles(3, 3), _normal(2.0, 9)),
    "dw4": (E.DW4, E.DW4, _normal(2.0, 8)),
    "lj": (E.LennardJonesCluster, lambda: E.LennardJonesCluster(5, 2), _lattice(5, 1.1, 2)),
    "lj13": (E.LJ13, E.LJ13, _lattice(13, 1.1)),
    "scaled": (E.ScaledEnergy, lambda: E.ScaledEnergy(E.DoubleWell2D(), 2.5), _normal(1.5, 2)),
    "biased": (E.BiasedEnergy, lambda: E.BiasedEnergy(E.DoubleWell2D(), lambda x: x[:, 0] ** 3), _normal(1.5, 2)),
    "phase_space": (E.PhaseSpaceEnergy, lambda: E.PhaseSpaceEnergy(E.DoubleWell2D(), mass=2.0), _normal(1.2, 4)),
    "function": (E.FunctionEnergy, lambda: E.FunctionEnergy(_gauss, 3), _normal(1.0, 3)),
    "distribution": (E.FunctionEnergy, lambda: E.as_energy(Normal(3, 0.5, 2.0).double()), _normal(1.0, 3)),
    "interpolated_0": (
        E.InterpolatedEnergy,
        lambda: E.InterpolatedEnergy(Normal(2).energy, E.DoubleWell2D(), 0.0),
        _normal(1.5, 2),
    ),
    "interpolated_mid": (
        E.InterpolatedEnergy,
        lambda: E.InterpolatedEnergy(Normal(2).double(), E.DoubleWell2D(), 0.37),
        _normal(1.5, 2),
    ),
    "interpolated_1": (
        E.InterpolatedEnergy,
        lambda: E.InterpolatedEnergy(_gauss, E.MuellerBrown(), 1.0),
        _normal(0.8, 2),
    ),
}

# exported energies with their own oracle tests (analytic forces against OpenMM and autograd), and abstract bases
ELSEWHERE = {
    E.Energy: "the abstract protocol",
    E.PairwiseParticleEnergy: "an abstract base (pair_potential); its subclasses are cases here",
    E.TorchForceField: "tests/energies/test_torch_ff.py: analytic energy_and_force against OpenMM and autograd",
    E.OpenMMEnergy: "tests/energies/test_openmm_bridge.py: OpenMM forces against OpenMM and autograd",
    E.TetrahedraInField: "tests/energies/test_tetrahedra.py: quaternion inputs (unit norm checked), sign invariance",
    E.RigidBodyEnergy: "tests/energies/test_ice.py: rigid-body states against OpenMM on the same atoms, forces vs FD",
}


def test_every_exported_energy_is_covered():
    exported = {getattr(E, n) for n in E.__all__ if inspect.isclass(getattr(E, n))}
    energies = {c for c in exported if issubclass(c, E.Energy)}
    covered = {cls for cls, _, _ in CASES.values()} | set(ELSEWHERE)
    assert energies <= covered, energies - covered


@pytest.fixture(params=list(CASES), ids=list(CASES))
def case(request, device):
    _, factory, draw = CASES[request.param]
    energy = factory().to(device)
    x = draw(6, torch.Generator().manual_seed(1)).to(device)
    return energy.double(), x


def test_energy_and_force_matches_autograd_float64(case):
    energy, x = case
    u, f = energy.energy_and_force(x)
    assert u.shape == (6,) and f.shape == x.shape and u.dtype == f.dtype == torch.float64
    assert torch.isfinite(u).all() and torch.isfinite(f).all()
    assert not u.requires_grad and not f.requires_grad
    torch.testing.assert_close(u, energy.energy(x), rtol=1e-12, atol=1e-12)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(energy.energy(xg).sum(), xg)
    torch.testing.assert_close(f, -grad, rtol=1e-10, atol=1e-10)
    assert torch.equal(energy.force(x), f)


def test_invalid_rows_give_inf_energy_and_zero_force(case):
    energy, x = case
    u_ref, f_ref = energy.energy_and_force(x)
    bad = x.clone()
    bad[1, 0], bad[4, -1] = math.nan, math.inf
    energy.reset_invalid_count()
    u, f = energy.energy_and_force(bad)
    assert u[1] == u[4] == math.inf and (f[[1, 4]] == 0).all()
    keep = [0, 2, 3, 5]
    torch.testing.assert_close(u[keep], u_ref[keep], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(f[keep], f_ref[keep], rtol=1e-12, atol=1e-12)
    assert energy.reset_invalid_count() >= 2
    empty_u, empty_f = energy.energy_and_force(x[:0])
    assert empty_u.shape == (0,) and empty_f.shape == (0, energy.dim)


def test_nan_energy_is_inf_with_zero_force():
    class HalfDefined(E.Energy):
        def _energy(self, x):
            return torch.where(x[:, 0] > 0, torch.nan, 0.5 * (x**2).sum(-1))

    x = torch.tensor([[1.0, 2.0], [-1.0, 2.0]], dtype=torch.float64)
    u, f = HalfDefined(2).energy_and_force(x)
    assert u.tolist() == [math.inf, 2.5] and f.tolist() == [[0.0, 0.0], [1.0, -2.0]]


def test_create_graph_gives_differentiable_forces():
    """``d(F·v)/dx = -H v`` against autograd's Hessian; the parameters' gradients flow through the force too."""
    well = E.DoubleWell2D().double()
    x = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    v = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    u, f = well.energy_and_force(x, create_graph=True)
    assert u.requires_grad and f.requires_grad
    (hv,) = torch.autograd.grad((f * v).sum(), x)
    hess = torch.stack([torch.autograd.functional.hessian(lambda y: well.energy(y[None]).sum(), xi) for xi in x])
    torch.testing.assert_close(hv, -torch.einsum("bij,bj->bi", hess, v))

    scale = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    fn = E.FunctionEnergy(lambda y: scale * (y**2).sum(-1), 2)
    _, f = fn.energy_and_force(x.detach(), create_graph=True)  # x without grad: the graph reaches the parameter
    (g,) = torch.autograd.grad(f.sum(), scale)
    torch.testing.assert_close(g, -2 * x.detach().sum())
    _, f = fn.energy_and_force(x.detach())
    assert not f.requires_grad


def test_invalid_counter_stays_on_the_device_of_the_input(device):
    well = E.DoubleWell2D()
    well.energy(torch.tensor([[math.nan, 0.0]], device=device))
    assert well.n_invalid.device.type == device.type and well.reset_invalid_count() == 1


def test_as_energy():
    well = E.DoubleWell2D()
    assert E.as_energy(well) is well and E.as_energy(well, 2) is well
    prior = Normal(3, 1.0, 2.0)
    x = torch.randn(5, 3)
    for obj in (prior, prior.energy):  # a Distribution, or its bound method: dim known
        wrapped = E.as_energy(obj)
        assert isinstance(wrapped, E.FunctionEnergy) and wrapped.dim == 3
        torch.testing.assert_close(wrapped.energy(x), -prior.log_prob(x))
        torch.testing.assert_close(wrapped.force(x), -(x - 1.0) / 4.0)
    owned = E.as_energy(prior).double()  # the Distribution itself is owned: it moves with the energy
    assert owned.owner is prior and prior.mean.dtype == torch.float64
    assert not hasattr(E.as_energy(prior.energy), "owner")  # a bound method is not (the layout of older SNF blocks)
    assert E.as_energy(_gauss, 4).dim == 4
    with pytest.raises(ValueError, match="pass dim"):
        E.as_energy(_gauss)
    with pytest.raises(ValueError, match="dim 2, expected 3"):
        E.as_energy(well, 3)
    with pytest.raises(TypeError, match="Energy"):
        E.as_energy(42)
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        E.FunctionEnergy(lambda y: y, 3).energy(x)


# ---- one place computes forces by autograd -----------------------------------------------------------------------
AUTOGRAD_ALLOWED = {
    "energies/base.py": "Energy.energy_and_force: the one force of an energy by autograd",
    "flows/continuous.py": "divergence of an ODE flow's vector field (exact trace and Hutchinson estimator)",
    "flows/smooth.py": "gradients of a root-finding inverse by the implicit function theorem",
    "energies/forcefield/custom.py": "gradients of arbitrary user energy expressions of OpenMM Custom* forces",
    "energies/forcefield/ewald.py": "PME forces through the B-spline charge spreading and the FFT",
}  # force matching takes the model's force through as_energy(-log q).energy_and_force
_AUTOGRAD = re.compile(r"autograd\.grad\b|from\s+torch\.autograd\s+import[^\n]*\bgrad\b|torch\.func\.grad|functorch")


def test_forces_by_autograd_only_in_energy_base():
    root = Path(bgflow_sci.__file__).parent
    hits: dict[str, int] = {}
    for path in sorted(root.rglob("*.py")):
        n = len(_AUTOGRAD.findall(path.read_text(encoding="utf-8")))
        if n:
            hits[path.relative_to(root).as_posix()] = n
    assert set(hits) <= set(AUTOGRAD_ALLOWED), {k: v for k, v in hits.items() if k not in AUTOGRAD_ALLOWED}
    assert hits.get("energies/base.py") == 1
