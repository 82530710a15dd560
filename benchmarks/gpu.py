"""One prepared GPU run (under 10 minutes on one device): force-field throughput, Boltzmann-generator training and
sampling rates, and a short ``pytest --device cuda``; prints one JSON summary (and writes it with ``--out``).

    python benchmarks/gpu.py --out benchmarks/results/gpu.json            # on the GPU machine (default cuda)
    python benchmarks/gpu.py --device cpu --quick                         # a dry run of the same code on a CPU

Measured, each against a wall-clock budget (``--budget`` s; a section that would start after it is skipped and
listed in ``"skipped"``):

1. ``TorchForceField.from_openmm`` of alanine dipeptide (amber99sb-ildn, ``vacuum`` and ``obc2`` = + amber99_obc),
   ``energy_and_force`` on batches of 1e3 ... 1e6 configurations (the PDB structure + 0.01 nm noise), float32 and
   float64: configurations per second (median of repeats after a warm-up that builds/compiles; synchronised).
   The energies of the batch are checked against float64 eager evaluation of its first 64 configurations.
2. The shipped alanine dipeptide Boltzmann generator (one generator, no state mixture) with the torch force field as
   target: maximum-likelihood steps and reverse-KL steps per second (global batch 1024), and samples with log
   weights per second (batch 1e5).
3. ``python -m pytest -q --device DEVICE`` over the fast test folders (flows, distributions, energies/ff, samplers,
   training, reweighting) with a time limit: passed/failed counts and the failures' names.

Results go into BENCHMARKS.md by hand, with the device this prints; nothing here is an estimate.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from energies import build_system  # noqa: E402  (the alanine dipeptide systems of benchmarks/energies.py)

TEST_FOLDERS = ["tests/test_host_syncs.py", "tests/test_bg.py", "tests/energies/test_torch_ff.py", "tests/flows",
                "tests/distributions", "tests/samplers", "tests/reweighting", "tests/training/test_trainer.py",
                "tests/energies/test_ff_custom.py"]  # fmt: skip


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(fn, n: int, device: torch.device, repeats: int, min_seconds: float) -> float:
    """Items per second of ``fn()`` (``n`` items per call): the median over ``repeats`` timings of >= min_seconds."""
    rates = []
    for _ in range(repeats):
        calls, t0 = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            sync(device)
            dt = time.perf_counter() - t0
            if dt >= min_seconds:
                break
        rates.append(calls * n / dt)
    return statistics.median(rates)


def forcefield_section(device, batches, dtypes, repeats, min_seconds, deadline) -> dict:
    from bgflow_sci.energies import TorchForceField

    out: dict = {}
    for solvent in ("vacuum", "obc2"):
        system, pos = build_system(solvent)
        eager = TorchForceField.from_openmm(system, 300.0, compile=False, native=False).to(device, torch.float64)
        for dtype in dtypes:
            name = f"{solvent}/{str(dtype).removeprefix('torch.')}"
            t0 = time.perf_counter()
            ff = TorchForceField.from_openmm(system, 300.0).to(device=device, dtype=dtype)
            gen = torch.Generator(device="cpu").manual_seed(0)
            entry: dict = {"rates": {}}
            for batch in batches:
                if time.perf_counter() > deadline:
                    entry.setdefault("skipped_batches", []).append(batch)
                    continue
                noise = 0.01 * torch.randn(batch, *pos.shape, generator=gen, dtype=torch.float64)
                x = (torch.as_tensor(pos)[None] + noise).reshape(batch, -1).to(device=device, dtype=dtype)
                if "build_s" not in entry:
                    ff.energy_and_force(x[: min(batch, 1024)])
                    sync(device)
                    entry["build_s"] = round(time.perf_counter() - t0, 2)
                    u, f = ff.energy_and_force(x[:64])
                    u_ref, f_ref = eager.energy_and_force(x[:64].double())
                    entry["max_abs_energy_error_kT"] = float((u.double() - u_ref).abs().max())
                    entry["max_rel_force_error"] = float((f.double() - f_ref).norm() / f_ref.norm())
                entry["rates"][str(batch)] = rate(lambda x=x, ff=ff: ff.energy_and_force(x), batch, device, repeats,
                                                  min_seconds)  # fmt: skip
                del x, noise
            out[name] = entry
            print(f"forcefield {name}: {entry['rates']}", file=sys.stderr, flush=True)
    return out


def bg_section(device, quick: bool, repeats: int, min_seconds: float) -> dict:
    from bgflow_sci.training import MaximumLikelihood, ReverseKL, Trainer
    from bgflow_sci.workflows import load_system
    from bgflow_sci.workflows.config import system_config
    from bgflow_sci.workflows.train import build_training_split

    module = load_system("alanine_dipeptide")
    config = system_config(module, None, {"model": {"states": None}, "train": {"max_frames": 20000}})
    bg, x_train, _ = build_training_split(module, config, device, torch.float32)
    batch = 256 if quick else 1024
    out: dict = {"generator": type(bg).__name__, "batch": batch, "train_frames": len(x_train)}
    for name, loss in (("ml", MaximumLikelihood(bg, x_train, batch)), ("kl", ReverseKL(bg, batch))):
        trainer = Trainer(bg, {name: loss}, lr=1e-4, progress=False, seed=0)
        trainer.train(3)  # warm-up
        out[f"{name}_steps_per_s"] = rate(lambda t=trainer: t.train(1), 1, device, repeats, min_seconds)
    n = 10_000 if quick else 100_000
    bg.eval()
    with torch.no_grad():
        bg.sample_with_log_weights(min(n, 1000))
        out["samples_with_log_weights_per_s"] = rate(lambda: bg.sample_with_log_weights(n, batch_size=n), n, device,
                                                     repeats, min_seconds)  # fmt: skip
    print(f"bg: {out}", file=sys.stderr, flush=True)
    return out


def pytest_section(device: torch.device, seconds: float) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--device", str(device), *TEST_FOLDERS]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(seconds, 10))
        text, timed_out = proc.stdout + proc.stderr, False
    except subprocess.TimeoutExpired as err:
        out = err.stdout or b""
        text, timed_out = (out.decode() if isinstance(out, bytes) else out), True
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors)", text)}
    if timed_out:  # count the progress characters of the lines written so far
        lines = [line for line in text.splitlines() if re.fullmatch(r"[.FEsxX]+( +\[.*)?", line)]
        progress = "".join(line.split(" [")[0] for line in lines)
        counts = {"passed": progress.count("."), "failed": progress.count("F") + progress.count("E"),
                  "skipped": progress.count("s")}  # fmt: skip
    failures = re.findall(r"^FAILED (\S+)", text, flags=re.M)
    return {"command": " ".join(cmd[1:]), "counts": counts, "failed": failures[:50], "timed_out": timed_out,
            "wall_s": round(time.perf_counter() - t0, 1), "tail": text[-1500:]}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="small batches and short timings (a dry run)")
    p.add_argument("--budget", type=float, default=540.0, help="wall-clock seconds for the whole run")
    p.add_argument("--pytest-seconds", type=float, default=180.0)
    p.add_argument("--no-pytest", action="store_true")
    p.add_argument("--out", default=None, help="also write the JSON summary here")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda, but CUDA is not available here (use --device cpu for a dry run)")
    t_start = time.perf_counter()
    deadline = t_start + args.budget - (0 if args.no_pytest else args.pytest_seconds)
    batches = [1000, 10_000] if args.quick else [1000, 10_000, 100_000, 1_000_000]
    repeats, min_seconds = (1, 0.2) if args.quick else (3, 1.0)
    summary: dict = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cuda": torch.version.cuda,
        "quick": args.quick,
        "skipped": [],
    }
    summary["forcefield"] = forcefield_section(
        device, batches, (torch.float32, torch.float64), repeats, min_seconds, deadline
    )
    if time.perf_counter() < deadline:
        try:
            summary["boltzmann_generator"] = bg_section(device, args.quick, repeats, min_seconds)
        except Exception as err:  # noqa: BLE001 - recorded, the run goes on to pytest
            summary["boltzmann_generator"] = {"error": f"{type(err).__name__}: {err}"}
    else:
        summary["skipped"].append("boltzmann_generator")
    if args.no_pytest:
        summary["skipped"].append("pytest")
    else:
        left = args.budget - (time.perf_counter() - t_start)
        summary["pytest"] = pytest_section(device, min(args.pytest_seconds, left))
    summary["best_float32_configs_per_s"] = {
        k.split("/")[0]: max(e["rates"].values(), default=None)
        for k, e in summary["forcefield"].items()
        if k.endswith("float32")
    }
    summary["wall_s"] = round(time.perf_counter() - t_start, 1)
    text = json.dumps(summary, indent=2, default=float)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
