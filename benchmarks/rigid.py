"""Rigid-body flows on ice XI (TIP4P-Ew): rigid MD at several temperatures, an MBAR reference for ``f(100 K) -
f(250 K)``, and a flow trained by reverse KL that maps 250 K samples to 100 K (learned free-energy perturbation).

Stages (each reuses what the previous run left in ``--out``; MD is resumable through ``run_md``):

* ``md``: rigid-water Langevin MD (OpenMM, 2 fs, friction 1/ps, NVT in the fixed box) at ``--temperatures``
  (default: 8 geometric steps from 100 K to 250 K), frames every ``--frame-ps``; 250 K runs ``--ns-high`` ns (the
  flow's training and test data), the others ``--ns`` ns.
* ``mbar``: every frame re-evaluated with the one energy the flow also uses (``IceXI.energy``, OpenMM CPU platform)
  and pymbar's MBAR over all temperatures -> ``Δf = f(100 K) - f(250 K)`` (reduced, per molecule) with its error.
* ``flow``: ``bgflow_sci.flows.rigid_body_flow`` trained by reverse KL on 250 K frames (the first ``--train-frames``
  for training, at most half of them; every later frame for the test), ``log w = u_250(x) + log|J| - u_100(f(x))``;
  ESS and ``Δf = -log mean w`` on the test frames with bootstrap and block-bootstrap errors; ``--seeds``
  independent trainings.  Results: ``mbar.json``, ``flow_*/result.json``, ``flow.json`` (all seeds, worst seed).

    python benchmarks/rigid.py --stage md mbar flow --molecules 16
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CELLS = {16: (2, 1, 1), 128: (4, 2, 2)}


def temperatures(low: float, high: float, n: int) -> list[float]:
    return [round(float(t), 3) for t in np.geomspace(low, high, n)]


def md_folder(out: Path, temperature: float, replicas: int = 1) -> Path:
    """``md_250.000K`` for one chain; ``md_250.000K_x8`` for 8 independent chains."""
    return out / (f"md_{temperature:.3f}K" + (f"_x{replicas}" if replicas > 1 else ""))


def high_replicas(args, temperature: float) -> int:
    return args.high_replicas if abs(temperature - args.high) < 1e-6 else 1


def stage_md(ice, args, out: Path) -> None:
    from bgflow_sci.workflows.md import run_md

    chosen = args.temperatures if args.only is None else [t for t in args.temperatures if round(t) in args.only]
    for t in sorted(chosen, reverse=True):
        ns = args.ns_high if abs(t - args.high) < 1e-6 else args.ns
        replicas = high_replicas(args, t)
        run_md(
            ice.system,
            ice.positions,
            t,
            md_folder(out, t, replicas),
            ns=ns,
            replicas=replicas,
            frame_ps=args.frame_ps,
            timestep_fs=2.0,
            friction_per_ps=1.0,
            equilibration_ps=20.0,
            seed=args.md_seed,
            topology=ice.topology,
            threads=args.threads,
            platform="CPU",
        )


def load_states(ice, folder: Path):
    """Rigid-body states ``(frames, 7 n)`` float64 of the MD in ``folder`` and each frame's replica ``(frames,)``."""
    from bgflow_sci.energies.ice import rigid_state_from_atoms
    from bgflow_sci.workflows.md import read_md

    md = read_md(folder)
    return rigid_state_from_atoms(ice, md["positions"]), md["replica"]


def ordered_frames(ice, states, replica, max_angle: float | None) -> np.ndarray:
    """Mask ``(frames,)`` of the frames of each chain before its first orientational defect: the first frame with
    a molecule turned more than ``max_angle`` rad from its lattice orientation (up to the water's C2) and every
    later frame of that chain are dropped.  The ordered crystal is metastable at 250 K (TIP4P-Ew ice XI
    disorders), so the thermodynamic state of the benchmark is the ordered basin; None keeps every frame."""
    if max_angle is None:
        return np.ones(len(states), dtype=bool)
    n = ice.n_molecules
    worst = ice.molecule.orientation_angles(states[:, 3 * n :], ice.state[0, 3 * n :]).amax(1).numpy()
    keep = np.zeros(len(states), dtype=bool)
    for r in np.unique(replica):
        idx = np.flatnonzero(replica == r)
        bad = np.flatnonzero(worst[idx] > max_angle)
        keep[idx[: bad[0] if len(bad) else len(idx)]] = True
    return keep


