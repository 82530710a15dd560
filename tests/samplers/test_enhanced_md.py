"""Flow-enhanced MD on one particle in a tilted 3D double well (OpenMM ``CustomExternalForce``), checked against the
exact x-marginal by quadrature. Runtime: about 10 s on one thread."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.conftest import require

openmm = require("openmm")

from bgflow_sci.distributions import Distribution, Normal  # noqa: E402
from bgflow_sci.energies.openmm import MOLAR_GAS_CONSTANT  # noqa: E402
from bgflow_sci.samplers import FlowEnhancedMD, count_transitions, write_trajectory  # noqa: E402

T = 300.0
KT = MOLAR_GAS_CONSTANT * T  # kJ/mol
A, BARRIER, TILT, SIGMA_YZ, MASS = 0.5, 8.0, 0.5, 0.1, 12.0  # nm, kT, kT, nm, amu


def u_x(x: np.ndarray) -> np.ndarray:
    """Reduced double well along x: minima near ±A, barrier ~BARRIER kT, the left well favoured by the tilt."""
    return BARRIER * ((x / A) ** 2 - 1) ** 2 + TILT * x / A


def double_well_system(n_particles: int = 1) -> openmm.System:
    system = openmm.System()
    force = openmm.CustomExternalForce(f"{KT}*({BARRIER}*((x/{A})^2-1)^2 + {TILT}*x/{A} + 0.5*(y^2+z^2)/{SIGMA_YZ}^2)")
    for i in range(n_particles):
        system.addParticle(MASS)
        force.addParticle(i, [])
    system.addForce(force)
    return system


class TwoWellProposal(Distribution):
    """Gaussian mixture with one component per well (x), times a normal in (y, z): ``q`` close to the target.

    The weights (0.4 left, 0.6 right) are the wrong way round on purpose (the exact left population is 0.73), so
    a sampler that forgot ``log q`` in the acceptance ratio would be biased to the right.
    """

    def __init__(self):
        super().__init__()
        self.dim = 3
        self.register_buffer("means", torch.tensor([[-A, 0.0, 0.0], [A, 0.0, 0.0]]))
        self.register_buffer("std", torch.tensor([0.1, 0.12, 0.12]))
        self.register_buffer("log_weights", torch.tensor([0.4, 0.6]).log())

    def sample(self, n, context=None):
        component = torch.multinomial(self.log_weights.exp(), n, replacement=True)
        return self.means[component] + self.std * torch.randn(n, 3, device=self.means.device)

    def log_prob(self, x, context=None):
        z = (x[:, None, :] - self.means) / self.std
        log_n = -0.5 * (z**2).sum(-1) - self.std.log().sum() - 1.5 * math.log(2 * math.pi)
        return torch.logsumexp(self.log_weights + log_n, dim=1)


def proposal(device: torch.device | str = "cpu") -> Distribution:
    """The test proposal on ``device`` (the MD runs on OpenMM's CPU platform; draws and ``log q`` happen there)."""
    return TwoWellProposal().to(device)


def exact_marginal(edges: np.ndarray) -> tuple[np.ndarray, float]:
    """Bin probabilities of the x-marginal on ``edges`` and P(x < 0), by quadrature on a fine grid."""
    x = np.linspace(-2.0, 2.0, 400_001)
    p = np.exp(-(u_x(x) - u_x(x).min()))
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (p[1:] + p[:-1]) * np.diff(x))])
    cdf /= cdf[-1]
    return np.diff(np.interp(edges, x, cdf)), float(np.interp(0.0, x, cdf))


def well_labels(x: np.ndarray) -> np.ndarray:
    return np.where(x < -0.25, 0, np.where(x > 0.25, 1, -1))


@pytest.fixture(scope="module")
def enhanced_run(device):
    md = FlowEnhancedMD(
        double_well_system(), T, proposal(device), md_steps=40, proposals_per_cycle=4, timestep_fs=5.0, frame_every=20
    )
    return md.run(800, x0=[[A, 0.0, 0.0]], progress=False)


