"""Well-tempered metadynamics on (φ, ψ), then MD under the frozen bias: an independent alanine-dipeptide reference.

A 1D bias along φ leaves ψ unbiased, and windows at φ > 0 do not equilibrate ψ within their run (see
``umbrella.py``). This script biases both torsions, which removes every barrier of the (φ, ψ) surface, in two
phases per walker (one process each, ``--walkers`` independent walkers with seeds ``1000 * seed + k``):

1. **Build the bias** (``--build-ns``): well-tempered metadynamics (Barducci, Bussi & Parrinello 2008) with
   ``openmm.app.Metadynamics``: Gaussians of height ``--height`` kJ/mol and width ``--width`` rad every
   ``--pace-fs`` on a periodic ``--grid`` × ``--grid`` grid, bias factor γ = ``--bias-factor``; the bias tends to
   ``V = -(1 - 1/γ) F(φ, ψ)``.
2. **Sample under the frozen bias** (``--production-ns``): plain Langevin MD with the final ``V`` held fixed.
   Under a fixed bias the frames are exact samples of ``p_V(x) ∝ exp(-(U(x) + V(s(x))) / kT)``, so each frame's
   importance weight to the unbiased Boltzmann distribution is ``w = exp(V(s) / kT)``, known exactly (the bias
   energy is read from OpenMM's force group of the bias). No assumption about the convergence of phase 1 enters
   the estimate; a poor bias only costs statistical efficiency, and the many φ transitions under the bias (counted
   in ``reference.py``) show that the frozen-bias chains mix.

Same system, integrator and settings as ``generate_md.py`` (LangevinMiddleIntegrator, 300 K, 1/ps, 1 fs, Reference
platform). φ, ψ and V are stored every ``--sample-fs``, positions every ``--frame-ps``; each walker writes partial
files as it goes, so a killed run leaves usable data. Output: ``metad_<solvent>.npz`` and ``.json``; the weights
and ΔF come from ``reference.py``.

    python systems/alanine_dipeptide/metadynamics.py --solvent obc2 --walkers 2 --build-ns 8 --production-ns 25 --seed 7

Like ``generate_md.py`` this file avoids importing torch so that the spawned workers stay light.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from generate_md import _system_module, add_md_arguments  # same folder: the system module without importing torch

HERE = Path(__file__).resolve().parent
KB = 0.00831446261815324  # kJ/mol/K


def _torsion(atoms: tuple[int, int, int, int]):
    import openmm as mm

    force = mm.CustomTorsionForce("theta")
    force.addTorsion(*atoms, [])
    return force


def run_walker(args: dict) -> dict:
    """Phase 1 (build the bias) and phase 2 (frozen bias) for one walker; returns its arrays."""
    import openmm as mm
    from openmm import app, unit

    ad = _system_module()
    topology, system, positions = ad.build_openmm_system(args["solvent"])
    variables = [
        app.BiasVariable(_torsion(atoms), -np.pi, np.pi, args["width"], True, gridWidth=args["grid"])
        for atoms in (ad.PHI_ATOMS, ad.PSI_ATOMS)
    ]
    fs = args["timestep_fs"]
    pace = max(1, round(args["pace_fs"] / fs))
    np.random.seed(args["seed"])  # Metadynamics draws its file id from numpy's global generator
    meta = app.Metadynamics(
        system, variables, args["temperature"] * unit.kelvin, args["bias_factor"], args["height"], pace
    )
    group = meta._force.getForceGroup()  # the bias force's group, to read V(s) alone
    integrator = mm.LangevinMiddleIntegrator(
        args["temperature"] * unit.kelvin, args["friction"] / unit.picosecond, fs * unit.femtosecond
    )
    integrator.setRandomNumberSeed(args["seed"])
    simulation = app.Simulation(topology, system, integrator, mm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(positions)
    mm.LocalEnergyMinimizer.minimize(simulation.context)
    simulation.context.setVelocitiesToTemperature(args["temperature"] * unit.kelvin, args["seed"])
    k = args["walker"]
    partial = Path(args["out_dir"]) / f"partial_metad_{args['solvent']}_walker{k}.npz"
    start = time.perf_counter()

    # phase 1: well-tempered metadynamics, CV trace every pace
    n_gaussians = round(args["build_ns"] * 1e6 / fs) // pace
    build_cv = []
    for g in range(n_gaussians):
        meta.step(simulation, pace)
        build_cv.append(meta.getCollectiveVariables(simulation))
        if (g + 1) % max(1, n_gaussians // 20) == 0:
            print(
                f"walker {k}: build {(g + 1) * 100 // n_gaussians} %, bias range "
                f"{np.ptp(meta.getFreeEnergy().value_in_unit(unit.kilojoule_per_mole)):.1f} kJ/mol, "
                f"{time.perf_counter() - start:.0f} s",
                flush=True,
            )
    bias_grid = np.array(meta._totalBias)  # V on the grid, kJ/mol, indexed [ψ, φ]
    build_wall = time.perf_counter() - start

    # phase 2: the bias stays as it is; plain steps of the integrator do not add Gaussians
    sample_steps = max(1, round(args["sample_fs"] / fs))
    frame_every = max(1, round(args["frame_ps"] * 1000 / fs) // sample_steps)
    n_samples = round(args["production_ns"] * 1e6 / fs) // sample_steps
    cv = np.empty((n_samples, 3), np.float32)  # φ, ψ (rad), V (kJ/mol)
    frames = np.empty((n_samples // frame_every, len(positions), 3), np.float32)
    for s in range(n_samples):
        integrator.step(sample_steps)
        want_positions = (s + 1) % frame_every == 0
        state = simulation.context.getState(getEnergy=True, getPositions=want_positions, groups={group})
        phi, psi = meta.getCollectiveVariables(simulation)
        cv[s] = (phi, psi, state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        if want_positions:
            frames[(s + 1) // frame_every - 1] = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        if (s + 1) % max(1, n_samples // 10) == 0 or s + 1 == n_samples:
            np.savez(partial, cv=cv[: s + 1], positions=frames[: (s + 1) // frame_every], bias_grid=bias_grid)
            print(
                f"walker {k}: frozen bias {(s + 1) * 100 // n_samples} %, φ > 0 fraction "
                f"{(cv[: s + 1, 0] > 0).mean():.3f}, {time.perf_counter() - start:.0f} s",
                flush=True,
            )
    return {
        "cv": cv,
        "positions": frames,
        "bias_grid": bias_grid,
        "build_cv": np.asarray(build_cv, np.float32),
        "build_wall_s": build_wall,
        "wall_s": time.perf_counter() - start,
        "partial": str(partial),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_md_arguments(parser, seed=7)
    parser.add_argument("--walkers", type=int, default=2, help="independent walkers, one process each")
    parser.add_argument("--build-ns", type=float, default=8.0, help="well-tempered metadynamics per walker")
    parser.add_argument("--production-ns", type=float, default=25.0, help="MD under the frozen bias per walker")
    parser.add_argument("--height", type=float, default=1.0, help="initial Gaussian height, kJ/mol")
    parser.add_argument("--width", type=float, default=0.35, help="Gaussian width, rad")
    parser.add_argument("--pace-fs", type=float, default=500.0, help="a Gaussian every this many fs")
    parser.add_argument("--bias-factor", type=float, default=6.0)
    parser.add_argument("--grid", type=int, default=100, help="bias grid points per torsion")
    parser.add_argument("--sample-fs", type=float, default=200.0, help="φ, ψ and V stored every this many fs")
    parser.add_argument("--frame-ps", type=float, default=2.0, help="positions stored every this many ps")
    a = parser.parse_args(argv)
    if a.walkers < 1 or a.build_ns <= 0 or a.production_ns <= 0 or a.bias_factor <= 1:
        parser.error("need walkers >= 1, build-ns > 0, production-ns > 0 and bias-factor > 1")
    cli_args = sys.argv[1:] if argv is None else argv

    import openmm

    a.out_dir.mkdir(parents=True, exist_ok=True)
    common = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items() if k not in ("walkers", "seed")}
    jobs = [dict(common, walker=k, seed=1000 * a.seed + k) for k in range(a.walkers)]
    start = time.perf_counter()
    if a.walkers == 1:  # in this process
        walkers = [run_walker(jobs[0])]
    else:
        with mp.get_context("spawn").Pool(a.walkers) as pool:
            walkers = pool.map(run_walker, jobs)
    path = a.out_dir / f"metad_{a.solvent}.npz"
    n = min(len(w["cv"]) for w in walkers)
    n_build = min(len(w["build_cv"]) for w in walkers)
    np.savez_compressed(
        path,
        phi=np.stack([w["cv"][:n, 0] for w in walkers]),
        psi=np.stack([w["cv"][:n, 1] for w in walkers]),
        bias=np.stack([w["cv"][:n, 2] for w in walkers]),
        positions=np.stack([w["positions"] for w in walkers]),
        bias_grid=np.stack([w["bias_grid"] for w in walkers]),
        build_cv=np.stack([w["build_cv"][:n_build] for w in walkers]),
        kT=KB * a.temperature,
        sample_fs=a.sample_fs,
        frame_ps=a.frame_ps,
    )
    meta = {
        "command": "python systems/alanine_dipeptide/metadynamics.py " + shlex.join(cli_args),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "openmm_version": openmm.__version__,
        "arrays": {
            "phi, psi, bias": "(walkers, samples): rad, rad, frozen bias V in kJ/mol, every sample_fs of phase 2",
            "positions": "(walkers, frames, 22, 3) nm float32, every frame_ps of phase 2",
            "bias_grid": "(walkers, grid, grid) final bias in kJ/mol, indexed [psi, phi] over [-pi, pi)",
            "build_cv": "(walkers, n, 2) phi, psi at every Gaussian of phase 1",
        },
        "weights": "w = exp(bias / kT) reweights phase-2 samples to the unbiased Boltzmann distribution",
        "wall_time_s": round(time.perf_counter() - start, 1),
        "walker_build_wall_s": [round(w["build_wall_s"], 1) for w in walkers],
        "walker_wall_s": [round(w["wall_s"], 1) for w in walkers],
        "file": path.name,
        "file_bytes": path.stat().st_size,
        **{k: v for k, v in common.items() if k != "out_dir"},
        "walkers": a.walkers,
        "seed": a.seed,
    }
    (a.out_dir / f"metad_{a.solvent}.json").write_text(json.dumps(meta, indent=2) + "\n")
    for w in walkers:
        Path(w["partial"]).unlink(missing_ok=True)
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
