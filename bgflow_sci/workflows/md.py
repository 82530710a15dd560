"""Reference MD with OpenMM (``bgflow-sci md``): Langevin dynamics, positions + forces + energies per frame,
independent replicas in parallel processes, resumable after a kill, reused and extended across runs.

Dynamics: :class:`openmm.LangevinMiddleIntegrator` at ``temperature`` (K) with ``timestep_fs`` and
``friction_per_ps``. Each replica ``k`` starts from the given positions, is minimised (``LocalEnergyMinimizer``,
tolerance 10 kJ/mol/nm, at most 1000 iterations), given Maxwell-Boltzmann velocities and equilibrated for
``equilibration_ps``; production time starts at 0 after that. Frame ``i`` (1-based) is taken at ``i * frame_ps``.
Replica ``k`` uses the OpenMM random seed ``seed + k + 1`` (OpenMM treats 0 as "pick one at random").

File layout under ``out``::

    md.json                  settings (checked on resume), platform + timing of the choice, one record per run
    topology.pdb             the topology at the starting positions (load the DCDs with it), when one is given
    replica<k>/positions.dcd positions (DCD stores float32 Å; mdtraj converts to nm)
    replica<k>/forces.npy    forces, float32 kJ/mol/nm, shape (frames, n_atoms, 3)
    replica<k>/energies.csv  time_ps, potential_kjmol, kinetic_kjmol, temperature_k per frame
    replica<k>/checkpoint.chk OpenMM checkpoint (positions, velocities, RNG state) at the last chunk boundary
    replica<k>/state.json    frames done, steps, sha256 of checkpoint.chk, equilibration record

Crash safety: frames are kept in memory for one chunk, appended to the three frame files and flushed to disk, then
``state.json`` (the commit, naming the checkpoint's sha256) replaces the old one, then ``checkpoint.chk``. On
resume the frame files are truncated to the committed frame count and the matching checkpoint is loaded, so a kill
at any moment leaves no missing or duplicated frames and times stay continuous.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..io.frame_files import (
    ENERGY_COLUMNS,
    csv_append,
    csv_read,
    csv_truncate,
    dcd_append,
    dcd_truncate,
    npy_append,
    npy_truncate,
    write_json_atomic,
)

__all__ = ["read_md", "run_md", "run_molecule_md", "select_platform"]

PLATFORMS = ("CUDA", "OpenCL", "CPU", "Reference")
MOLAR_GAS_CONSTANT = 0.00831446261815324  # kJ/mol/K
SETTINGS_KEYS = (
    "n_atoms",
    "system_sha256",
    "temperature",
    "timestep_fs",
    "friction_per_ps",
    "frame_ps",
    "seed",
    "equilibration_ps",
)


# ------------------------------------------------------------------------------------------------- platforms
def _platform_properties(name: str, threads: int | None) -> dict[str, str]:
    if name == "CPU" and threads:
        return {"Threads": str(int(threads))}
    if name in ("CUDA", "OpenCL"):
        return {"Precision": "mixed"}
    return {}


def _make_context(
    system, temperature: float, timestep_fs: float, friction_per_ps: float, platform: str, props, seed: int = 1
):
    import openmm
    from openmm import unit

    integrator = openmm.LangevinMiddleIntegrator(
        temperature * unit.kelvin, friction_per_ps / unit.picosecond, timestep_fs * unit.femtosecond
    )
    integrator.setRandomNumberSeed(seed)  # read when the context is created
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform), props)
    return context, integrator


def select_platform(
    system,
    positions: np.ndarray,
    temperature: float,
    timestep_fs: float = 1.0,
    friction_per_ps: float = 1.0,
    steps: int = 300,
    threads: int | None = None,
) -> tuple[str, dict[str, Any]]:
    """The fastest OpenMM platform for ``system``: each available platform of :data:`PLATFORMS` runs ``steps``
    Langevin steps (after 20 warm-up steps) from ``positions`` (nm). Returns ``(name, {platform: steps/s or
    "failed: message"})``."""
    import openmm

    available = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    timing: dict[str, Any] = {}
    for name in [p for p in PLATFORMS if p in available]:
        try:
            context, integrator = _make_context(
                system, temperature, timestep_fs, friction_per_ps, name, _platform_properties(name, threads)
            )
            context.setPositions(np.asarray(positions, dtype=np.float64))
            openmm.LocalEnergyMinimizer.minimize(context, 10.0, 50)
            context.setVelocitiesToTemperature(temperature, 1)
            integrator.step(20)
            context.getState(getEnergy=True)
            start = time.perf_counter()
            integrator.step(steps)
            context.getState(getEnergy=True)
            timing[name] = steps / (time.perf_counter() - start)
            del context, integrator
        except Exception as err:  # a platform present but unusable here (no GPU driver, ...)
            timing[name] = f"failed: {err}"
    rates = {k: v for k, v in timing.items() if isinstance(v, float)}
    if not rates:
        raise ValueError(f"no OpenMM platform can run this system: {timing}")
    return max(rates, key=rates.get), timing


# --------------------------------------------------------------------------------------------------- replica
def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _degrees_of_freedom(system) -> int:
    import openmm

    n = sum(1 for i in range(system.getNumParticles()) if system.getParticleMass(i)._value > 0)
    dof = 3 * n - system.getNumConstraints()
    if any(isinstance(system.getForce(i), openmm.CMMotionRemover) for i in range(system.getNumForces())):
        dof -= 3
    return max(dof, 1)


def _replica_frames(folder: Path) -> int:
    state = folder / "state.json"
    if not state.is_file():
        return 0
    return int(json.loads(state.read_text()).get("frames", 0))


def _load_committed(folder: Path) -> tuple[dict | None, bytes | None]:
    """The committed ``state.json`` and its checkpoint (``checkpoint.chk``, or ``checkpoint.chk.tmp`` when the
    kill came between the commit and the rename); ``(None, None)`` when nothing was committed."""
    path = folder / "state.json"
    if not path.is_file():
        return None, None
    state = json.loads(path.read_text())
    for name in ("checkpoint.chk", "checkpoint.chk.tmp"):
        chk = folder / name
        if chk.is_file():
            data = chk.read_bytes()
            if _sha256(data) == state["checkpoint_sha256"]:
                return state, data
    raise ValueError(f"{folder}: checkpoint.chk does not match state.json (sha256); delete the folder to restart it")


def _run_replica(job: dict[str, Any], report: Callable[[int, int], None]) -> dict[str, Any]:
    """Run replica ``job["k"]`` up to ``job["n_frames"]`` frames in ``job["folder"]`` (see the module docstring);
    ``report(k, frames)`` is called after every frame with the frames done so far."""
    import openmm
    from openmm import unit

    folder = Path(job["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    k, n_atoms, cell = job["k"], job["n_atoms"], job["periodic"]
    system = openmm.XmlSerializer.deserialize(job["system_xml"])
    context, integrator = _make_context(
        system,
        job["temperature"],
        job["timestep_fs"],
        job["friction_per_ps"],
        job["platform"],
        job["properties"],
        job["openmm_seed"],
    )
    dof = _degrees_of_freedom(system)
    dt_ps = job["timestep_fs"] / 1000.0
    state, checkpoint = _load_committed(folder)
    if state is not None:
        if state["platform"] != job["platform"]:
            raise ValueError(
                f"{folder}: key 'platform': the checkpoint was written on {state['platform']!r}, asked for "
                f"{job['platform']!r} (OpenMM checkpoints are platform-specific); resume with --platform "
                f"{state['platform']}"
            )
        context.loadCheckpoint(checkpoint)
        frames = int(state["frames"])
        dcd_truncate(folder / "positions.dcd", frames, n_atoms, cell)
        npy_truncate(folder / "forces.npy", frames, (n_atoms, 3))
        csv_truncate(folder / "energies.csv", frames)
    else:
        for name in ("positions.dcd", "forces.npy", "energies.csv", "checkpoint.chk", "checkpoint.chk.tmp"):
            (folder / name).unlink(missing_ok=True)
        context.setPositions(np.asarray(job["positions"], dtype=np.float64))
        e0 = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        openmm.LocalEnergyMinimizer.minimize(context, 10.0, 1000)
        e_min = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        context.setVelocitiesToTemperature(job["temperature"] * unit.kelvin, job["openmm_seed"])
        eq_steps = int(round(job["equilibration_ps"] / dt_ps))
        integrator.step(eq_steps)
        e_eq = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        context.setTime(0.0)
        context.setStepCount(0)
        frames = 0
        state = {
            "replica": k,
            "openmm_seed": job["openmm_seed"],
            "platform": job["platform"],
            "equilibration": {
                "minimizer": "LocalEnergyMinimizer(tolerance=10 kJ/mol/nm, maxIterations=1000)",
                "potential_start_kjmol": e0,
                "potential_minimized_kjmol": e_min,
                "steps": eq_steps,
                "ps": eq_steps * dt_ps,
                "potential_end_kjmol": e_eq,
            },
        }
        _commit(folder, state, context, 0)
    report(k, frames)
    steps_per_frame, target = job["steps_per_frame"], job["n_frames"]
    start = time.perf_counter()
    computed = 0
    while frames < target:
        chunk = min(job["chunk_frames"], target - frames)
        pos = np.empty((chunk, n_atoms, 3), np.float32)
        force = np.empty((chunk, n_atoms, 3), np.float32)
        energies = np.empty((chunk, len(ENERGY_COLUMNS)))
        boxes = np.empty((chunk, 3)) if cell else None
        chunk_start = time.perf_counter()
        done = 0
        while done < chunk:
            integrator.step(steps_per_frame)
            st = context.getState(getPositions=True, getForces=True, getEnergy=True)
            pos[done] = st.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
            force[done] = st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
            ekin = st.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
            energies[done] = (
                context.getStepCount() * dt_ps,
                st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
                ekin,
                2.0 * ekin / (dof * MOLAR_GAS_CONSTANT),
            )
            if cell:
                vectors = st.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
                boxes[done] = np.linalg.norm(vectors, axis=1)
            done += 1
            report(k, frames + done)
            if time.perf_counter() - chunk_start > job["checkpoint_s"]:
                break
        dcd_append(folder / "positions.dcd", pos[:done], None if boxes is None else boxes[:done])
        npy_append(folder / "forces.npy", force[:done])
        csv_append(folder / "energies.csv", energies[:done])
        frames += done
        computed += done
        _commit(folder, state, context, frames)
    return {"replica": k, "frames": frames, "computed": computed, "wall_s": time.perf_counter() - start}


def _commit(folder: Path, state: dict[str, Any], context, frames: int) -> None:
    """Write the checkpoint and ``state.json`` for ``frames`` committed frames (state first: it is the commit)."""
    data = context.createCheckpoint()
    tmp = folder / "checkpoint.chk.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    state.update(frames=frames, steps=int(context.getStepCount()), checkpoint_sha256=_sha256(data))
    state["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_json_atomic(folder / "state.json", state)
    os.replace(tmp, folder / "checkpoint.chk")


def _worker_main(job: dict[str, Any], queue) -> None:
    """Entry point of a replica process: runs :func:`_run_replica`, sends progress and the result (or the error)
    through ``queue``."""
    try:
        result = _run_replica(job, lambda k, n: queue.put(("progress", k, n)))
        queue.put(("done", job["k"], result))
    except BaseException as err:  # sent to the parent, which raises it
        queue.put(
            ("error", job["k"], f"{type(err).__name__}: {err}\n{traceback.format_exc()}", isinstance(err, ValueError))
        )


# -------------------------------------------------------------------------------------------------- run_md
def _system_sha256(system_xml: str) -> str:
    return _sha256(system_xml.encode())


def _check_settings(out: Path, old: dict[str, Any], new: dict[str, Any]) -> None:
    for key in SETTINGS_KEYS:
        a, b = old.get(key), new.get(key)
        same = math.isclose(a, b, rel_tol=1e-12) if isinstance(a, float) and isinstance(b, float) else a == b
        if not same:
            what = "system (force field, topology or nonbonded settings)" if key == "system_sha256" else key
            raise ValueError(
                f"{out}: key {key!r}: the existing MD was run with {what} {a!r}, asked for {b!r}; "
                "use another output folder or delete this one"
            )


def _whole(value: float, key: str, out: Path) -> int:
    n = round(value)
    if n < 1 or abs(value - n) > 1e-6 * max(1.0, abs(value)):
        raise ValueError(f"{out}: key {key!r}: must give a whole positive number, got {value!r}")
    return int(n)


def run_md(
    system,
    positions,
    temperature: float,
    out,
    *,
    ns: float,
    frame_ps: float = 1.0,
    replicas: int = 1,
    seed: int = 0,
    platform: str | None = None,
    timestep_fs: float = 1.0,
    friction_per_ps: float = 1.0,
    topology=None,
    progress: bool = True,
    equilibration_ps: float = 10.0,
    chunk_frames: int = 100,
    checkpoint_s: float = 60.0,
    threads: int | None = None,
) -> Path:
    """Run (or resume, extend, reuse) ``replicas`` independent Langevin MD runs of ``ns`` ns each into ``out``.

    ``system``: ``openmm.System``; ``positions``: ``(n_atoms, 3)`` nm; ``temperature``: K. ``platform``: OpenMM
    platform name, or None: the one recorded in ``out``, else the fastest by :func:`select_platform` (reported on
    stderr and in ``md.json``). Frames every ``frame_ps`` ps (a whole number of ``timestep_fs`` steps); a checkpoint
    every ``chunk_frames`` frames or ``checkpoint_s`` seconds, whichever comes first. ``threads``: CPU-platform
    threads in all (default: the cores available), divided among the replicas running at once. ``topology``
    (mdtraj or OpenMM) is written as ``topology.pdb``. Replicas run in parallel processes (one process per
    replica when more than one has frames to do; they are spawned, so a script calling this needs the
    ``if __name__ == "__main__":`` guard). Already complete replicas are not recomputed; a larger ``ns``
    extends them. Settings that differ from those in ``out`` raise ``ValueError`` naming the folder and key.
    Returns ``out`` as a Path (see the module docstring for its files).
    """
    import openmm

    out = Path(out).expanduser().resolve()
    positions = np.asarray(positions, dtype=np.float64)
    n_atoms = int(system.getNumParticles())
    if positions.shape != (n_atoms, 3):
        raise ValueError(f"{out}: positions have shape {positions.shape}, the system has {n_atoms} atoms")
    if replicas < 1:
        raise ValueError(f"{out}: key 'replicas': must be a positive integer, got {replicas!r}")
    steps_per_frame = _whole(frame_ps * 1000.0 / timestep_fs, "frame_ps / timestep_fs", out)
    n_frames = _whole(ns * 1000.0 / frame_ps, "ns / frame_ps", out)
    system_xml = openmm.XmlSerializer.serialize(system)
    settings = {
        "n_atoms": n_atoms,
        "system_sha256": _system_sha256(system_xml),
        "temperature": float(temperature),
        "timestep_fs": float(timestep_fs),
        "friction_per_ps": float(friction_per_ps),
        "frame_ps": float(frame_ps),
        "seed": int(seed),
        "equilibration_ps": float(equilibration_ps),
        "integrator": "LangevinMiddleIntegrator",
    }
    meta_path = out / "md.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    if meta is not None:
        _check_settings(out, meta["settings"], settings)
    folders = [out / f"replica{k}" for k in range(replicas)]
    todo = [k for k in range(replicas) if _replica_frames(folders[k]) < n_frames]
    if not todo:
        if progress:
            print(f"md: {out} already holds {replicas} x {ns} ns; nothing to compute", file=sys.stderr)
        return out

    out.mkdir(parents=True, exist_ok=True)
    timing = None
    if platform is None and meta is not None:
        platform = meta.get("platform")
    if platform is None:
        platform, timing = select_platform(system, positions, temperature, timestep_fs, friction_per_ps)
        if progress:
            rates = ", ".join(f"{k} {v:.0f} steps/s" if isinstance(v, float) else f"{k} {v}" for k, v in timing.items())
            print(f"md: platform {platform} (timing: {rates})", file=sys.stderr)
    n_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_replica = max(1, (threads or n_cores) // len(todo))
    meta = meta or {"settings": settings, "runs": []}
    meta.update(platform=platform, n_atoms=n_atoms)
    if timing is not None:
        meta["platform_timing_steps_per_s"] = timing
    run = {
        "command": sys.argv,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "ns": ns,
        "replicas": replicas,
        "platform": platform,
        "threads_per_replica": per_replica if platform == "CPU" else None,
    }
    meta["runs"].append(run)
    write_json_atomic(meta_path, meta)
    if topology is not None and not (out / "topology.pdb").is_file():
        from ..io.trajectories import write_trajectory

        write_trajectory(positions[None], topology, out / "topology.pdb")

    periodic = bool(system.usesPeriodicBoundaryConditions())
    jobs = [
        {
            "k": k,
            "folder": str(folders[k]),
            "system_xml": system_xml,
            "positions": positions,
            "n_atoms": n_atoms,
            "periodic": periodic,
            "temperature": float(temperature),
            "timestep_fs": float(timestep_fs),
            "friction_per_ps": float(friction_per_ps),
            "equilibration_ps": float(equilibration_ps),
            "steps_per_frame": steps_per_frame,
            "n_frames": n_frames,
            "openmm_seed": int(seed) + k + 1,
            "platform": platform,
            "properties": _platform_properties(platform, per_replica),
            "chunk_frames": max(1, int(chunk_frames)),
            "checkpoint_s": float(checkpoint_s),
        }
        for k in todo
    ]
    from tqdm.auto import tqdm

    done = {k: _replica_frames(folders[k]) for k in todo}
    bar = tqdm(
        total=n_frames * len(todo),
        initial=sum(min(v, n_frames) for v in done.values()),
        unit="frame",
        desc=f"md {len(todo)} replica(s)",
        disable=not progress,
        mininterval=0.5,
        dynamic_ncols=True,
    )

    def report(k: int, n: int) -> None:
        bar.update(max(0, n - done[k]))
        done[k] = max(done[k], n)

    start = time.perf_counter()
    try:
        if len(jobs) == 1:
            results = [_run_replica(jobs[0], report)]
        else:
            results = _run_parallel(jobs, report)
    finally:
        bar.close()
    wall = time.perf_counter() - start
    computed = sum(r["computed"] for r in results)
    run.update(
        wall_s=wall,
        frames_computed=computed,
        ns_per_day_per_replica=(computed / len(jobs)) * frame_ps * 1e-3 / wall * 86400.0 if wall > 0 else None,
    )
    write_json_atomic(meta_path, meta)
    return out


def _run_parallel(jobs: list[dict[str, Any]], report: Callable[[int, int], None]) -> list[dict[str, Any]]:
    """One spawned process per job; progress and results come back through a queue. Every process is ended
    (terminated when still running) before this returns or raises, also on KeyboardInterrupt."""
    import multiprocessing
    import queue as queue_module

    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = {job["k"]: ctx.Process(target=_worker_main, args=(job, q), daemon=True) for job in jobs}
    results: dict[int, dict[str, Any]] = {}
    try:
        for p in procs.values():
            p.start()
        while len(results) < len(jobs):
            try:
                msg = q.get(timeout=0.5)
            except queue_module.Empty:
                dead = [k for k, p in procs.items() if k not in results and not p.is_alive() and p.exitcode != 0]
                if dead:
                    raise RuntimeError(f"MD replica {dead[0]} died with exit code {procs[dead[0]].exitcode}") from None
                continue
            if msg[0] == "progress":
                report(msg[1], msg[2])
            elif msg[0] == "done":
                results[msg[1]] = msg[2]
            else:
                _, k, text, user_error = msg
                raise (ValueError if user_error else RuntimeError)(f"MD replica {k}: {text}")
    finally:
        for p in procs.values():
            if p.is_alive() and p.pid is not None and len(results) < len(jobs):
                p.terminate()
        for p in procs.values():
            if p.pid is not None:
                p.join(timeout=30)
        q.close()
    return [results[job["k"]] for job in jobs]


# ------------------------------------------------------------------------------------------- molecule + read
def run_molecule_md(
    molecule,
    out=None,
    ns=None,
    replicas=None,
    platform=None,
    seed=None,
    progress: bool = True,
    threads: int | None = None,
    equilibration_ps: float | None = None,
) -> Path:
    """:func:`run_md` for a :class:`~bgflow_sci.workflows.molecule.Molecule` (or the path of its config file)
    with the settings of its ``md`` section; the arguments given (not None) override them. Returns the folder."""
    if isinstance(molecule, str | os.PathLike):
        from .molecule import load_molecule

        molecule = load_molecule(molecule)
    md = dict(molecule.md)
    given = {"out": out, "ns": ns, "replicas": replicas, "platform": platform, "seed": seed}
    md.update({k: v for k, v in given.items() if v is not None})
    if equilibration_ps is not None:
        md["equilibration_ps"] = equilibration_ps
    return run_md(
        molecule.system,
        molecule.positions,
        molecule.temperature,
        Path(md["out"]),
        ns=float(md["ns"]),
        frame_ps=float(md["frame_ps"]),
        replicas=int(md["replicas"]),
        seed=int(md["seed"]),
        platform=md.get("platform"),
        timestep_fs=float(md["timestep_fs"]),
        friction_per_ps=float(md["friction_per_ps"]),
        topology=molecule.topology,
        progress=progress,
        equilibration_ps=float(md.get("equilibration_ps", 10.0)),
        threads=threads,
    )


def read_md(out) -> dict[str, np.ndarray]:
    """The committed frames of every replica in ``out`` (replica order, then time): ``positions`` and ``forces``
    ``(frames, n_atoms, 3)`` float32 (nm, kJ/mol/nm), ``potential_energy``, ``kinetic_energy`` (kJ/mol),
    ``temperature`` (K), ``time`` (ps) and ``replica`` (int), all ``(frames,)``. Raises ``FileNotFoundError`` /
    ``ValueError`` naming the folder when it holds no MD frames."""
    from mdtraj.formats import DCDTrajectoryFile

    out = Path(out).expanduser()
    if not (out / "md.json").is_file():
        raise FileNotFoundError(f"no MD in {str(out)!r} (no md.json): run `bgflow-sci md CONFIG --out {out}` first")
    n_atoms = int(json.loads((out / "md.json").read_text())["settings"]["n_atoms"])
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("positions", "forces", "energies", "replica")}
    folders = sorted(out.glob("replica*"), key=lambda p: int(p.name[7:]) if p.name[7:].isdigit() else -1)
    for folder in folders:
        if not folder.name[7:].isdigit():
            continue
        n = _replica_frames(folder)
        if n == 0:
            continue
        with DCDTrajectoryFile(str(folder / "positions.dcd")) as f:
            xyz = f.read(n_frames=n)[0]
        forces = np.load(folder / "forces.npy", mmap_mode="r")[:n]
        energies = csv_read(folder / "energies.csv")[:n]
        if len(xyz) < n or len(forces) < n or len(energies) < n:
            raise ValueError(f"{folder}: state.json commits {n} frames but the frame files hold fewer")
        parts["positions"].append(np.asarray(xyz[:n], dtype=np.float32) / np.float32(10.0))
        parts["forces"].append(np.array(forces, dtype=np.float32))
        parts["energies"].append(energies)
        parts["replica"].append(np.full(n, int(folder.name[7:])))
    if not parts["positions"]:
        raise ValueError(f"no MD frames in {str(out)!r}: run `bgflow-sci md CONFIG --out {out}` first")
    energies = np.concatenate(parts["energies"])
    positions = np.concatenate(parts["positions"])
    if positions.shape[1] != n_atoms:
        raise ValueError(f"{out}: the trajectories have {positions.shape[1]} atoms, md.json says {n_atoms}")
    return {
        "positions": positions,
        "forces": np.concatenate(parts["forces"]),
        "time": energies[:, 0],
        "potential_energy": energies[:, 1],
        "kinetic_energy": energies[:, 2],
        "temperature": energies[:, 3],
        "replica": np.concatenate(parts["replica"]),
    }