def test_enhanced_md_samples_exact_marginal(enhanced_run):
    r = enhanced_run
    assert r.positions.shape == (1600, 1, 3) and r.energies.shape == (1600,) and r.accepted.shape == (800,)
    assert r.n_md_steps == 800 * 40 and r.n_proposals == 800 * 4 and r.n_proposal_energies == 800 * 5
    assert r.n_evaluations == r.evaluations[-1] and r.n_invalid == 0
    assert 0.2 < r.acceptance_rate < 0.9
    x = r.positions[:, 0, 0].astype(np.float64)
    edges = np.linspace(-1.0, 1.0, 11)
    exact, left = exact_marginal(edges)
    hist = np.histogram(x, edges)[0] / len(x)
    # over seeds 0-5 the left-well population scatters by 0.012 around the exact 0.726 and the largest bin error is
    # at most 0.022: the tolerances are ~4 sigma (forgetting log q in the ratio gives errors of 0.1)
    assert abs(np.mean(x < 0) - left) < 0.05, (np.mean(x < 0), left)
    assert np.abs(hist - exact).max() < 0.045, (hist, exact)
    # harmonic y, z: <y^2> = SIGMA_YZ^2 (checks the MD segments and the velocity redraw too)
    assert np.mean(r.positions[:, 0, 1:].astype(np.float64) ** 2) == pytest.approx(SIGMA_YZ**2, rel=0.15)
    # recorded energies are the exact reduced energies of the recorded frames
    y, z = r.positions[:, 0, 1].astype(np.float64), r.positions[:, 0, 2].astype(np.float64)
    np.testing.assert_allclose(r.energies, u_x(x) + 0.5 * (y**2 + z**2) / SIGMA_YZ**2, atol=1e-3)


