"""Checkpoints of ``bgflow-sci train``: SIGKILL + ``--resume`` gives the parameters of an uninterrupted run, a moved
output folder still samples and reweights, and corrupt or foreign files fail with an error naming them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bgflow_sci.io import CheckpointError, load_checkpoint
from bgflow_sci.workflows import load_model, load_system

from .._killing import kill_after_checkpoint

TOY = Path(__file__).parent / "toy_system"
LONG = ["--set", "train.ml_steps=300", "--set", "train.kl_steps=300", "--set", "train.checkpoint_every=25"]


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "bgflow_sci.cli", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _train_args(out: Path) -> list[str]:
    return ["train", str(TOY), "--out", str(out), "--no-evaluate", "--no-progress", "--threads", "1", *LONG]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path, "boltzmann_generator")["state_dict"]


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    cli(*_train_args(full))

    cmd = [sys.executable, "-m", "bgflow_sci.cli", *_train_args(killed)]
    step = kill_after_checkpoint(cmd, killed / "checkpoint.pt", 50)
    assert 50 <= step < 600 and not (killed / "model.pt").exists()

    cli("train", "--resume", "--out", str(killed), "--no-evaluate", "--no-progress", "--threads", "1")
    a, b = _weights(full / "model.pt"), _weights(killed / "model.pt")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    results = json.loads((killed / "train.json").read_text())
    assert results["resumed"] and results["steps"] == 600
    # the metrics log of the resumed run covers every logged step once (read_metrics drops the re-run ones)
    from bgflow_sci.training import read_metrics

    steps = [r["step"] for r in read_metrics(killed / "metrics.jsonl")]
    assert steps == [r["step"] for r in read_metrics(full / "metrics.jsonl")]


def test_resume_refuses_new_settings_and_missing_runs(tmp_path):
    proc = cli("train", "--resume", "--out", str(tmp_path / "none"), check=False)
    assert proc.returncode != 0 and "run.json" in proc.stderr
    cli("train", str(TOY), "--out", str(tmp_path / "a"), "--no-evaluate", "--no-progress")
    proc = cli("train", "--resume", "--out", str(tmp_path / "a"), "--set", "train.lr=0.1", check=False)
    assert proc.returncode != 0 and "drop --config/--set" in proc.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "run"
    cli("train", str(TOY), "--out", str(out), "--no-progress", "--threads", "1")
    return out


def test_moved_output_folder_samples_and_reweights_without_training_data(trained, tmp_path, monkeypatch):
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(trained, moved)
    cli("sample", str(moved / "model.pt"), "-n", "500", "--out", str(moved / "more.npz"), "--threads", "1")
    cli("reweight", str(moved / "more.npz"), "--out", str(moved / "rw"), "--n-bootstrap", "5")
    res = json.loads((moved / "rw" / "results.json").read_text())
    assert (
        res["samples"] == 500 and 0.05 < res["ess"] <= 1.0
    )  # 100 steps: ESS 0.18 measured and "wells" in res["delta_f"]

    module = load_system(TOY)
    monkeypatch.setattr(module, "training_data", lambda config: pytest.fail("load_model read the training data"))
    _, _, bg = load_model(moved / "model.pt")
    stored = load_checkpoint(trained / "model.pt", "boltzmann_generator")["statistics"]
    assert len(stored["mean"]) == 2 and bg.build_statistics == stored  # rebuilt from the stored statistics
    original = _weights(trained / "model.pt")
    for name, value in bg.state_dict().items():
        assert torch.equal(value, original[name]), name


def test_corrupt_and_foreign_checkpoints_name_the_file(trained, tmp_path):
    corrupt = tmp_path / "model.pt"
    data = (trained / "model.pt").read_bytes()
    corrupt.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=str(corrupt)):
        load_model(corrupt)
    proc = cli("sample", str(corrupt), "-n", "5", "--out", str(tmp_path / "x.npz"), check=False)
    assert proc.returncode != 0 and str(corrupt) in proc.stderr and "Traceback" not in proc.stderr

    class Payload:  # a pickle that would run code when unpickled without weights_only
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    foreign = tmp_path / "foreign.pt"
    torch.save({"format": "bgflow_sci", "payload": Payload()}, foreign)
    with pytest.raises(CheckpointError, match=str(foreign)):
        load_model(foreign)
    assert not (tmp_path / "pwned").exists()

    other_kind = tmp_path / "trainer.pt"
    shutil.copy(trained / "checkpoint.pt", other_kind)
    with pytest.raises(CheckpointError, match="'trainer' checkpoint, expected 'boltzmann_generator'"):
        load_model(other_kind)