def potential_kj(ice, states, batch: int = 512):
    """Potential energies ``(frames,)`` kJ/mol by ``IceXI.energy`` (OpenMM CPU platform)."""
    import torch

    energy = ice.energy(300.0)
    with torch.no_grad():
        u = torch.cat([energy.energy(states[i : i + batch]) for i in range(0, len(states), batch)])
    return (u * energy.atom_energy.kt).numpy()


def stage_mbar(ice, args, out: Path) -> dict:
    """MBAR over the temperatures on decorrelated frames; returns ``{"delta_f_per_molecule", "error", ...}``."""
    import torch
    from pymbar import timeseries

    from bgflow_sci.energies.openmm import MOLAR_GAS_CONSTANT
    from bgflow_sci.reweighting import mbar_free_energies

    temps = sorted(args.temperatures)
    energies, counts, inefficiency = [], [], {}
    kept = {}
    for t in temps:
        states, u, replica = md_data(ice, t, out, high_replicas(args, t), kj=True)
        ordered = ordered_frames(ice, states, replica, args.max_angle)
        kept[t] = float(ordered.mean())
        picked, gs = [], []
        for r in np.unique(replica):  # decorrelate each chain on its own
            u_r = u[(replica == r) & ordered]
            if len(u_r) < 10:
                continue
            g = timeseries.statistical_inefficiency(u_r)
            picked.append(u_r[timeseries.subsample_correlated_data(u_r, g=g)])
            gs.append(float(g))
        inefficiency[t] = float(np.mean(gs))
        energies.append(np.concatenate(picked))
        counts.append(len(energies[-1]))
    pooled = np.concatenate(energies)
    beta = np.array([1.0 / (MOLAR_GAS_CONSTANT * t) for t in temps])
    u_kn = torch.as_tensor(beta[:, None] * pooled[None, :])
    # thermodynamic integration d f / d beta = <U>: a cross-check and MBAR's starting point (from f = 0 its first
    # iterations overflow: the reduced energies differ by hundreds of kT between the states)
    mean_u = np.array([e.mean() for e in energies])
    ti = np.concatenate([[0.0], np.cumsum(0.5 * (mean_u[1:] + mean_u[:-1]) * np.diff(beta))])
    result = mbar_free_energies(u_kn, torch.as_tensor(counts), initial=torch.as_tensor(ti))
    n = ice.n_molecules
    record = {
        "temperatures_k": temps,
        "samples_per_temperature": counts,
        "statistical_inefficiency": inefficiency,
        "ordered_fraction": kept,
        "max_angle_rad": args.max_angle,
        "high_replicas": args.high_replicas,
        "delta_f_total": float(-result.free_energy[-1]),
        "delta_f_total_error": float(result.error[-1]),
        "delta_f_per_molecule": float(-result.free_energy[-1] / n),
        "delta_f_per_molecule_error": float(result.error[-1] / n),
        "ti_delta_f_per_molecule": float(-ti[-1] / n),
        "definition": "f(low T) - f(high T), reduced (kT of each state), configurational, per molecule",
    }
    (out / mbar_name(args)).write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))
    return record


def mbar_name(args) -> str:
    """``mbar.json``; ``mbar_x8_ord1.2.json`` for 8 chains at the high temperature cut at their first defect."""
    suffix = (f"_x{args.high_replicas}" if args.high_replicas > 1 else "") + (
        f"_ord{args.max_angle:g}" if args.max_angle is not None else ""
    )
    return f"mbar{suffix}.json"


def md_data(ice, temperature: float, out: Path, replicas: int = 1, kj: bool = False):
    """States ``(frames, 7 n)`` of the MD at ``temperature``, their energies (reduced, a tensor; or kJ/mol, an
    array, with ``kj``; cached in the MD folder) and replica ids ``(frames,)``."""
    import torch

    from bgflow_sci.energies.openmm import MOLAR_GAS_CONSTANT

    folder = md_folder(out, temperature, replicas)
    states, replica = load_states(ice, folder)
    cache = folder / "rigid_potential_kjmol.npy"
    if cache.is_file() and len(np.load(cache)) == len(states):
        u = np.load(cache)
    else:
        u = potential_kj(ice, states)
        np.save(cache, u)
    if kj:
        return states, u, replica
    return states, torch.as_tensor(u / (MOLAR_GAS_CONSTANT * temperature)), replica


