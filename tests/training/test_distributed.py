"""Data-parallel training under torchrun (2 CPU processes, gloo) against one process, and a killed DDP run resumed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from bgflow_sci.training import distributed

WORKER = Path(__file__).resolve().parents[1] / "_ddp_worker.py"
ROOT = WORKER.parents[1]

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")


def _run(out: Path, *args: str, ranks: int = 2, expect_ok: bool = True) -> subprocess.CompletedProcess:
    out.mkdir(parents=True, exist_ok=True)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    cmd = [*(launcher if ranks > 1 else [sys.executable]), str(WORKER), str(out), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    if expect_ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def test_two_ranks_equal_one_process_and_a_killed_run_resumes(tmp_path):
    opts = ("--constraint", "--actnorm")  # an MDMM multiplier, and a data-dependent initialisation (global batch)
    _run(tmp_path / "single", *opts, ranks=1)
    _run(tmp_path / "ddp", *opts)
    killed = _run(tmp_path / "resumed", *opts, "--kill-at", "7", expect_ok=False)
    assert killed.returncode != 0 and not (tmp_path / "resumed" / "rank0.pt").exists(), killed.stderr[-2000:]
    _run(tmp_path / "resumed", *opts, "--resume")

    single = torch.load(tmp_path / "single" / "rank0.pt")
    ddp = [torch.load(tmp_path / "ddp" / f"rank{r}.pt") for r in range(2)]
    resumed = [torch.load(tmp_path / "resumed" / f"rank{r}.pt") for r in range(2)]
    assert _max_diff(ddp[0], ddp[1]) == 0.0  # identical on both ranks, multiplier included
    assert _max_diff(single, ddp[0]) < 1e-10  # = one process with the same global batch and seed (float64)
    assert _max_diff(resumed[0], resumed[1]) == 0.0
    assert _max_diff(resumed[0], ddp[0]) < 1e-12  # killed at step 7 (last checkpoint 6), resumed: uninterrupted
    assert float(ddp[0]["multiplier"]) != 0.0 and bool(ddp[0]["flow.flows.4.initialized"])  # both did act
    log = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len(log) == 12  # rank 0 alone writes the log: one line per step, not two


def test_shared_stream_draws_the_same_global_batch_and_slices_it():
    torch.manual_seed(0)
    streams = [distributed.SharedStream(rank, 2) for rank in range(2)]
    torch.manual_seed(99)  # the ranks' own streams differ from the shared one ...
    own = torch.rand(3)
    parts = []
    for stream in streams:
        with stream.draws():
            parts.append(stream.part(torch.arange(8)[torch.randperm(8)]))
    torch.manual_seed(0)
    whole = torch.arange(8)[torch.randperm(8)]
    assert torch.equal(torch.cat(parts), whole)
    torch.manual_seed(99)
    assert torch.equal(torch.rand(3), own)  # ... and are left where they were
    with pytest.raises(ValueError, match="not divisible by the 2 ranks"):
        streams[0].part(torch.zeros(5))


def test_without_a_launcher_nothing_is_distributed(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with distributed.init_distributed("cpu") as ctx:
        assert (ctx.rank, ctx.world_size, ctx.distributed) == (0, 1, False)
        assert distributed.world() == (0, 1) and distributed.is_main_process()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RuntimeError, match="launch with torchrun"):
        distributed.init_distributed("cpu")
