"""Run a command and SIGKILL it once the files it writes show some progress (for the resume tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from bgflow_sci.io import CheckpointError, load_checkpoint


def kill_when(cmd: list[str], progress: Callable[[], int], at_least: int, timeout: float = 300.0) -> int:
    """Start ``cmd`` (one OpenMP thread) and SIGKILL it as soon as ``progress()`` (read from the files it writes;
    0 while there is nothing to read) reaches ``at_least``; returns that progress. Fails if the command ends by
    itself first (then nothing was interrupted)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline, done = time.monotonic() + timeout, 0
    while time.monotonic() < deadline and proc.poll() is None:
        done = progress()
        if done >= at_least:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {err.decode()[-2000:]}"
    return done


def kill_after_checkpoint(cmd: list[str], checkpoint: Path, min_step: int, timeout: float = 300.0) -> int:
    """Start ``cmd``, SIGKILL it as soon as ``checkpoint`` holds a trainer state at ``min_step`` or later;
    returns that step (:func:`kill_when`)."""

    def step() -> int:
        try:
            return int(load_checkpoint(checkpoint, "trainer")["step"]) if checkpoint.is_file() else 0
        except (CheckpointError, FileNotFoundError):
            return 0  # caught between write and rename

    return kill_when(cmd, step, min_step, timeout)