def fep_summary(log_w, n_molecules: int, block_length: int = 100) -> dict:
    """ESS and ``Δf = -log mean w`` per molecule; errors by the plain bootstrap and by the block bootstrap over
    contiguous blocks of ``block_length`` frames (the test frames are one MD chain: 100 frames = 40 ps, several
    times the 250 K energy's correlation time)."""
    import torch

    from bgflow_sci.reweighting import ess, log_z
    from bgflow_sci.reweighting.bootstrap import block_bootstrap, bootstrap_std

    est = log_z(log_w, n_bootstrap=500, generator=torch.Generator().manual_seed(0))
    lw = log_w.detach().double()
    reps = block_bootstrap(
        lambda idx: torch.logsumexp(lw[idx], dim=-1) - np.log(idx.shape[1]),
        torch.zeros(len(lw), dtype=torch.long),
        block_length,
        500,
        generator=torch.Generator().manual_seed(1),
    )
    return {
        "ess": ess(log_w),
        "delta_f_per_molecule": -est.value / n_molecules,
        "delta_f_per_molecule_error": est.error / n_molecules,
        "delta_f_per_molecule_block_error": float(bootstrap_std(reps)) / n_molecules,
        "n_test": int(len(log_w)),
    }


def weights_in_chunks(loss, states, energies, chunk: int = 256):
    """``loss.log_weights`` over ``states`` in chunks (no gradient)."""
    import torch

    return torch.cat(
        [loss.log_weights(states[i : i + chunk], energies[i : i + chunk]) for i in range(0, len(states), chunk)]
    )


