"""`bgflow-sci train / sample / reweight` on a system folder (alanine dipeptide, a few steps)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from bgflow_sci.workflows import load_model, merge_config, parse_overrides
from tests.conftest import require

QUICK = [
    "--set",
    "train.ml_steps=20",
    "--set",
    "train.kl_steps=5",
    "--set",
    "train.max_frames=2000",
    "--set",
    "model.n_layers=2",
    "--set",
    "model.hidden=[16]",
    "--set",
    "evaluate.samples=500",
    "--set",
    "evaluate.n_bootstrap=10",
    "--set",
    "train.states=null",  # both states take the settings above (the shipped per-state budgets are long)
    "--set",
    "train.calibration_samples=500",
]


def cli(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "bgflow_sci.cli", *args], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_overrides_and_merge():
    o = parse_overrides(["train.ml_steps=5", "model.hidden=[8,8]", "data.solvent=obc2"])
    assert o == {"train": {"ml_steps": 5}, "model": {"hidden": [8, 8]}, "data": {"solvent": "obc2"}}
    merged = merge_config({"train": {"ml_steps": 1, "lr": 0.1}}, o)
    assert merged["train"] == {"ml_steps": 5, "lr": 0.1}
    with pytest.raises(ValueError, match="SECTION.KEY=VALUE"):
        parse_overrides(["nonsense"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    require("mdtraj")
    out = tmp_path_factory.mktemp("train")
    cli("train", "alanine_dipeptide", "--out", str(out), "--no-progress", "--threads", "1", *QUICK)
    return out


def test_train_writes_model_results_and_plots(trained, monkeypatch):
    results = json.loads((trained / "train.json").read_text())
    # the shipped config is a two-state mixture: 25 steps per state, then weights from 500 samples per state
    assert results["steps"] == 50 and results["train_frames"] + results["heldout_frames"] == 2000
    assert np.isfinite(results["heldout_nll"])
    calibration = results["state_calibration"]
    assert sum(calibration["weights"]) == pytest.approx(1.0) and sum(calibration["population"]) == pytest.approx(1.0)
    rw = json.loads((trained / "results.json").read_text())
    assert rw["samples"] == 500 and 0 < rw["ess"] <= 1
    assert set(rw["delta_f"]) == {"phi_sign", "phi_basin"}
    for name in ("training_state0.png", "training_state1.png", "free_energy_phi.png", "map_phi_psi.png", "samples.dcd"):
        assert (trained / name).stat().st_size > 1000, name
    # the model loads without its training frames (IC statistics and torsion split travel in the checkpoint)
    from bgflow_sci.workflows.systems import load_system

    monkeypatch.setattr(load_system("alanine_dipeptide"), "training_data", lambda c: pytest.fail("read MD frames"))
    _, _, bg = load_model(trained / "model.pt")  # the calibrated state weights travel with the checkpoint
    np.testing.assert_allclose(bg.weights.numpy(), calibration["weights"], rtol=1e-6)


def test_single_generator_config(tmp_path):
    """``model.states = null`` trains one flow over all states (the generic path of every system folder)."""
    from bgflow_sci import BoltzmannGenerator
    from bgflow_sci.workflows.train import train

    quick = parse_overrides([item for item in QUICK if item != "--set"] + ["model.states=null"])
    results = train("alanine_dipeptide", tmp_path, overrides=quick, progress=False, evaluate=False)
    assert results["steps"] == 25 and "state_calibration" not in results and np.isfinite(results["heldout_nll"])
    assert (tmp_path / "training.png").is_file()
    assert isinstance(load_model(tmp_path / "model.pt")[2], BoltzmannGenerator)


def test_sampled_log_weights_are_exact_and_trajectory_matches(trained, tmp_path):
    import mdtraj

    cli("sample", str(trained / "model.pt"), "-n", "64", "--out", str(tmp_path / "s.npz"), "--threads", "1")
    with np.load(tmp_path / "s.npz") as f:
        x, log_w = torch.as_tensor(f["x"]), torch.as_tensor(f["log_w"])
    # log w = -u(x) - log q(x), recomputed from the saved positions with the reloaded model
    _, _, bg = load_model(trained / "model.pt")
    with torch.no_grad():
        expected = -bg.target.energy(x) - bg.log_prob(x)
    torch.testing.assert_close(log_w.float(), expected, atol=5e-2, rtol=1e-4)
    from bgflow_sci.workflows.systems import load_system

    top = load_system("alanine_dipeptide").topology()
    traj = mdtraj.load_dcd(str(tmp_path / "s.dcd"), top=top)
    np.testing.assert_allclose(traj.xyz.reshape(64, -1), x.numpy(), atol=2e-4)
    np.testing.assert_array_equal(np.load(tmp_path / "s_log_weights.npy"), log_w.numpy())

    rw_out = tmp_path / "rw"
    cli("reweight", str(tmp_path / "s.npz"), "--out", str(rw_out), "--n-bootstrap", "5")
    res = json.loads((rw_out / "results.json").read_text())
    expected_ess = float(torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)) / len(log_w))
    assert res["ess"] == pytest.approx(expected_ess, rel=1e-9)


def test_missing_checkpoint_and_unknown_setting_fail_clearly(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "bgflow_sci.cli", "sample", str(tmp_path / "none.pt"), "-n", "5", "--out", "x.npz"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "bgflow-sci train" in proc.stderr
    from bgflow_sci.workflows.train import train

    with pytest.raises(ValueError, match="unknown train settings"):
        train("alanine_dipeptide", tmp_path, overrides={"train": {"mlsteps": 3}}, progress=False)
    with pytest.raises(ValueError, match=r"unknown train.states settings \['klsteps'\]"):
        train("alanine_dipeptide", tmp_path, overrides={"train": {"states": [{}, {"klsteps": 3}]}}, progress=False)


def test_cli_enhanced_md(trained, tmp_path):
    import mdtraj

    from bgflow_sci.workflows.systems import load_system

    cli(
        "enhanced-md",
        str(trained / "model.pt"),
        "--cycles",
        "6",
        "--md-steps",
        "10",
        "--proposals",
        "3",
        "--out",
        str(tmp_path),
        "--no-progress",
    )
    report = json.loads((tmp_path / "enhanced_md.json").read_text())
    assert report["n_md_steps"] == 60 and report["n_proposals"] == 18
    assert report["n_evaluations"] == 60 + report["n_proposal_energies"]
    assert set(report["regions"]) == {"phi_sign", "phi_basin"}
    traj = mdtraj.load_dcd(report["trajectory"], top=load_system("alanine_dipeptide").topology())
    assert traj.n_frames == report["frames"] == 6
