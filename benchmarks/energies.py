"""Configurations per second for energies + forces of alanine dipeptide: the OpenMM Reference loop vs TorchForceField.

In one run, for each system (``vacuum``: amber99sb-ildn; ``obc2``: amber99sb-ildn + amber99_obc, a GBSAOBCForce;
``amber14_obc2``: amber14-all + implicit/obc2, a CustomGBForce), one thread:

* the loop a user writes around OpenMM's Reference platform: one Context, per configuration ``setPositions`` +
  ``getState(getEnergy, getForces)`` + ``getPotentialEnergy()`` + ``getForces(asNumpy=True)``;
* ``TorchForceField.from_openmm(system, T)`` with no flags (the default path: chunked; on the CPU the native kernels
  of ``forcefield.native`` for the standard terms, built once per machine; the remaining terms in torch, compiled
  automatically for batches >= 1024; analytic forces), ``energy_and_force`` on batches of 1024, 4096, 1e5 and 1e6
  (float32 and float64).  Building/compiling happens in a warm-up call and is reported separately, not counted in
  the rates.

Each rate is the median over ``--repeats``; the Reference loop is re-measured between the torch measurements so
both see the same machine load.  The default result is checked against the all-torch eager evaluation
(``native=False, compile=False``) on 1024 configurations.
Prints a markdown table (configs/s and ratio to the Reference loop) and writes JSON.

    python benchmarks/energies.py                                  # everything (a few minutes)
    python benchmarks/energies.py --systems vacuum --dtype float32 --batch 1024 4096
    python benchmarks/energies.py --device cuda                    # on a GPU
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
SYSTEMS = {
    "vacuum": ("amber99sbildn.xml",),
    "obc2": ("amber99sbildn.xml", "amber99_obc.xml"),
    "amber14_obc2": ("amber14-all.xml", "implicit/obc2.xml"),
}
# backwards-compatible alias
SYSTEMS["implicit"] = SYSTEMS["obc2"]


def build_system(solvent: str):
    """``(openmm.System, positions (n_atoms, 3) nm)`` of alanine dipeptide for a key of :data:`SYSTEMS`."""
    from openmm import app, unit

    pdb = app.PDBFile(str(PDB))
    system = app.ForceField(*SYSTEMS[solvent]).createSystem(
        pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None
    )
    return system, np.asarray(pdb.positions.value_in_unit(unit.nanometer))


def openmm_loop_rate(system, xs: np.ndarray, platform_name: str = "Reference", threads: int = 1) -> float | None:
    """Configurations per second of the per-configuration OpenMM loop (energies and forces as numpy)."""
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


def torch_rate(ff, x: torch.Tensor, min_seconds: float = 1.0) -> float:
    """Configurations per second of ``ff.energy_and_force(x)``, repeated for at least ``min_seconds``."""

    def sync():
        if x.device.type == "cuda":
            torch.cuda.synchronize()

    sync()
    calls, t0 = 0, time.perf_counter()
    while True:
        ff.energy_and_force(x)
        calls += 1
        sync()
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            return calls * x.shape[0] / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", nargs="+", default=["vacuum", "obc2", "amber14_obc2"], choices=list(SYSTEMS))
    parser.add_argument("--batch", nargs="+", type=int, default=[1024, 4096, 100_000, 1_000_000])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"], choices=["float32", "float64"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--openmm-configs", type=int, default=1000, help="configurations per Reference-loop timing")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "energies.json"))
    args = parser.parse_args()

    from bgflow_sci.energies import TorchForceField

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    rows, t_start = [], time.perf_counter()
    for solvent in args.systems:
        system, x0 = build_system(solvent)
        ref_xs = x0[None] + 0.01 * rng.standard_normal((args.openmm_configs,) + x0.shape)
        ref_rates = [openmm_loop_rate(system, ref_xs)]
        for dtype_name in args.dtype:
            dtype = getattr(torch, dtype_name)
            ff = TorchForceField.from_openmm(system, 300.0).to(device)  # the default, no flags
            base = torch.tensor(x0.reshape(1, -1), dtype=dtype, device=device)
            x_all = base + 0.01 * torch.randn(max(args.batch), base.shape[1], dtype=dtype, device=device)
            t0 = time.perf_counter()
            ff.energy_and_force(x_all[:1024])  # warm-up: compiles (auto) for batches >= 1024
            warm = time.perf_counter() - t0
            eager = TorchForceField.from_openmm(system, 300.0, compile=False, native=False).to(device)
            u_c, f_c = ff.energy_and_force(x_all[:1024])
            u_e, f_e = eager.energy_and_force(x_all[:1024])
            du = ((u_c - u_e).abs() / u_e.abs().clamp(min=1.0)).max().item()
            df = ((f_c - f_e).abs().amax(-1) / f_e.abs().amax(-1)).max().item()
            native = ff._uses_native(x_all[:1])
            path = ("native" if ff._all_native else "native + torch") if native else "torch"
            print(
                f"[{solvent} {dtype_name}] warm-up {warm:.1f} s; path {path}; compiled={ff._compiled is not None}; "
                f"vs all-torch eager: max rel dE {du:.1e}, max |dF|/max|F| {df:.1e}",
                flush=True,
            )
            for batch in args.batch:
                x = x_all[:batch]
                rates = []
                for _ in range(args.repeats if batch <= 100_000 else 1):
                    ref_rates.append(openmm_loop_rate(system, ref_xs))
                    rates.append(torch_rate(ff, x))
                ref = statistics.median(ref_rates)
                row = {
                    "system": solvent,
                    "dtype": dtype_name,
                    "batch": batch,
                    "device": str(device),
                    "threads": args.threads,
                    "openmm_reference_per_s": ref,
                    "torch_default_per_s": statistics.median(rates),
                    "torch_default_all": rates,
                    "speedup_vs_reference": statistics.median(rates) / ref,
                    "path": path,
                    "compiled": ff._compiled is not None,
                    "warmup_s": warm,
                    "compiled_vs_eager_rel_energy": du,
                    "compiled_vs_eager_rel_force": df,
                }
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if not k.endswith("_all")}), flush=True)
        for row in rows:  # final Reference median for this system (all measurements in this run)
            if row["system"] == solvent:
                row["openmm_reference_all"] = ref_rates
    print(
        "\n| system | dtype | batch | OpenMM Reference loop (configs/s) | TorchForceField default (configs/s) "
        "| × Reference | vs batch 4096 |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        at4096 = [q for q in rows if (q["system"], q["dtype"], q["batch"]) == (r["system"], r["dtype"], 4096)]
        rel = f"{r['torch_default_per_s'] / at4096[0]['torch_default_per_s']:.2f}" if at4096 else "n/a"
        print(
            f"| {r['system']} | {r['dtype']} | {r['batch']:,} | {r['openmm_reference_per_s']:,.0f} "
            f"| {r['torch_default_per_s']:,.0f} | {r['speedup_vs_reference']:.1f}× | {rel} |"
        )
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    out = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"processor": platform.processor(), "cpu_count": os.cpu_count(), "load_average_at_end": load},
        "torch": torch.__version__,
        "openmm": __import__("openmm").__version__,
        "unit": "configurations per second (energies + forces)",
        "repeats": args.repeats,
        "wall_s": time.perf_counter() - t_start,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
