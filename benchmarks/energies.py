"""Configurations per second for energies + forces of alanine dipeptide: OpenMM loops vs TorchForceField.

In one run: (a) OpenMM Reference platform, one Context, ``setPositions`` + ``getState(energy, forces)`` per
configuration; (b) the same loop on OpenMM's CPU platform (if available); (c) the package's OpenMM bridge
(:class:`~bgflow_sci.energies.OpenMMEnergy`, a pool of ``threads`` spawned workers with one Reference Context
each, the batch sent in chunks); (d) TorchForceField eager (analytic forces, no compilation); (e) TorchForceField
with ``torch.compile`` (the fast path).  Vacuum and OBC2 implicit solvent, batch sizes 1/64/4096 by default, for
each torch thread count.  Prints a markdown table and writes JSON.

    python benchmarks/energies.py                    # CPU, threads 2, float32, batches 1 64 4096
    python benchmarks/energies.py --threads 2 1 --dtype float32 float64 --repeats 5
    python benchmarks/energies.py --device cuda      # on a GPU

The machine is shared: run it when ``uptime`` shows low load; each number is the median over ``--repeats``.
There is no eager-autograd baseline here: TorchForceField's energy carries its analytic gradient.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
PDB = ROOT / "data" / "alanine_dipeptide" / "alanine_dipeptide.pdb"


def build_system(solvent: str):
    from openmm import app, unit

    pdb = app.PDBFile(str(PDB))
    files = ("amber99sbildn.xml", "amber99_obc.xml") if solvent == "implicit" else ("amber99sbildn.xml",)
    system = app.ForceField(*files).createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None)
    return system, np.asarray(pdb.positions.value_in_unit(unit.nanometer))


def openmm_loop_rate(system, xs: np.ndarray, platform_name: str, threads: int) -> float | None:
    import openmm

    try:
        plat = openmm.Platform.getPlatformByName(platform_name)
    except Exception:  # noqa: BLE001
        return None
    props = {"Threads": str(threads)} if platform_name == "CPU" else {}
    ctx = openmm.Context(system, openmm.VerletIntegrator(1e-3), plat, props)
    ctx.setPositions(xs[0])
    ctx.getState(getEnergy=True, getForces=True)
    t0 = time.perf_counter()
    for x in xs:
        ctx.setPositions(x)
        state = ctx.getState(getEnergy=True, getForces=True)
        state.getPotentialEnergy()
        state.getForces(asNumpy=True)
    rate = len(xs) / (time.perf_counter() - t0)
    del ctx
    return rate


def bridge_rate(bridge, xs: np.ndarray, batch: int) -> float:
    """Configurations per second of ``OpenMMEnergy.energy_and_force`` on batches of ``batch`` (pool workers)."""
    n_batches = max(1, len(xs) // batch)
    chunks = [torch.tensor(xs[i * batch : (i + 1) * batch].reshape(-1, xs[0].size)) for i in range(n_batches)]
    bridge.energy_and_force(chunks[0])  # warm-up
    t0 = time.perf_counter()
    for x in chunks:
        bridge.energy_and_force(x)
    return n_batches * batch / (time.perf_counter() - t0)


def torch_rate(ff, x: torch.Tensor, inner: int) -> float:
    ff.energy_and_force(x)  # warm-up (compilation happens at construction's first call)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(inner):
        ff.energy_and_force(x)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return inner * x.shape[0] / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", nargs="+", default=["vacuum", "implicit"], choices=["vacuum", "implicit"])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 64, 4096])
    parser.add_argument("--threads", nargs="+", type=int, default=[2])
    parser.add_argument("--dtype", nargs="+", default=["float32"], choices=["float32", "float64"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--openmm-configs", type=int, default=2000)
    parser.add_argument("--chunk-size", type=int, default=512, help="chunk size of the compiled path")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile path")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "energies.json"))
    args = parser.parse_args()

    from bgflow_sci.energies import OpenMMEnergy, TorchForceField

    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    rows = []
    for solvent in args.systems:
        system, x0 = build_system(solvent)
        xs = x0[None] + 0.01 * rng.standard_normal((max(args.batch + [args.openmm_configs]),) + x0.shape)
        for threads in args.threads:
            torch.set_num_threads(threads)
            bridge = OpenMMEnergy(system, 300.0, n_workers=threads)
            variants = {"eager": TorchForceField.from_openmm(system, 300.0).to(device)}
            if not args.no_compile:
                variants["compiled"] = TorchForceField.from_openmm(
                    system, 300.0, compile=True, chunk_size=args.chunk_size
                ).to(device)
            for dtype_name in args.dtype:
                dtype = getattr(torch, dtype_name)
                for name, ff in variants.items():
                    t0 = time.perf_counter()
                    ff.energy_and_force(torch.tensor(xs[:2].reshape(2, -1), dtype=dtype, device=device))
                    print(f"[{solvent} threads={threads} {dtype_name}] {name} warm-up {time.perf_counter() - t0:.1f} s")
                for batch in args.batch:
                    x = torch.tensor(xs[:batch].reshape(batch, -1), dtype=dtype, device=device)
                    res = {k: [] for k in ["openmm_reference", "openmm_cpu", "openmm_pool", *variants]}
                    for _ in range(args.repeats):
                        # interleave the baseline with our runs so that both see the same machine load
                        res["openmm_reference"].append(
                            openmm_loop_rate(system, xs[: args.openmm_configs], "Reference", threads)
                        )
                        res["openmm_cpu"].append(openmm_loop_rate(system, xs[: args.openmm_configs], "CPU", threads))
                        res["openmm_pool"].append(bridge_rate(bridge, xs[: max(batch, args.openmm_configs)], batch))
                        for name, ff in variants.items():
                            res[name].append(torch_rate(ff, x, inner=max(1, 8192 // batch)))
                    med = {k: (statistics.median(v) if v and v[0] is not None else None) for k, v in res.items()}
                    row = {
                        "system": solvent,
                        "threads": threads,
                        "dtype": dtype_name,
                        "batch": batch,
                        "device": str(device),
                        **{f"{k}_per_s": v for k, v in med.items()},
                        **{f"{k}_all": v for k, v in res.items()},
                    }
                    for name in variants:
                        row[f"{name}_speedup_vs_reference"] = med[name] / med["openmm_reference"]
                    rows.append(row)
                    print(json.dumps({k: v for k, v in row.items() if not k.endswith("_all")}), flush=True)
            bridge.close()

    names = [k for k in ("eager", "compiled") if any(f"{k}_per_s" in r for r in rows)]
    header = "| system | threads | dtype | batch | OpenMM Reference | OpenMM CPU | OpenMM pool | " + " | ".join(
        f"torch {n} (× Ref)" for n in names
    )
    print("\n" + header + " |")
    print("|" + "---|" * (7 + len(names)))
    for r in rows:
        cpu = f"{r['openmm_cpu_per_s']:,.0f}" if r["openmm_cpu_per_s"] else "n/a"
        cells = [f"{r[n + '_per_s']:,.0f} ({r[n + '_speedup_vs_reference']:.1f}×)" for n in names]
        print(
            f"| {r['system']} | {r['threads']} | {r['dtype']} | {r['batch']} | {r['openmm_reference_per_s']:,.0f} "
            f"| {cpu} | {r['openmm_pool_per_s']:,.0f} | " + " | ".join(cells) + " |"
        )
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    out = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"processor": platform.processor(), "cpu_count": os.cpu_count(), "load_average_at_end": load},
        "torch": torch.__version__,
        "openmm": __import__("openmm").__version__,
        "unit": "configurations per second (energies + forces)",
        "repeats": args.repeats,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
