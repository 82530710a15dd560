"""FAB (flow annealed importance sampling bootstrap) finds both modes of a bimodal target with no samples of it."""

from __future__ import annotations

import pytest
import torch

from bgflow_sci import BoltzmannGenerator
from bgflow_sci import reweighting as rw
from bgflow_sci.distributions import Normal
from bgflow_sci.energies import FunctionEnergy
from bgflow_sci.flows import real_nvp
from bgflow_sci.training import FlowAnnealedBootstrap, Trainer

MODES, STD = torch.tensor([[-3.0, 0.0], [3.0, 0.0]]), 0.5


def _target() -> FunctionEnergy:
    return FunctionEnergy(lambda x: -torch.logsumexp(-((x[:, None] - MODES) ** 2).sum(-1) / (2 * STD**2), 1), dim=2)


def _generator(seed: int) -> BoltzmannGenerator:
    torch.manual_seed(seed)
    return BoltzmannGenerator(Normal(2), real_nvp(2, 4, hidden=(32, 32)), _target())


@pytest.mark.parametrize("buffer_size", [1024, 0])
def test_fab_learns_both_modes_without_data(buffer_size):
    bg = _generator(0)
    fab = FlowAnnealedBootstrap(bg, 64, n_ais_steps=4, n_leapfrog=4, buffer_size=buffer_size, refresh_every=4)
    trainer = Trainer(bg, {"fab": fab}, lr=3e-3, progress=False, seed=0)
    trainer.train(200 if buffer_size else 100)
    with torch.no_grad():
        x, log_w = bg.sample_with_log_weights(20_000)
    right = x[:, 0] > 0
    assert 0.35 < float(right.double().mean()) < 0.65  # the flow itself covers both modes
    assert float(rw.normalized_weights(log_w)[right].sum()) == pytest.approx(0.5, abs=0.05)
    assert rw.ess(log_w) > 0.2
    # every AIS chain: one evaluation at the start and (n_leapfrog + 1) per HMC transition, counted and logged
    assert fab.n_energy_evaluations > 0
    assert trainer.history[-1]["fab/energy_evaluations"] == pytest.approx(fab.n_energy_evaluations)


def test_fab_rejects_bad_settings():
    bg = _generator(0)
    with pytest.raises(ValueError, match="buffer_size"):
        FlowAnnealedBootstrap(bg, 64, buffer_size=10)
    bg.target = None
    with pytest.raises(ValueError, match="target energy"):
        FlowAnnealedBootstrap(bg)


def test_fab_with_its_buffer_resumes_exactly(tmp_path):
    def run(steps: int, resume: bool = False) -> dict:
        bg = _generator(3)
        fab = FlowAnnealedBootstrap(bg, 32, n_ais_steps=2, n_leapfrog=2, buffer_size=256, refresh_every=3)
        trainer = Trainer(bg, {"fab": fab}, lr=3e-3, progress=False, seed=1, checkpoint_path=tmp_path / "c.pt")
        if resume:
            trainer.load_checkpoint(tmp_path / "c.pt")
        trainer.train(steps - trainer.step)
        return {**bg.state_dict(), "evals": torch.tensor(fab.n_energy_evaluations), "buffer": fab.buffer["log_w"]}

    run(7)  # a checkpoint at step 7, inside a refresh period, with a partly corrected buffer
    resumed = run(12, resume=True)
    (tmp_path / "c.pt").unlink()
    full = run(12)
    for key in full:
        assert torch.equal(full[key], resumed[key]), key
