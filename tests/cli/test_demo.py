"""``bgflow-sci demo`` and the top-level parser: quick run, help, CUDA refusal."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def test_cli_demo_quick(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "bgflow_sci.cli", "demo", "--quick", "--no-progress", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ESS" in proc.stdout and "±" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["abs_error"] < 0.2
    assert 0.0 < results["ess"] <= 1.0
    for name in ("densities.png", "free_energy_x1.png", "training.png"):
        assert (out / name).stat().st_size > 10_000


def test_cli_help_explains_options():
    proc = subprocess.run([sys.executable, "-m", "bgflow_sci.cli", "demo", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for option in ("--quick", "--seed", "--device", "--out"):
        assert option in proc.stdout


def test_cli_rejects_unavailable_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    proc = subprocess.run(
        [sys.executable, "-m", "bgflow_sci.cli", "demo", "--quick", "--device", "cuda", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "CUDA is not available" in proc.stderr
