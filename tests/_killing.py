"""Run a command and SIGKILL it once its trainer checkpoint has reached a step (for the resume tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from bgflow_sci.io import CheckpointError, load_checkpoint


def kill_after_checkpoint(cmd: list[str], checkpoint: Path, min_step: int, timeout: float = 300.0) -> int:
    """Start ``cmd``, SIGKILL it as soon as ``checkpoint`` holds a trainer state at ``min_step`` or later;
    returns that step. Fails if the command ends by itself first (then nothing was interrupted)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline, step = time.monotonic() + timeout, 0
    while time.monotonic() < deadline and proc.poll() is None:
        if checkpoint.is_file():
            try:
                step = int(load_checkpoint(checkpoint, "trainer")["step"])
            except (CheckpointError, FileNotFoundError):
                step = 0  # caught between write and rename
            if step >= min_step:
                break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {err.decode()[-2000:]}"
    return step
