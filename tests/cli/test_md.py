"""``bgflow-sci md CONFIG``: a SIGKILLed run resumed gives the trajectory of an uninterrupted one (Reference
platform, same seed): no missing or duplicated frames, continuous times, equal positions and forces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from bgflow_sci.workflows.md import read_md

from .._killing import kill_when

PDB = Path(__file__).resolve().parents[2] / "data" / "alanine_dipeptide" / "alanine_dipeptide.pdb"
NS, FRAME_PS = 0.1, 0.05


def _config(folder: Path) -> Path:
    folder.mkdir(parents=True)
    config = {
        "name": "ala2",
        "topology": str(PDB),
        "forcefield": ["amber99sbildn.xml"],
        "temperature": 300,
        "md": {"ns": NS, "frame_ps": FRAME_PS, "platform": "Reference", "seed": 3, "out": "md"},
    }
    path = folder / "ala2.json"
    path.write_text(json.dumps(config))
    return path


def _cmd(config: Path) -> list[str]:
    return [sys.executable, "-m", "bgflow_sci.cli", "md", str(config), "--no-progress", "--equilibration-ps", "0.2"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _kill_after_frames(cmd: list[str], state: Path, min_frames: int, timeout: float = 300.0) -> int:
    """Start ``cmd``, SIGKILL it once ``state`` (a replica's state.json) commits ``min_frames`` frames."""

    def frames() -> int:
        try:
            return int(json.loads(state.read_text())["frames"])
        except (FileNotFoundError, ValueError, KeyError):
            return 0

    return kill_when(cmd, frames, min_frames, timeout)


def test_sigkill_then_resume_gives_the_uninterrupted_trajectory(tmp_path):
    full, killed = _config(tmp_path / "full"), _config(tmp_path / "killed")
    proc = subprocess.run(_cmd(full), capture_output=True, text=True, timeout=600, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]

    frames = _kill_after_frames(_cmd(killed), killed.parent / "md" / "replica0" / "state.json", 100)
    n_total = round(NS * 1000 / FRAME_PS)
    assert 100 <= frames < n_total
    proc = subprocess.run(_cmd(killed), capture_output=True, text=True, timeout=600, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]

    a, b = read_md(full.parent / "md"), read_md(killed.parent / "md")
    assert len(b["time"]) == n_total
    np.testing.assert_allclose(np.diff(b["time"]), FRAME_PS, rtol=0, atol=1e-9)
    assert abs(b["time"][0] - FRAME_PS) < 1e-9
    np.testing.assert_array_equal(a["positions"], b["positions"])
    np.testing.assert_array_equal(a["forces"], b["forces"])
    np.testing.assert_array_equal(a["potential_energy"], b["potential_energy"])
    runs = json.loads((killed.parent / "md" / "md.json").read_text())["runs"]
    assert len(runs) == 2 and runs[0]["platform"] == "Reference"


def test_md_command_reports_bad_settings(tmp_path):
    config = _config(tmp_path / "c")
    proc = subprocess.run(_cmd(config) + ["--ns", "0.00102"], capture_output=True, text=True, env=_env())
    assert proc.returncode == 1 and "ns / frame_ps" in proc.stderr and "error:" in proc.stderr