def stage_flow(ice, args, out: Path) -> list[dict]:
    import torch

    from bgflow_sci.flows import Inverse
    from bgflow_sci.flows.rigid import rigid_body_flow
    from bgflow_sci.reweighting import ess
    from bgflow_sci.training import FreeEnergyPerturbation, Trainer

    n = ice.n_molecules
    states, u_high, replica = md_data(ice, args.high, out, args.high_replicas)
    ordered = ordered_frames(ice, states, replica, args.max_angle)
    if args.max_angle is not None:
        print(f"frames before each chain's first defect (> {args.max_angle} rad): {ordered.sum()} of {len(ordered)}")
    states, u_high, replica = states[ordered], u_high[torch.as_tensor(ordered)], replica[ordered]
    if args.high_replicas > 1:  # whole chains for training; validation and test from the other chains
        in_train = replica < args.high_replicas // 2
        index = np.concatenate([np.flatnonzero(in_train)[: args.train_frames], np.flatnonzero(~in_train)])
        states, u_high = states[index], u_high[torch.as_tensor(index)]
        half = min(args.train_frames, int(in_train.sum()))
    else:  # one chain: training frames first, then validation, then test
        half = min(args.train_frames, len(states) // 2)
    end_val = half + args.validation_frames
    train, u_train = states[:half], u_high[:half]
    val, u_val = states[half:end_val], u_high[half:end_val]
    test, u_test = states[end_val:], u_high[end_val:]
    if args.augment:  # every lattice translation of every training frame (exact images: same atoms, same energy)
        from bgflow_sci.energies import CrystalSymmetry

        symmetry = CrystalSymmetry.find(ice.state, ice.box, ice.molecule)
        train, u_train = symmetry.augment(train), u_train.repeat(len(symmetry))
        print(f"training frames x {len(symmetry)} lattice translations = {len(train)}")
    # low-temperature MD: the first half trains the reverse term (--bidirectional), the second half gives the
    # reverse weights of the test (and with the forward test weights, BAR)
    low_states, u_low, _ = md_data(ice, args.low, out) if md_folder(out, args.low).is_dir() else (None,) * 3
    low_half = 0 if low_states is None else len(low_states) // 2
    torch.set_num_threads(args.threads)
    props = {"Threads": str(args.threads)}
    target = ice.energy(args.low, platform_properties=props)
    source = ice.energy(args.high, platform_properties=props)
    centres = ice.state[0, : 3 * n].reshape(n, 3)
    records = []
    with torch.no_grad():  # plain FEP (the identity map), for comparison
        chunks = range(0, len(test), 512)
        baseline = fep_summary(torch.cat([u_test[i : i + 512] - target.energy(test[i : i + 512]) for i in chunks]), n)
    for seed in args.seeds:
        tag = f"steps{args.steps}_lr{args.lr:g}_train{half}_val{len(val)}_blocks{args.blocks}_batch{args.batch}"
        if args.bidirectional:
            tag += f"_bi{args.bidirectional:g}"
        if args.augment:
            tag += "_aug"
        if args.high_replicas > 1:
            tag += f"_x{args.high_replicas}"
        if args.max_angle is not None:
            tag += f"_ord{args.max_angle:g}"
        if tuple(args.hidden) != (128, 128):
            tag += "_h" + "x".join(map(str, args.hidden))
        run = out / f"flow_{tag}_seed{seed}"
        done = run / "result.json"
        if done.is_file() and json.loads(done.read_text())["steps"] == args.steps:
            records.append(json.loads(done.read_text()))
            continue
        torch.manual_seed(seed)
        flow = rigid_body_flow(
            ice.box, centres, n_blocks=args.blocks, n_bins=args.bins, n_maps=args.maps, hidden=tuple(args.hidden)
        ).double()
        loss = FreeEnergyPerturbation(flow, target, train, source_energy=u_train, batch_size=args.batch)
        losses, weights = {"fep": loss}, {"fep": 1.0}
        # the reverse direction: 100 K frames mapped back to 250 K (mass-covering for the 100 K state)
        reverse = None
        if low_states is not None:
            reverse = FreeEnergyPerturbation(
                Inverse(flow), source, low_states[:low_half], source_energy=u_low[:low_half], batch_size=args.batch
            )
            if args.bidirectional:
                losses["reverse_fep"], weights["reverse_fep"] = reverse, float(args.bidirectional)
        trainer = Trainer(
            flow,
            losses,
            weights,
            lr=args.lr,
            schedule="cosine",
            total_steps=args.steps,
            warmup_steps=50,
            log_path=run / "metrics.jsonl",
            checkpoint_path=run / "checkpoint.pt",
            checkpoint_every=100,
            seed=seed,
            config={"seed": seed, "steps": args.steps},
        )
        if (run / "checkpoint.pt").is_file():
            trainer.load_checkpoint(run / "checkpoint.pt")
        start = time.perf_counter()
        best_path = run / "best_model.pt"
        best = json.loads((run / "best.json").read_text()) if (run / "best.json").is_file() else {"ess": -1.0}
        while trainer.step < args.steps:  # early stopping on the validation frames' ESS (none: train to the end)
            trainer.train(
                min(args.validate_every, args.steps - trainer.step) if len(val) else args.steps - trainer.step
            )
            if len(val):
                flow.eval()
                val_ess = ess(weights_in_chunks(loss, val, u_val))
                flow.train()
                if val_ess > best["ess"]:
                    best = {"ess": val_ess, "step": trainer.step}
                    torch.save(flow.state_dict(), best_path)
                    (run / "best.json").write_text(json.dumps(best))
        if best_path.is_file():
            flow.load_state_dict(torch.load(best_path, weights_only=True))
        flow.eval()
        log_w = weights_in_chunks(loss, test, u_test)
        record = {"seed": seed, "steps": args.steps, "train_s": time.perf_counter() - start, **fep_summary(log_w, n)}
        record.update(best_step=best.get("step"), validation_ess=best["ess"] if "step" in best else None)
        np.save(run / "test_log_weights.npy", log_w.numpy())
        if reverse is not None:
            log_w_rev = weights_in_chunks(reverse, low_states[low_half:], u_low[low_half:])
            np.save(run / "test_reverse_log_weights.npy", log_w_rev.numpy())
            record.update(
                reverse_ess=ess(log_w_rev),
                reverse_delta_f_per_molecule=float(torch.logsumexp(log_w_rev.double(), 0) - np.log(len(log_w_rev))) / n,
                **bar_summary(log_w, log_w_rev, n),
                n_test_reverse=len(log_w_rev),
            )
        done.write_text(json.dumps(record, indent=2))
        print(json.dumps(record))
        records.append(record)
    result = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "date": datetime.date.today().isoformat(),
        "molecules": n,
        "temperatures_k": [args.high, args.low],
        "train_frames": int(half),
        "augmented_train_frames": int(len(train)),
        "test_frames": int(len(test)),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "stage", "temperatures")},
        "identity_fep": baseline,
        "flows": records,
        "worst_seed": min(records, key=lambda r: r["ess"]) if records else None,
    }
    mbar = out / mbar_name(args)
    if mbar.is_file():
        result["mbar"] = json.loads(mbar.read_text())
    if len(records) == len(args.seeds):
        (out / mbar_name(args).replace("mbar", "flow")).write_text(json.dumps(result, indent=2))
    return records


