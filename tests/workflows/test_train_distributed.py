"""``bgflow-sci train`` under torchrun (2 CPU ranks, gloo) gives the model of the same run in one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from bgflow_sci.io import load_checkpoint

TOY = Path(__file__).parent / "toy_system"
ARGS = ["--no-progress", "--threads", "1", "--dtype", "float64", "--set", "train.ml_steps=20", "--set",
        "train.kl_steps=10", "--set", "evaluate.samples=400", "--set", "evaluate.n_bootstrap=5"]  # fmt: skip


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
def test_torchrun_train_equals_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one, two = tmp_path / "one", tmp_path / "two"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    for launcher, out in (([sys.executable], one), (torchrun, two)):
        cmd = [*launcher, "-m", "bgflow_sci.cli", "train", str(TOY), "--out", str(out), *ARGS]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('"world_size": 2') == 1  # rank 0 alone reports
    a = load_checkpoint(one / "model.pt", "boltzmann_generator")["state_dict"]
    b = load_checkpoint(two / "model.pt", "boltzmann_generator")["state_dict"]
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-10, msg=name)
    results = json.loads((two / "results.json").read_text())
    assert 0 < results["ess"] <= 1  # rank 0 sampled and reweighted
    assert len((two / "metrics.jsonl").read_text().splitlines()) == len(
        (one / "metrics.jsonl").read_text().splitlines()
    )
