"""Alanine dipeptide (OBC2 implicit solvent, 300 K) Boltzmann generator, end to end.

Internal coordinates + circular spline couplings (``bgflow_sci.molecular``), maximum likelihood on the
reference MD frames, then reverse KL against the batched torch force field compiled from the OpenMM
system, then importance reweighting with the exact energy. Outputs into ``--out``: ``results.json`` (ESS,
held-out NLL, ΔF(φ>0 vs φ<0) reweighted vs MD), ``ramachandran.png`` (MD, flow, reweighted flow),
``free_energy_phi.png``, ``training.png``, ``samples.dcd`` (mdtraj, DCD) with the log weights ``weights.npy`` beside it.

    python benchmarks/alanine_dipeptide_bg.py [--ml-steps 6000] [--kl-steps 2000] [--out benchmarks/results/ala2]
    python benchmarks/alanine_dipeptide_bg.py --data data/alanine_dipeptide/partial_obc2_chain*.npz  # other frames
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bgflow_sci import reweighting as rw  # noqa: E402
from bgflow_sci.energies import TorchForceField  # noqa: E402
from bgflow_sci.molecular import molecular_boltzmann_generator  # noqa: E402
from bgflow_sci.plotting import plot_free_energy_profiles, plot_metrics  # noqa: E402
from bgflow_sci.systems import load_system  # noqa: E402
from bgflow_sci.training import ml_then_kl  # noqa: E402


def load_positions(system, paths: list[str] | None) -> np.ndarray:
    if not paths:
        return system.load_reference_data("obc2")["positions"]
    return np.concatenate([np.load(p)["positions"] for p in paths])


def ramachandran(panels: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]], path: Path) -> None:
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), squeeze=False)
    bins = np.linspace(-np.pi, np.pi, 61)
    for ax, (name, (phi, psi, w)) in zip(axes[0], panels.items()):
        h, _, _ = np.histogram2d(phi, psi, bins=bins, weights=w, density=True)
        f = -np.log(h.T)
        ax.imshow(
            f - np.nanmin(f[np.isfinite(f)]),
            extent=(-np.pi, np.pi, -np.pi, np.pi),
            origin="lower",
            vmax=8,
            cmap="viridis",
        )
        ax.set(title=name, xlabel="φ", ylabel="ψ")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="*", help="npz files with 'positions' (default: the shipped MD data)")
    parser.add_argument("--ml-steps", type=int, default=6000)
    parser.add_argument("--kl-steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/ala2")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    t0 = time.time()

    system = load_system("alanine_dipeptide")
    topology, omm_system, _ = system.build_openmm_system("obc2")
    target = TorchForceField.from_openmm(omm_system, system.TEMPERATURE)
    positions = load_positions(system, args.data)
    n = len(positions)
    x_all = torch.as_tensor(positions.reshape(n, -1), dtype=torch.float32)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    n_test = max(1, n // 10)
    x_train, x_test = x_all[perm[n_test:]], x_all[perm[:n_test]]

    mdtop = system.topology()
    bg = molecular_boltzmann_generator(mdtop, target, x_train, n_layers=args.layers, hidden=(128, 128))
    trainer = ml_then_kl(
        bg,
        x_train,
        args.ml_steps,
        args.kl_steps,
        batch_size=args.batch,
        ml_anchor=0.5,
        energy_cutoff=100.0,
        lr=5e-4,
        log_path=out / "metrics.jsonl",
        seed=args.seed,
        progress=not args.no_progress,
        checkpoint_path=out / "checkpoint.pt",
        checkpoint_every=1000,
    )
    trainer.train(args.ml_steps + args.kl_steps)
    train_seconds = time.time() - t0

    bg.eval()
    with torch.no_grad():
        nll = float(-bg.log_prob(x_test).mean())
    x, log_w = bg.sample(args.samples, batch_size=10_000)
    ess = rw.ess(log_w)
    xs = x.numpy().reshape(-1, 22, 3)
    phi, psi = system.backbone_dihedrals(xs)
    phi_md, psi_md = system.backbone_dihedrals(positions)
    phi_t, lw = torch.as_tensor(phi, dtype=torch.float64), log_w.double()
    df_bg = rw.free_energy_difference(lw, phi_t < 0, phi_t > 0)
    phi_md_t = torch.as_tensor(phi_md, dtype=torch.float64)
    df_md = rw.free_energy_difference(None, phi_md_t < 0, phi_md_t > 0)
    try:
        ref = system.load_reference_free_energy("obc2")
        df_ref, df_ref_err = ref["delta_f"]["value"], ref["delta_f"]["error"]
    except Exception:  # noqa: BLE001 (reference not generated yet: fall back to the training frames)
        df_ref, df_ref_err = df_md.value, df_md.error

    edges = torch.linspace(-math.pi, math.pi, 37, dtype=torch.float64)
    plot_free_energy_profiles(
        {
            "MD": rw.free_energy_profile(phi_md_t, None, edges),
            "BG reweighted": rw.free_energy_profile(phi_t, lw, edges),
        },
        out / "free_energy_phi.png",
        xlabel="φ (rad)",
    )
    w = rw.normalized_weights(lw).numpy()
    ramachandran(
        {"MD": (phi_md, psi_md, None), "flow": (phi, psi, None), "flow reweighted": (phi, psi, w)},
        out / "ramachandran.png",
    )
    plot_metrics(trainer.history, out / "training.png")
    import mdtraj

    mdtraj.Trajectory(xs.astype(np.float32), mdtop).save_dcd(str(out / "samples.dcd"))
    np.save(out / "weights.npy", log_w.numpy())

    results = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "frames": n,
        "ml_steps": args.ml_steps,
        "kl_steps": args.kl_steps,
        "train_seconds": train_seconds,
        "ess": ess,
        "heldout_nll": nll,
        "n_invalid": int((~torch.isfinite(log_w)).sum()),
        "delta_f_bg": df_bg.value,
        "delta_f_bg_error": df_bg.error,
        "delta_f_md_training_frames": df_md.value,
        "delta_f_md_training_frames_iid_error": df_md.error,
        "delta_f_reference": df_ref,
        "delta_f_reference_error": df_ref_err,
        "abs_error_vs_reference": abs(df_bg.value - df_ref),
        "skipped_steps": trainer.n_skipped,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