def bar_summary(log_w, log_w_rev, n_molecules: int, block_length: int = 100) -> dict:
    """BAR ``Δf`` per molecule from the forward (test) and reverse weights, with its asymptotic error and a block
    bootstrap over both chains (blocks of ``block_length`` frames, resampled within each chain)."""
    import torch

    from bgflow_sci.reweighting import bar_free_energy
    from bgflow_sci.reweighting.bootstrap import block_bootstrap, bootstrap_std

    est = bar_free_energy(log_w, log_w_rev)
    both = torch.cat([log_w, log_w_rev])
    chain = torch.cat([torch.zeros(len(log_w), dtype=torch.long), torch.ones(len(log_w_rev), dtype=torch.long)])

    def replicate(index):
        picked = chain[index]
        return bar_free_energy(both[index[picked == 0]], both[index[picked == 1]]).value

    reps = block_bootstrap(
        lambda idx: torch.tensor([replicate(row) for row in idx]),
        chain,
        block_length,
        100,
        torch.Generator().manual_seed(2),
        within_chains=True,
    )
    return {
        "bar_delta_f_per_molecule": est.value / n_molecules,
        "bar_delta_f_per_molecule_error": est.error / n_molecules,
        "bar_delta_f_per_molecule_block_error": float(bootstrap_std(reps)) / n_molecules,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", nargs="+", default=["md", "mbar", "flow"], choices=["md", "mbar", "flow"])
    parser.add_argument("--molecules", type=int, default=16, choices=sorted(CELLS))
    parser.add_argument("--low", type=float, default=100.0)
    parser.add_argument("--high", type=float, default=250.0)
    parser.add_argument("--n-temperatures", type=int, default=8)
    parser.add_argument("--ns", type=float, default=0.4)
    parser.add_argument("--ns-high", type=float, default=1.0)
    parser.add_argument("--frame-ps", type=float, default=0.4)
    parser.add_argument("--md-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads in all (md: shared by the replicas)")
    parser.add_argument(
        "--high-replicas", type=int, default=1, help="independent chains at --high (flow: half train, half test)"
    )
    parser.add_argument(
        "--max-angle",
        type=float,
        default=None,
        help="rad: cut each chain at its first frame with a molecule this far from its lattice orientation",
    )
    parser.add_argument("--only", type=int, nargs="+", default=None, help="md stage: these temperatures (K, rounded)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-frames", type=int, default=3125, help="the first frames at --high (at most half)")
    parser.add_argument("--validation-frames", type=int, default=1000, help="the next frames, for early stopping")
    parser.add_argument("--validate-every", type=int, default=50)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--bins", type=int, default=8)
    parser.add_argument("--maps", type=int, default=3)
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 128])
    parser.add_argument(
        "--bidirectional",
        type=float,
        default=0.0,
        help="weight of the reverse term (the first half of the --low MD mapped back to --high); 0: reverse KL only",
    )
    parser.add_argument(
        "--augment",
        action="store_true",
        help="train on every lattice translation of the training frames (CrystalSymmetry: exact relabellings)",
    )
    args = parser.parse_args()
    args.temperatures = temperatures(args.low, args.high, args.n_temperatures)
    out = args.out or ROOT / "benchmarks" / "results" / "rigid" / f"ice{args.molecules}"
    out.mkdir(parents=True, exist_ok=True)
    from bgflow_sci.energies.ice import tip4p_ew_ice

    ice = tip4p_ew_ice(CELLS[args.molecules])
    if "md" in args.stage:
        stage_md(ice, args, out)
    if "mbar" in args.stage:
        stage_mbar(ice, args, out)
    if "flow" in args.stage:
        stage_flow(ice, args, out)


if __name__ == "__main__":
    main()
