"""Umbrella sampling along φ, or on the (φ, ψ) torus, for the reference free energies of alanine dipeptide.

Plain MD at 300 K does not cross to φ > 0 often enough in tens of ns (OBC2: no αL/C7ax visit in 30 ns) to
give ΔF between the φ basins. This script runs ``--windows`` OpenMM Langevin simulations (same system,
integrator and settings as ``generate_md.py``) with a harmonic bias on the periodic distance to a window
centre φ_k,

    b_k(φ) = ½ κ d(φ, φ_k)²,   d = min(|φ - φ_k|, 2π - |φ - φ_k|),   κ in kJ/mol/rad²,

(an OpenMM ``CustomTorsionForce`` on C(ACE)-N-CA-C). Two processes walk the circle in opposite directions from
the minimised structure, each window starting from the previous window's final state and equilibrating for
``--equilibrate-ps``. φ and ψ are stored every ``--sample-fs``, positions every ``--frame-ps``; the file is
``umbrella_<solvent>.npz``.

A 1D bias along φ leaves ψ free, and at φ > 0 ψ has barriers of its own (αL ↔ C7ax): windows there may not
equilibrate ψ within their run (hidden barrier), which biases the αL/C7ax population. With ``--psi-windows M``
every window also restrains ψ (same κ, same periodic form) on an ``windows × M`` grid over the torus, so no
barrier is left unbiased; the two processes then each snake through half of the φ rows (neighbouring windows
always adjacent) and the file is ``umbrella2d_<solvent>.npz`` with ``centers`` of shape ``(K, 2)``.
The unbiased free energies come from MBAR (pymbar, through ``bgflow_sci.reweighting.mbar_free_energies``) in
``reference.py``.

Caution, measured on 2026-11-29: a 24 × 24 grid with κ = 100 kJ/mol/rad² (40 ps per window) gave a wrong
result: κ is too weak for the sharp barriers of the 2D surface, windows there stay in the mode they entered
(e.g. centre φ = -0.39 sampled φ ≈ +0.28 throughout), and the MBAR profile disagreed with 50 ns of plain MD by up to
1.7 kT inside the main basin, where the 1D windows agree with MD. The half-split check (6.31 vs 6.20 kT) cannot see
such hysteresis. A 2D grid needs κ large enough that every window's potential is unimodal, and a finer grid to
keep the overlap; the shipped reference uses the 1D windows.

**The 1D run below is wrong, and its data are no longer shipped** (found 2026-11-29): the walk that covered
φ > 0 (windows 29–58) had the C-terminal peptide bond (CA-C-N-C(NME)) in *cis* in every frame. Cause: the
structure was minimised with the restraint centred at the parameter's default φ0 = 0, which pulled φ from π to 0;
the walk's first window then sat at φ0 = 2.98, and the 3 rad jump of the centre (≈ 1,100 kJ/mol of restraint
strain) flipped the amide bond, which MD never turns back. Its αL/C7ax basin was therefore the cis state, and its
ΔF(basin) of 5.59 kT was 1.7 kT above that of the trans molecule (3.85 kT, ``metadynamics.py``). Fixed: the
restraint is centred on the walk's first window before minimising, every window records the fraction of frames
with a cis peptide bond (``cis_fraction``, ``system.all_trans``), and the script warns when any is non-zero.

    python systems/alanine_dipeptide/umbrella.py --solvent obc2 --windows 60 --kappa 250 --production-ps 150 --seed 3
    # the 2D run described above (not shipped):
    python systems/alanine_dipeptide/umbrella.py --solvent obc2 --windows 24 --psi-windows 24 --kappa 100 \
        --equilibrate-ps 5 --production-ps 40 --sample-fs 100 --seed 5

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
from generate_md import _system_module, add_md_arguments  # same folder: the system module without importing torch

HERE = Path(__file__).resolve().parent
KB = 0.00831446261815324  # kJ/mol/K


def dihedral_np(p: np.ndarray, atoms: tuple[int, int, int, int]) -> np.ndarray:
    """Dihedral (rad) of ``atoms`` in positions ``(..., n_atoms, 3)`` (same convention as mdtraj)."""
    a, b, c, d = (p[..., i, :] for i in atoms)
    b0, b1, b2 = b - a, c - b, d - c
    y = np.linalg.norm(b1, axis=-1) * (b0 * np.cross(b1, b2)).sum(-1)
    return np.arctan2(y, (np.cross(b0, b1) * np.cross(b1, b2)).sum(-1))


def periodic_bias(phi: np.ndarray, centers: np.ndarray, kappa: float) -> np.ndarray:
    """``b_k(φ_n)`` in kJ/mol, shape ``(len(centers), len(phi))``.

    For 2D windows pass ``phi`` of shape ``(n, 2)`` (φ, ψ) and ``centers`` of shape ``(K, 2)``: the biases add.
    """
    phi, centers = np.asarray(phi), np.asarray(centers)
    if centers.ndim == 2:
        return sum(periodic_bias(phi[:, i], centers[:, i], kappa) for i in range(centers.shape[1]))
    d = np.abs(phi[None, :] - centers[:, None])
    d = np.minimum(d, 2 * np.pi - d)
    return 0.5 * kappa * d**2


def _restraint(atoms: tuple[int, int, int, int], kappa: float, name: str):
    """OpenMM force ``½ κ d(θ, θ0)²`` on one torsion, centre in the global parameter ``name``."""
    import openmm as mm

    force = mm.CustomTorsionForce(f"0.5*kappa*d^2; d=min(dt, 2*pi-dt); dt=abs(theta-{name}); pi=3.141592653589793")
    force.addGlobalParameter("kappa", kappa)
    force.addGlobalParameter(name, 0.0)
    force.addTorsion(*atoms, [])
    return force


def run_walk(args: dict) -> dict:
    """Run the windows ``args["order"]`` one after the other; returns their φ, ψ and positions."""
    import openmm as mm
    from openmm import unit

    ad = _system_module()
    _, system, positions = ad.build_openmm_system(args["solvent"])
    centers = np.asarray(args["centers"])
    system.addForce(_restraint(ad.PHI_ATOMS, args["kappa"], "phi0"))
    if centers.ndim == 2:
        system.addForce(_restraint(ad.PSI_ATOMS, args["kappa"], "psi0"))
    integrator = mm.LangevinMiddleIntegrator(
        args["temperature"] * unit.kelvin, args["friction"] / unit.picosecond, args["timestep_fs"] * unit.femtosecond
    )
    integrator.setRandomNumberSeed(args["seed"])
    context = mm.Context(system, integrator, mm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    # restraint centred on the first window before minimising: a centre far from the start (the parameter's
    # default 0) exerts a torque that can flip a peptide bond to cis during minimisation
    first = np.atleast_1d(centers[args["order"][0]])
    context.setParameter("phi0", float(first[0]))
    if len(first) > 1:
        context.setParameter("psi0", float(first[1]))
    mm.LocalEnergyMinimizer.minimize(context)
    context.setVelocitiesToTemperature(args["temperature"] * unit.kelvin, args["seed"])
    fs = args["timestep_fs"]
    sample_steps = max(1, round(args["sample_fs"] / fs))
    n_samples = round(args["production_ps"] * 1000 / fs) // sample_steps
    frame_every = max(1, round(args["frame_ps"] * 1000 / fs) // sample_steps)
    out = {"windows": [], "phi": [], "psi": [], "positions": [], "cis_fraction": []}
    start = time.perf_counter()
    for i, w in enumerate(args["order"]):
        center = np.atleast_1d(centers[w])
        context.setParameter("phi0", float(center[0]))
        if len(center) > 1:
            context.setParameter("psi0", float(center[1]))
        # the first window of a walk starts from the minimised structure, possibly far away: equilibrate longer
        integrator.step(round(args["equilibrate_ps"] * (4 if i == 0 else 1) * 1000 / fs))
        pos = np.empty((n_samples, len(positions), 3), np.float32)
        for s in range(n_samples):
            integrator.step(sample_steps)
            pos[s] = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        out["windows"].append(w)
        out["phi"].append(dihedral_np(pos.astype(np.float64), ad.PHI_ATOMS).astype(np.float32))
        out["psi"].append(dihedral_np(pos.astype(np.float64), ad.PSI_ATOMS).astype(np.float32))
        out["positions"].append(pos[frame_every - 1 :: frame_every])
        out["cis_fraction"].append(float(1.0 - ad.all_trans(pos).mean()))
        print(
            f"walk {args['walk']}: window {w} (centre {np.round(center, 3).tolist()}), <φ> = "
            f"{math.atan2(np.sin(out['phi'][-1]).mean(), np.cos(out['phi'][-1]).mean()):+.3f}, "
            f"{len(out['windows'])}/{len(args['order'])} windows, {time.perf_counter() - start:.0f} s",
            flush=True,
        )
    out["wall_s"] = time.perf_counter() - start
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_md_arguments(parser, seed=3)
    parser.add_argument("--windows", type=int, default=60, help="window centres evenly spaced over the circle")
    parser.add_argument(
        "--psi-windows", type=int, default=0, help="> 0: also restrain ψ, on a windows × psi-windows grid"
    )
    parser.add_argument("--kappa", type=float, default=250.0, help="bias force constant, kJ/mol/rad²")
    parser.add_argument("--equilibrate-ps", type=float, default=10.0)
    parser.add_argument("--production-ps", type=float, default=150.0)
    parser.add_argument("--sample-fs", type=float, default=50.0, help="φ, ψ stored every this many fs")
    parser.add_argument("--frame-ps", type=float, default=1.0, help="positions stored every this many ps")
    a = parser.parse_args(argv)
    cli_args = sys.argv[1:] if argv is None else argv

    import openmm

    ad = _system_module()
    phi_centers = -np.pi + 2 * np.pi * (np.arange(a.windows) + 0.5) / a.windows
    start_pos = ad.build_openmm_system(a.solvent)[2][None]
    phi_start = float(dihedral_np(start_pos, ad.PHI_ATOMS)[0])
    first = int(np.argmin(np.abs(np.angle(np.exp(1j * (phi_centers - phi_start))))))
    half = a.windows // 2
    rows_up = [(first + i) % a.windows for i in range(half)]
    rows_down = [(first - 1 - i) % a.windows for i in range(a.windows - half)]
    if a.psi_windows > 0:
        # grid: window k = i * M + j at (φ_i, ψ_j); each walk snakes through its φ rows, starting near ψ_start
        m = a.psi_windows
        psi_centers = -np.pi + 2 * np.pi * (np.arange(m) + 0.5) / m
        psi_start = float(dihedral_np(start_pos, ad.PSI_ATOMS)[0])
        j0 = int(np.argmin(np.abs(np.angle(np.exp(1j * (psi_centers - psi_start))))))
        cols = [(j0 + j) % m for j in range(m)]

        def snake(rows: list[int]) -> list[int]:
            return [i * m + j for r, i in enumerate(rows) for j in (cols if r % 2 == 0 else cols[::-1])]

        centers = np.stack(np.meshgrid(phi_centers, psi_centers, indexing="ij"), -1).reshape(-1, 2)
        up, down = snake(rows_up), snake(rows_down)
    else:
        centers, up, down = phi_centers, rows_up, rows_down
    n_windows = len(centers)
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
    stem = f"umbrella{'2d' if a.psi_windows > 0 else ''}_{a.solvent}"
    path = a.out_dir / f"{stem}.npz"
    np.savez_compressed(
        path,
        centers=centers,
        kappa=a.kappa,
        kT=KB * a.temperature,
        phi=stack("phi"),
        psi=stack("psi"),
        positions=stack("positions"),
        walk=np.array([k for k, walk in enumerate(walks) for _ in walk["windows"]])[order],
        cis_fraction=stack("cis_fraction"),
    )
    n_cis = int((stack("cis_fraction") > 0).sum())
    if n_cis:
        print(
            f"WARNING: {n_cis} windows hold frames with a cis peptide bond: their free energies are not those of "
            "the trans molecule (see the module docstring)",
            flush=True,
        )
    meta = {
        "command": "python systems/alanine_dipeptide/umbrella.py " + shlex.join(cli_args),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "openmm_version": openmm.__version__,
        "bias": "0.5 * kappa * d(phi, phi_k)^2 (+ 0.5 * kappa * d(psi, psi_k)^2 with psi windows), kJ/mol; "
        "d periodic distance; phi = C(ACE)-N-CA-C, psi = N-CA-C-N(NME)",
        "units": {"phi": "rad", "positions": "nm (float32)", "kappa": "kJ/mol/rad^2", "kT": "kJ/mol"},
        "wall_time_s": round(time.perf_counter() - start, 1),
        "walk_wall_s": [round(w["wall_s"], 1) for w in walks],
        "file": path.name,
        "file_bytes": path.stat().st_size,
        **{k: v for k, v in common.items() if k != "centers"},
        "windows": a.windows,
        "psi_windows": a.psi_windows,
        "n_windows": n_windows,
        "seed": a.seed,
        "windows_with_cis_peptide_bond": n_cis,
    }
    (a.out_dir / f"{stem}.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
