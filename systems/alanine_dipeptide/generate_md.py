"""Reference Langevin MD of alanine dipeptide (amber99sbildn, vacuum or OBC2) for ``data/alanine_dipeptide/``.

Regenerate the shipped data (exact commands also in ``config.json``; each chain costs about 20 CPU-minutes at
the ~22,000 steps/s of the Reference platform on an idle core, far longer on a shared machine)::

    python systems/alanine_dipeptide/generate_md.py --solvent obc2 --frames 50000 --chains 2 --seed 1
    python systems/alanine_dipeptide/generate_md.py --solvent vacuum --frames 50000 --chains 2 --seed 2

Each of ``--chains`` independent chains (one process each, seeds ``1000 * seed + chain``) minimises the
PDB structure, draws Maxwell-Boltzmann velocities, equilibrates for ``--equilibrate-ps`` and then records
positions (nm), forces (kJ/mol/nm) and potential energies (kJ/mol) every ``--interval-ps`` with
``LangevinMiddleIntegrator`` (300 K, friction 1/ps, 1 fs: there are no constraints, and 2 fs with free
X-H bonds is not stable).  The Reference platform is the fastest for 22 atoms.  Every chain writes its
frames in chunks to ``partial_<solvent>_chain<k>.npz`` so that a killed run leaves usable data; at the end
the chains are concatenated into ``md_<solvent>.npz`` (positions float32, forces float16, compressed) with
``md_<solvent>.json`` metadata, and the partial files are removed.  ``--merge-only`` merges existing partials.

``--start basin`` starts chain k from the k-th most probable αL/C7ax frame of the metadynamics data instead of the
PDB structure and writes ``md_<solvent>_basin.npz``: plain MD inside the rare basin, which lives about 1 ns, so
many short chains (the shipped file: ``--start basin --frames 12000 --chains 16 --equilibrate-ps 20 --seed 3``).
Chains run in ``min(chains, cpu_count)`` processes.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import multiprocessing as mp
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _system_module():
    spec = importlib.util.spec_from_file_location("_alanine_dipeptide_system", HERE / "system.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def add_md_arguments(parser, seed: int) -> None:
    """The options every script of this folder shares: solvent, seed, Langevin settings and the output folder."""
    parser.add_argument("--solvent", choices=("vacuum", "obc2"), default="obc2")
    parser.add_argument("--seed", type=int, default=seed)
    parser.add_argument("--temperature", type=float, default=300.0, help="kelvin")
    parser.add_argument("--timestep-fs", type=float, default=1.0)
    parser.add_argument("--friction", type=float, default=1.0, help="1/ps")
    parser.add_argument("--out-dir", type=Path, default=HERE.parents[1] / "data" / "alanine_dipeptide")


def run_chain(args: dict) -> dict:
    """Run one chain; returns its timing.  Writes ``partial_<solvent>_chain<k>.npz`` every ``chunk`` frames."""
    import openmm as mm
    from openmm import unit

    ad = _system_module()
    _, system, positions = ad.build_openmm_system(args["solvent"])
    seed, k = args["seed"], args["chain"]
    if args["positions"] is not None:  # a given start (--start basin) instead of the PDB structure
        positions = args["positions"]
    dt = args["timestep_fs"] * unit.femtosecond
    integrator = mm.LangevinMiddleIntegrator(args["temperature"] * unit.kelvin, args["friction"] / unit.picosecond, dt)
    integrator.setRandomNumberSeed(seed)
    platform = mm.Platform.getPlatformByName(args["platform"])
    context = mm.Context(system, integrator, platform)
    context.setPositions(positions)
    mm.LocalEnergyMinimizer.minimize(context)
    context.setVelocitiesToTemperature(args["temperature"] * unit.kelvin, seed)
    steps_per_frame = round(args["interval_ps"] * 1000 / args["timestep_fs"])
    integrator.step(round(args["equilibrate_ps"] * 1000 / args["timestep_fs"]))

    n = args["frames"]
    pos = np.empty((n, system.getNumParticles(), 3), np.float32)
    frc = np.empty_like(pos)
    epot = np.empty(n, np.float64)
    ekin = np.empty(n, np.float64)
    out = Path(args["partial"])
    start = time.perf_counter()
    for i in range(n):
        integrator.step(steps_per_frame)
        state = context.getState(getPositions=True, getForces=True, getEnergy=True)
        pos[i] = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        frc[i] = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        epot[i] = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        ekin[i] = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        if (i + 1) % args["chunk"] == 0 or i + 1 == n:
            np.savez(
                out,
                positions=pos[: i + 1],
                forces=frc[: i + 1],
                potential_energy=epot[: i + 1],
                kinetic_energy=ekin[: i + 1],
                seed=seed,
            )
            rate = (i + 1) * steps_per_frame / (time.perf_counter() - start)
            print(
                f"chain {k}: {i + 1}/{n} frames, {rate:.0f} steps/s, <Epot> {epot[: i + 1].mean():.2f} kJ/mol",
                flush=True,
            )
    wall = time.perf_counter() - start
    return {"chain": k, "seed": seed, "wall_s": wall, "steps_per_s": n * steps_per_frame / wall}


def basin_starts(ad, solvent: str, n: int) -> list[np.ndarray]:
    """Starting positions ``(22, 3)`` nm of ``n`` chains in the αL/C7ax basin: the ``n`` most probable basin frames
    of the frozen-bias metadynamics data (largest exact weight exp(V/kT)), one per chain."""
    frames, log_w = ad.metadynamics_frames(solvent)
    basin = np.flatnonzero(ad.in_alpha_l_basin(ad.backbone_dihedrals(frames)[0]))
    return [frames[i].astype(np.float64) for i in basin[np.argsort(-log_w[basin])[:n]]]


def merge(name: str, out_dir: Path, n_chains: int, metadata: dict) -> Path:
    """Concatenate the chains' partial files into ``<name>.npz`` and write ``<name>.json``."""
    parts = [np.load(out_dir / f"partial_{name}_chain{k}.npz") for k in range(n_chains)]
    cat = {key: np.concatenate([p[key] for p in parts]) for key in ("positions", "forces", "potential_energy")}
    lengths = [len(p["positions"]) for p in parts]
    chain = np.concatenate([np.full(m, k, np.int8) for k, m in enumerate(lengths)])
    time_ps = np.concatenate([np.arange(1, m + 1) * metadata["interval_ps"] for m in lengths]).astype(np.float32)
    path = out_dir / f"{name}.npz"
    np.savez_compressed(
        path,
        positions=cat["positions"].astype(np.float32),
        forces=cat["forces"].astype(np.float16),
        potential_energy=cat["potential_energy"].astype(np.float32),
        time=time_ps,
        chain=chain,
    )
    metadata = dict(
        metadata, frames=int(sum(lengths)), frames_per_chain=lengths, file=path.name, file_bytes=path.stat().st_size
    )
    (out_dir / f"{name}.json").write_text(json.dumps(metadata, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_md_arguments(parser, seed=1)
    parser.add_argument("--frames", type=int, default=50_000, help="total frames over all chains")
    parser.add_argument("--chains", type=int, default=2, help="independent chains, one process each")
    parser.add_argument("--interval-ps", type=float, default=1.0)
    parser.add_argument("--equilibrate-ps", type=float, default=100.0)
    parser.add_argument("--platform", default="Reference")
    parser.add_argument("--chunk", type=int, default=1000, help="frames between partial writes")
    parser.add_argument("--merge-only", action="store_true", help="merge existing partial files and exit")
    parser.add_argument("--keep-partial", action="store_true")
    parser.add_argument(
        "--start",
        choices=("pdb", "basin"),
        default="pdb",
        help="pdb: the PDB structure (β region), written to md_<solvent>.npz; basin: the αL/C7ax basin (the "
        "most probable metadynamics frames there), written to md_<solvent>_basin.npz",
    )
    a = parser.parse_args(argv)
    ad = _system_module()
    name = ad.md_file(a.solvent, basin=a.start == "basin").stem
    cli_args = sys.argv[1:] if argv is None else argv

    import openmm

    per_chain = [a.frames // a.chains + (k < a.frames % a.chains) for k in range(a.chains)]
    starts = basin_starts(ad, a.solvent, a.chains) if a.start == "basin" else [None] * a.chains
    jobs = [
        dict(
            solvent=a.solvent,
            frames=m,
            seed=1000 * a.seed + k,
            chain=k,
            temperature=a.temperature,
            timestep_fs=a.timestep_fs,
            friction=a.friction,
            interval_ps=a.interval_ps,
            equilibrate_ps=a.equilibrate_ps,
            platform=a.platform,
            chunk=a.chunk,
            positions=starts[k],
            partial=str(a.out_dir / f"partial_{name}_chain{k}.npz"),
        )
        for k, m in enumerate(per_chain)
    ]
    metadata = {
        "command": "python systems/alanine_dipeptide/generate_md.py " + shlex.join(cli_args),
        "system": f"alanine dipeptide, amber99sbildn{' + amber99_obc.xml (OBC2)' if a.solvent == 'obc2' else ''}, "
        "NoCutoff, no constraints",
        "solvent": a.solvent,
        "seed": a.seed,
        "chain_seeds": [j["seed"] for j in jobs],
        "integrator": "LangevinMiddleIntegrator",
        "temperature_K": a.temperature,
        "timestep_fs": a.timestep_fs,
        "friction_per_ps": a.friction,
        "interval_ps": a.interval_ps,
        "equilibrate_ps": a.equilibrate_ps,
        "start": "PDB structure"
        if a.start == "pdb"
        else "αL/C7ax basin: chain k from the k-th most probable "
        "frame there of the frozen-bias metadynamics data (metad_<solvent>.npz)",
        "minimised": True,
        "platform": a.platform,
        "openmm_version": openmm.__version__,
        "units": {
            "positions": "nm (float32)",
            "forces": "kJ/mol/nm (float16)",
            "potential_energy": "kJ/mol",
            "time": "ps since the end of equilibration, per chain",
        },
    }
    a.out_dir.mkdir(parents=True, exist_ok=True)
    if not a.merge_only:
        start = time.perf_counter()
        if a.chains == 1:
            timings = [run_chain(jobs[0])]
        else:
            with mp.get_context("spawn").Pool(min(a.chains, os.cpu_count() or 1)) as pool:
                timings = pool.map(run_chain, jobs)
        metadata.update(
            date=datetime.datetime.now().isoformat(timespec="seconds"),
            wall_time_s=round(time.perf_counter() - start, 1),
            chains=timings,
        )
    else:
        metadata.update(
            date=datetime.datetime.now().isoformat(timespec="seconds"),
            status="merge of partial files (--merge-only): the chains may have been unfinished",
        )
    path = merge(name, a.out_dir, a.chains, metadata)
    if not a.keep_partial:
        for j in jobs:
            Path(j["partial"]).unlink()
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