def test_enhanced_md_crosses_more_per_evaluation_than_plain_md(enhanced_run):
    enhanced = count_transitions(well_labels(enhanced_run.positions[:, 0, 0]))
    budget = enhanced_run.n_evaluations
    plain_md = FlowEnhancedMD(double_well_system(), T, None, md_steps=40, proposals_per_cycle=0, timestep_fs=5.0)
    plain = plain_md.run(budget // 40, x0=[[A, 0.0, 0.0]], progress=False)
    assert plain.n_evaluations == plain.n_md_steps <= budget and np.isnan(plain.acceptance_rate)
    n_plain = count_transitions(well_labels(plain.positions[:, 0, 0]))
    rate_enhanced, rate_plain = enhanced / budget, max(n_plain, 1) / plain.n_evaluations
    assert enhanced >= 50
    assert rate_enhanced > 20 * rate_plain, (enhanced, n_plain)


class _BrokenProposal(Distribution):
    """The test proposal with rows 0 mod 4 NaN and rows 2 mod 4 absurdly far away (energy above the cutoff)."""

    def __init__(self):
        super().__init__()
        self.base, self.dim = proposal(), 3

    def sample_with_log_prob(self, n, context=None):
        x, log_q = self.base.sample_with_log_prob(n)
        x[0::4], log_q[0::4] = math.nan, math.nan
        x[2::4] = 1e8
        return x, log_q

    def log_prob(self, x, context=None):
        return self.base.log_prob(x)


def test_invalid_proposals_are_rejected_and_counted():
    md = FlowEnhancedMD(double_well_system(), T, _BrokenProposal(), md_steps=10, proposals_per_cycle=8, timestep_fs=5.0)
    r = md.run(30, x0=[A, 0.0, 0.0], progress=False)
    assert r.n_proposals == 240 and r.n_invalid == 120
    assert r.accepted.sum() > 0  # the valid half still moves the chain
    assert np.isfinite(r.positions).all() and np.isfinite(r.energies).all()
    assert np.abs(r.positions).max() < 5.0


def test_bad_input_raises():
    system = double_well_system()
    for steps in (0, -5, 2.5):
        with pytest.raises(ValueError, match="md_steps"):
            FlowEnhancedMD(system, T, proposal(), md_steps=steps)
    with pytest.raises(ValueError, match="dim"):
        FlowEnhancedMD(system, T, Normal(6), md_steps=10)
    with pytest.raises(ValueError, match="proposals_per_cycle"):
        FlowEnhancedMD(system, T, proposal(), md_steps=10, proposals_per_cycle=-1)
    with pytest.raises(ValueError, match="needs a proposal"):
        FlowEnhancedMD(system, T, None, md_steps=10, proposals_per_cycle=2)
    with pytest.raises(ValueError, match="temperature"):
        FlowEnhancedMD(system, -1.0, proposal(), md_steps=10)
    with pytest.raises(ValueError, match="timestep_fs"):
        FlowEnhancedMD(system, T, proposal(), md_steps=10, timestep_fs=0.0)
    constrained = double_well_system(2)
    constrained.addConstraint(0, 1, 0.1)
    with pytest.raises(ValueError, match="constraints"):
        FlowEnhancedMD(constrained, T, Normal(6), md_steps=10)
    md = FlowEnhancedMD(system, T, proposal(), md_steps=10)
    with pytest.raises(ValueError, match=r"x0 must have shape \(1, 3\)"):
        md.run(1, x0=np.zeros((2, 3)), progress=False)


def test_reproducible_continuable_and_global_rng_untouched(device):
    cuda = device.type == "cuda"
    state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state(device) if cuda else None
    runs = []
    for _ in range(2):
        md = FlowEnhancedMD(double_well_system(), T, proposal(device), md_steps=10, proposals_per_cycle=3, seed=7)
        runs.append(md.run(15, x0=[A, 0.0, 0.0], progress=False))
    assert torch.equal(torch.get_rng_state(), state)
    if cuda:
        assert torch.equal(torch.cuda.get_rng_state(device), cuda_state)
    np.testing.assert_array_equal(runs[0].positions, runs[1].positions)
    np.testing.assert_array_equal(runs[0].accepted, runs[1].accepted)
    more = md.run(5, progress=False)  # continues from the last state
    assert len(more.positions) == 5 and more.evaluations[0] == 10 + 4


def test_count_transitions():
    assert count_transitions([0, 0, 1, 1, 0]) == 2
    assert count_transitions([0, -1, 1, -1, -1, 1, 0]) == 2
    assert count_transitions([0, -1, -1, 0]) == 0
    assert count_transitions([-1, -1, 1, 0, -1]) == 1
    assert count_transitions([]) == 0 and count_transitions([-1, -1]) == 0
    assert count_transitions([0, 1, 1, 0], chain=[0, 0, 1, 1]) == 2  # no transition across the chain boundary
    with pytest.raises(ValueError, match="integers"):
        count_transitions([0.0, 1.0])
    with pytest.raises(ValueError, match="chain"):
        count_transitions([0, 1], chain=[0])


def test_write_trajectory(tmp_path):
    mdtraj = require("mdtraj")
    md = FlowEnhancedMD(double_well_system(), T, proposal(), md_steps=10, proposals_per_cycle=2, timestep_fs=5.0)
    r = md.run(6, x0=[A, 0.0, 0.0], progress=False)
    top = mdtraj.Topology()
    top.add_atom("X", mdtraj.element.argon, top.add_residue("X", top.add_chain()))
    path = write_trajectory(r, top, tmp_path / "enhanced.dcd")
    traj = mdtraj.load(str(path), top=top)
    assert traj.n_frames == 6
    np.testing.assert_allclose(traj.xyz, r.positions, atol=1e-5)
    with pytest.raises(ValueError, match="atoms"):
        write_trajectory(r, mdtraj.Topology.from_openmm(_two_atom_topology()), tmp_path / "bad.dcd")


def _two_atom_topology():
    from openmm import app

    top = app.Topology()
    residue = top.addResidue("X", top.addChain())
    for _ in range(2):
        top.addAtom("X", app.Element.getBySymbol("Ar"), residue)
    return top
