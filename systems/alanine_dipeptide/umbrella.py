"""Umbrella sampling along φ for the reference free energies of alanine dipeptide (``umbrella_<solvent>.npz``).

Plain MD at 300 K does not cross to φ > 0 often enough in tens of ns (OBC2: no αL/C7ax visit in 30 ns) to
give ΔF between the φ basins. This script runs ``--windows`` OpenMM Langevin simulations (same system,
integrator and settings as ``generate_md.py``) with a harmonic bias on the periodic distance to a window
centre φ_k,

    b_k(φ) = ½ κ d(φ, φ_k)²,   d = min(|φ - φ_k|, 2π - |φ - φ_k|),   κ in kJ/mol/rad²,

(an OpenMM ``CustomTorsionForce`` on C(ACE)-N-CA-C). Two processes walk the circle in opposite directions from
the minimised structure, each window starting from the previous window's final state and equilibrating for
``--equilibrate-ps``. φ and ψ are stored every ``--sample-fs``, positions every ``--frame-ps``. The unbiased
free energies come from MBAR (``bgflow_sci.reweighting.mbar_*``) in ``reference.py --umbrella``.

    python systems/alanine_dipeptide/umbrella.py --solvent obc2 --windows 60 --kappa 250 --production-ps 150 --seed 3

Like ``generate_md.py`` this file avoids importing torch so that the spawned workers stay light.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import multiprocessing as mp
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from generate_md import _system_module  # same folder: the system module without importing torch

HERE = Path(__file__).resolve().parent
KB = 0.00831446261815324  # kJ/mol/K


def dihedral_np(p: np.ndarray, atoms: tuple[int, int, int, int]) -> np.ndarray:
    """Dihedral (rad) of ``atoms`` in positions ``(..., n_atoms, 3)`` (same convention as mdtraj)."""
    a, b, c, d = (p[..., i, :] for i in atoms)
    b0, b1, b2 = b - a, c - b, d - c
    y = np.linalg.norm(b1, axis=-1) * (b0 * np.cross(b1, b2)).sum(-1)
    return np.arctan2(y, (np.cross(b0, b1) * np.cross(b1, b2)).sum(-1))


def periodic_bias(phi: np.ndarray, centers: np.ndarray, kappa: float) -> np.ndarray:
    """``b_k(φ_n)`` in kJ/mol, shape ``(len(centers), len(phi))``."""
    d = np.abs(phi[None, :] - centers[:, None])
    d = np.minimum(d, 2 * np.pi - d)
    return 0.5 * kappa * d**2


def run_walk(args: dict) -> dict:
    """Run the windows ``args["order"]`` one after the other; returns their φ, ψ and positions."""
    import openmm as mm
    from openmm import unit

    ad = _system_module()
    _, system, positions = ad.build_openmm_system(args["solvent"])
    bias = mm.CustomTorsionForce("0.5*kappa*d^2; d=min(dt, 2*pi-dt); dt=abs(theta-phi0); pi=3.141592653589793")
    bias.addGlobalParameter("kappa", args["kappa"])
    bias.addGlobalParameter("phi0", 0.0)
    bias.addTorsion(*ad.PHI_ATOMS, [])
    system.addForce(bias)
    integrator = mm.LangevinMiddleIntegrator(
        args["temperature"] * unit.kelvin, args["friction"] / unit.picosecond, args["timestep_fs"] * unit.femtosecond
    )
    integrator.setRandomNumberSeed(args["seed"])
    context = mm.Context(system, integrator, mm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    mm.LocalEnergyMinimizer.minimize(context)
    context.setVelocitiesToTemperature(args["temperature"] * unit.kelvin, args["seed"])
    fs = args["timestep_fs"]
    sample_steps = max(1, round(args["sample_fs"] / fs))
    n_samples = round(args["production_ps"] * 1000 / fs) // sample_steps
    frame_every = max(1, round(args["frame_ps"] * 1000 / fs) // sample_steps)
    out = {"windows": [], "phi": [], "psi": [], "positions": []}
    start = time.perf_counter()
    for w in args["order"]:
        context.setParameter("phi0", float(args["centers"][w]))
        integrator.step(round(args["equilibrate_ps"] * 1000 / fs))
        pos = np.empty((n_samples, len(positions), 3), np.float32)
        for s in range(n_samples):
            integrator.step(sample_steps)
            pos[s] = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        out["windows"].append(w)
        out["phi"].append(dihedral_np(pos.astype(np.float64), ad.PHI_ATOMS).astype(np.float32))
        out["psi"].append(dihedral_np(pos.astype(np.float64), ad.PSI_ATOMS).astype(np.float32))
        out["positions"].append(pos[frame_every - 1 :: frame_every])
        print(
            f"walk {args['walk']}: window {w} (φ0 = {args['centers'][w]:+.3f}), <φ> = "
            f"{math.atan2(np.sin(out['phi'][-1]).mean(), np.cos(out['phi'][-1]).mean()):+.3f}, "
            f"{len(out['windows'])}/{len(args['order'])} windows, {time.perf_counter() - start:.0f} s",
            flush=True,
        )
    out["wall_s"] = time.perf_counter() - start
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solvent", choices=("vacuum", "obc2"), default="obc2")
    parser.add_argument("--windows", type=int, default=60, help="window centres evenly spaced over the circle")
    parser.add_argument("--kappa", type=float, default=250.0, help="bias force constant, kJ/mol/rad²")
    parser.add_argument("--equilibrate-ps", type=float, default=10.0)
    parser.add_argument("--production-ps", type=float, default=150.0)
    parser.add_argument("--sample-fs", type=float, default=50.0, help="φ, ψ stored every this many fs")
    parser.add_argument("--frame-ps", type=float, default=1.0, help="positions stored every this many ps")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=300.0)
    parser.add_argument("--friction", type=float, default=1.0, help="1/ps")
    parser.add_argument("--timestep-fs", type=float, default=1.0)
    parser.add_argument("--out-dir", type=Path, default=HERE.parents[1] / "data" / "alanine_dipeptide")
    a = parser.parse_args(argv)
    cli_args = sys.argv[1:] if argv is None else argv

    import openmm

    ad = _system_module()
    centers = -np.pi + 2 * np.pi * (np.arange(a.windows) + 0.5) / a.windows
    phi_start = float(dihedral_np(ad.build_openmm_system(a.solvent)[2][None], ad.PHI_ATOMS)[0])
    first = int(np.argmin(np.abs(np.angle(np.exp(1j * (centers - phi_start))))))
    half = a.windows // 2
    up = [(first + i) % a.windows for i in range(half)]
    down = [(first - 1 - i) % a.windows for i in range(a.windows - half)]
    common = dict(
        solvent=a.solvent,
        centers=centers.tolist(),
        kappa=a.kappa,
        equilibrate_ps=a.equilibrate_ps,
        production_ps=a.production_ps,
        sample_fs=a.sample_fs,
        frame_ps=a.frame_ps,
        temperature=a.temperature,
        friction=a.friction,
        timestep_fs=a.timestep_fs,
    )
    jobs = [
        dict(common, walk=0, order=up, seed=1000 * a.seed),
        dict(common, walk=1, order=down, seed=1000 * a.seed + 1),
    ]
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(2) as pool:
        walks = pool.map(run_walk, jobs)
    order = np.argsort([w for walk in walks for w in walk["windows"]])

    def stack(key: str) -> np.ndarray:
        return np.stack([x for walk in walks for x in walk[key]])[order]

    a.out_dir.mkdir(parents=True, exist_ok=True)
    path = a.out_dir / f"umbrella_{a.solvent}.npz"
    np.savez_compressed(
        path,
        centers=centers,
        kappa=a.kappa,
        kT=KB * a.temperature,
        phi=stack("phi"),
        psi=stack("psi"),
        positions=stack("positions"),
        walk=np.array([k for k, walk in enumerate(walks) for _ in walk["windows"]])[order],
    )
    meta = {
        "command": "python systems/alanine_dipeptide/umbrella.py " + shlex.join(cli_args),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "openmm_version": openmm.__version__,
        "bias": "0.5 * kappa * d(phi, phi_k)^2, kJ/mol; d periodic distance; phi = C(ACE)-N-CA-C",
        "units": {"phi": "rad", "positions": "nm (float32)", "kappa": "kJ/mol/rad^2", "kT": "kJ/mol"},
        "wall_time_s": round(time.perf_counter() - start, 1),
        "walk_wall_s": [round(w["wall_s"], 1) for w in walks],
        "file": path.name,
        "file_bytes": path.stat().st_size,
        **{k: v for k, v in common.items() if k != "centers"},
        "windows": a.windows,
        "seed": a.seed,
    }
    (a.out_dir / f"umbrella_{a.solvent}.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
