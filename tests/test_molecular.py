"""The molecular Boltzmann generator (internal coordinates + circular splines) is a consistent density."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bgflow_sci.molecular import molecular_boltzmann_generator
from tests.conftest import require

PDB = Path(__file__).resolve().parents[1] / "data" / "alanine_dipeptide" / "alanine_dipeptide.pdb"


@pytest.fixture(scope="module")
def alanine():
    md = require("mdtraj")
    traj = md.load(str(PDB))
    xyz = torch.tensor(traj.xyz[0], dtype=torch.float64).reshape(1, -1)
    data = xyz + 0.005 * torch.randn(200, xyz.shape[1], dtype=torch.float64)
    return traj.topology, data


def test_sample_and_log_prob_agree(alanine):
    topology, data = alanine
    bg = molecular_boltzmann_generator(topology, None, data, n_layers=4, hidden=(32,)).double()
    with torch.no_grad():
        for p in bg.flow.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
        x, log_q = bg.sample_with_log_prob(16)
        assert x.shape == (16, 66) and bg.dim == 66 and bg.latent_dim == 60
        torch.testing.assert_close(bg.log_prob(x), log_q, atol=1e-6, rtol=1e-6)
        # the data are in an arbitrary frame: log q is invariant to rigid motions
        rot = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))[0]
        rot = rot * torch.sign(torch.det(rot))
        moved = (data[:8].reshape(8, 22, 3) @ rot.T + torch.randn(3, dtype=torch.float64)).reshape(8, 66)
        torch.testing.assert_close(bg.log_prob(moved), bg.log_prob(data[:8]), atol=1e-8, rtol=1e-8)


def test_maximum_likelihood_step_improves_fit(alanine):
    from bgflow_sci.training import MaximumLikelihood, Trainer

    topology, data = alanine
    bg = molecular_boltzmann_generator(topology, None, data.float(), n_layers=2, hidden=(32,))
    loss = MaximumLikelihood(bg, data.float(), batch_size=64)
    with torch.no_grad():
        before = float(-bg.log_prob(data.float()).mean())
    Trainer(bg, {"ml": loss}, lr=1e-3, progress=False).train(30)
    with torch.no_grad():
        after = float(-bg.log_prob(data.float()).mean())
    assert after < before - 1.0


def test_bad_data_raises(alanine):
    topology, data = alanine
    with pytest.raises(ValueError, match=r"\(n_frames, 66\)"):
        molecular_boltzmann_generator(topology, None, data[:, :60])
    bad = data.clone()
    bad[3, 5] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        molecular_boltzmann_generator(topology, None, bad)


def test_tight_torsions_are_real_coordinates_and_rotors_stay_circular():
    """On the shipped MD frames: sibling-relative and improper-like torsions are tight, the rotors (φ-, ψ-related
    and the three methyl groups) stay on the circle, and the flow round-trips MD frames exactly."""
    from bgflow_sci.molecular import internal_coordinate_statistics
    from bgflow_sci.workflows.systems import load_system

    ad = load_system("alanine_dipeptide")
    pos = ad.load_reference_data("obc2")["positions"][::10]
    x = torch.as_tensor(pos.reshape(len(pos), -1), dtype=torch.float64)
    bg = molecular_boltzmann_generator(ad.topology(), None, x, n_layers=2, hidden=(16,)).double()
    ic = bg.flow[-1]
    stats = internal_coordinate_statistics(ic, ic.inverse(x)[0])
    rows = ic.zmatrix.rows
    torsion_atom = {int(t): rows[k][0] for k, t in enumerate(ic.torsion_indices)}  # one torsion per row
    loose_atoms = {torsion_atom[t] for t in stats["loose"]}
    # rotors: C(ACE) about N-CA (φ), O(ALA) about CA-C (ψ; N(NME) follows it), one H of each methyl group
    assert loose_atoms == {4, 15, 11, 0, 19}, loose_atoms
    with torch.no_grad():
        z, logdet_inv = bg.flow.inverse(x[:64])
        x2, logdet = bg.flow(z)
    torch.testing.assert_close(
        torch.cdist(x2.view(-1, 22, 3), x2.view(-1, 22, 3)),
        torch.cdist(x[:64].view(-1, 22, 3), x[:64].view(-1, 22, 3)),
        atol=1e-9,
        rtol=0,
    )
    torch.testing.assert_close(logdet, -logdet_inv, atol=1e-8, rtol=0)
