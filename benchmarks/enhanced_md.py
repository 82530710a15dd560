"""Flow-enhanced MD of alanine dipeptide (OBC2, 300 K) against plain MD: φ-basin transitions per energy evaluation.

Issue 5, "Must show": flow-enhanced MD crosses between the φ basins at least 100× more often per energy evaluation
than plain MD, with φ-basin populations matching the MD reference within error.

* Enhanced: :class:`bgflow_sci.samplers.FlowEnhancedMD` — cycles of ``--md-steps`` OpenMM Langevin steps
  (``LangevinMiddleIntegrator``, 1 fs, 1/ps, as the reference MD) and ``--proposals`` independent Metropolis moves
  with the trained Boltzmann generator (``bgflow-sci train alanine_dipeptide``) as proposal, accepted with the exact
  OpenMM energy. Starts from the first frame of the reference MD.
* Plain MD: the shipped reference trajectories (``load_reference_data``; one frame per ``interval_ps`` = 1000 steps
  at 1 fs, several independent chains), counted the same way. With no transition there, the rate is reported as
  the one-sided 95% Poisson upper bound (``3 / n_evaluations``) and the ratio as a lower bound.

Frames are labelled by φ basin: 1 = αL/C7ax (``0 <= φ < BASIN_SPLIT``), 0 = the β/C5/αR side (the β basin wraps
past φ = π); ``--buffer`` leaves frames within that many radians of a boundary unlabelled (-1) so that recrossings
of the boundary are not counted. Transitions: changes of the last visited basin
(:func:`bgflow_sci.samplers.count_transitions`). Evaluations: MD steps plus Metropolis energies (the proposals and
the current state once per cycle); flow evaluations (``log q``) are listed apart. The αL/C7ax population has a block
bootstrap error (contiguous blocks of frames resampled, :func:`bgflow_sci.reweighting.bootstrap`) and is compared
with the reference ``delta_f_basin`` of ``data/alanine_dipeptide/reference_obc2.json`` (``F(αL/C7ax) - F(rest)``)
when that exists.

    OMP_NUM_THREADS=1 python benchmarks/enhanced_md.py --model RUN/model.pt --cycles 10000 \\
        [--md-steps 100 --proposals 10 --seed 0 --out benchmarks/results/enhanced_md.json]

Writes the JSON (``--out``), a plot of φ against energy evaluations (enhanced vs plain, ``--plot``) and, with
``--trajectory``, the enhanced frames as DCD.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import chi2

from bgflow_sci.reweighting import bootstrap
from bgflow_sci.samplers import FlowEnhancedMD, count_transitions, write_trajectory
from bgflow_sci.workflows.models import load_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def basin_labels(phi: np.ndarray, split: float, buffer: float = 0.0) -> np.ndarray:
    """1 for αL/C7ax (``0 <= φ < split``), 0 for the rest, -1 within ``buffer`` rad of a boundary (0 or split)."""
    labels = ((phi >= 0) & (phi < split)).astype(np.int64)
    if buffer > 0:
        near = (np.abs(phi) < buffer) | (np.abs(phi - split) < buffer)
        labels[near] = -1
    return labels


def poisson_bounds(n: int, level: float = 0.95) -> tuple[float, float]:
    """One-sided ``level`` lower and upper bounds on a Poisson mean with ``n`` observed events (upper(0) ≈ 3)."""
    lower = 0.5 * chi2.ppf(1 - level, 2 * n) if n > 0 else 0.0
    return float(lower), float(0.5 * chi2.ppf(level, 2 * n + 2))


def basin_population(in_basin: np.ndarray, n_blocks: int, n_bootstrap: int, seed: int) -> dict:
    """Fraction of frames in the basin and ``ΔF = F(basin) - F(rest) = -log(p / (1 - p))`` (kT), with block
    bootstrap errors over ``n_blocks`` contiguous blocks (a last incomplete block is dropped)."""
    n = len(in_basin)
    size = max(n // max(n_blocks, 1), 1)
    blocks = min(n_blocks, n // size)
    counts = torch.as_tensor(in_basin[: blocks * size].reshape(blocks, size).sum(1), dtype=torch.float64)
    p = float(in_basin.mean()) if n else math.nan
    generator = torch.Generator().manual_seed(seed)
    reps = bootstrap(lambda idx: counts[idx].sum(1) / (idx.shape[1] * size), blocks, n_bootstrap, generator)
    p_err = float(reps.std()) if blocks > 1 else math.nan
    df_reps = -torch.log(reps / (1 - reps))
    finite = torch.isfinite(df_reps)
    df = -math.log(p / (1 - p)) if 0 < p < 1 else math.nan
    missing = int((~finite).sum())
    warning = (
        f"{missing} of {len(df_reps)} block replicates have no frame in the basin (dropped): the ΔF error is "
        "unreliable; run more cycles"
        if missing
        else None
    )
    return {
        "fraction": p,
        "fraction_error": p_err,
        "delta_f": df,
        "delta_f_error": float(df_reps[finite].std()) if finite.sum() > 1 else math.nan,
        "frames_in_basin": int(in_basin.sum()),
        "frames": n,
        "blocks": blocks,
        "block_frames": size,
        "bootstrap_replicates_without_basin": missing,
        "warning": warning,
    }


def reference_basin(solvent: str) -> dict | None:
    """``delta_f_basin`` of ``reference_<solvent>.json`` as ``{"value", "error", "fraction", "fraction_error"}``."""
    path = ROOT / "data" / "alanine_dipeptide" / f"reference_{solvent}.json"
    if not path.exists():
        return None
    ref = json.loads(path.read_text()).get("delta_f_basin")
    if ref is None:
        return None
    value = float(ref["value"] if isinstance(ref, dict) else ref)
    error = float(ref.get("error", math.nan)) if isinstance(ref, dict) else math.nan
    p = 1.0 / (1.0 + math.exp(value))
    return {"delta_f": value, "delta_f_error": error, "fraction": p, "fraction_error": p * (1 - p) * error}


def md_steps_per_frame(solvent: str) -> int:
    meta = ROOT / "data" / "alanine_dipeptide" / f"md_{solvent}.json"
    info = json.loads(meta.read_text()) if meta.exists() else {}
    return round(float(info.get("interval_ps", 1.0)) * 1000.0 / float(info.get("timestep_fs", 1.0)))


def _json_ready(obj):
    """NaN/inf -> None (strict JSON), numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def plot(path: Path, enhanced: dict, plain: dict, split: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(9, 5.5), sharey=True)
    for ax, (name, d) in zip(axes, (("flow-enhanced MD", enhanced), ("plain MD (reference)", plain))):
        for c in np.unique(d["chain"]):
            m = d["chain"] == c
            ax.plot(
                d["evaluations"][m],
                d["phi"][m],
                ".",
                ms=1.5,
                label=f"chain {c}" if len(np.unique(d["chain"])) > 1 else None,
            )
        for y in (0.0, split):
            ax.axhline(y, color="k", lw=0.6, ls="--")
        ax.set_title(f"{name}: {d['transitions']} transitions in {d['n_evaluations']:.3g} evaluations", fontsize=10)
        ax.set_ylabel("φ (rad)")
        ax.set_ylim(-math.pi, math.pi)
    axes[-1].set_xlabel("energy/force evaluations (per chain)")
    if axes[1].get_legend_handles_labels()[0]:
        axes[1].legend(markerscale=6, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model.pt written by `bgflow-sci train alanine_dipeptide`")
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--md-steps", type=int, default=100, help="Langevin steps per cycle")
    parser.add_argument("--proposals", type=int, default=10, help="flow proposals per cycle")
    parser.add_argument("--timestep-fs", type=float, default=1.0)
    parser.add_argument("--friction", type=float, default=1.0, help="per ps")
    parser.add_argument("--platform", default="Reference")
    parser.add_argument("--frame-every", type=int, default=None, help="extra frames every that many MD steps")
    parser.add_argument("--buffer", type=float, default=0.0, help="rad around basin boundaries left unlabelled")
    parser.add_argument("--blocks", type=int, default=20, help="blocks for the bootstrap of the population")
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS / "enhanced_md.json"))
    parser.add_argument("--plot", default=None, help="φ-vs-evaluations plot (default: --out with .png)")
    parser.add_argument("--trajectory", default=None, help="write the enhanced frames here (mdtraj: .dcd, .h5)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    module, config, bg = load_model(args.model)
    solvent = config.get("data", {}).get("solvent", "obc2")
    split = float(module.BASIN_SPLIT)
    _, system, _ = module.build_openmm_system(solvent)
    ref = module.load_reference_data(solvent)
    x0 = ref["positions"][0]

    sampler = FlowEnhancedMD(
        system,
        module.TEMPERATURE,
        bg,
        md_steps=args.md_steps,
        proposals_per_cycle=args.proposals,
        timestep_fs=args.timestep_fs,
        friction_per_ps=args.friction,
        platform=args.platform,
        frame_every=args.frame_every,
        seed=args.seed,
    )
    start = time.perf_counter()
    result = sampler.run(args.cycles, x0=x0, progress=not args.no_progress)
    sampler.close()
    seconds = time.perf_counter() - start

    phi_e = module.backbone_dihedrals(result.positions)[0]
    labels_e = basin_labels(phi_e, split, args.buffer)
    n_e = count_transitions(labels_e)
    evals_e = result.n_evaluations

    steps_per_frame = md_steps_per_frame(solvent)
    chain = ref["chain"].astype(np.int64)
    phi_p = module.backbone_dihedrals(ref["positions"])[0]
    labels_p = basin_labels(phi_p, split, args.buffer)
    n_p = count_transitions(labels_p, chain=chain)
    evals_p = len(phi_p) * steps_per_frame
    frame_in_chain = np.concatenate([np.arange((chain == c).sum()) for c in np.unique(chain)])

    rate_e, rate_p = n_e / evals_e, n_p / evals_p
    lower_e, _ = poisson_bounds(n_e)
    _, upper_p = poisson_bounds(n_p)
    ratio = rate_e / rate_p if n_p > 0 else None
    ratio_lower = (lower_e / evals_e) / (upper_p / evals_p)

    pop_e = basin_population(labels_e == 1, args.blocks, args.n_bootstrap, args.seed)
    pop_p = basin_population(basin_labels(phi_p, split) == 1, args.blocks, args.n_bootstrap, args.seed)
    reference = reference_basin(solvent)
    comparison = None
    if reference is not None and math.isfinite(pop_e["delta_f"]):
        diff = pop_e["delta_f"] - reference["delta_f"]
        sigma = math.hypot(pop_e["delta_f_error"], reference["delta_f_error"])
        comparison = {"delta_f_difference": diff, "combined_error": sigma, "z": diff / sigma if sigma > 0 else None}

    out = {
        "benchmark": "flow-enhanced MD vs plain MD, alanine dipeptide",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, threads {args.threads}",
        "command": "python " + " ".join([str(Path(sys.argv[0]))] + sys.argv[1:]),
        "model": str(Path(args.model).resolve()),
        "solvent": solvent,
        "temperature_K": float(module.TEMPERATURE),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "plot", "trajectory", "no_progress")},
        "basins": f"1: 0 <= phi < {split} (alpha_L/C7ax), 0: the rest; buffer {args.buffer} rad unlabelled",
        "seconds": seconds,
        "seconds_per_cycle": seconds / max(args.cycles, 1),
        "enhanced": {
            **result.summary(),
            "transitions": n_e,
            "transitions_per_evaluation": rate_e,
            "transitions_per_evaluation_lower_95": lower_e / evals_e,
            "population_alpha_l": pop_e,
        },
        "plain_md": {
            "source": f"reference MD md_{solvent}.npz ({len(np.unique(chain))} chains, {len(phi_p)} frames, "
            f"{steps_per_frame} steps per frame)",
            "frames": len(phi_p),
            "n_evaluations": evals_p,
            "transitions": n_p,
            "transitions_per_evaluation": rate_p,
            "transitions_per_evaluation_upper_95": upper_p / evals_p,
            "population_alpha_l": pop_p,
        },
        "ratio": ratio,
        "ratio_lower_95": ratio_lower,
        "ratio_note": "ratio is None when plain MD shows no transition; ratio_lower_95 divides the enhanced rate's "
        "95% lower bound by the plain rate's 95% upper bound (Poisson, transitions treated as independent)",
        "reference_basin": reference,
        "population_vs_reference": comparison,
    }
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(_json_ready(out), indent=2, allow_nan=False) + "\n")
    plot_path = Path(args.plot) if args.plot else out_path.with_suffix(".png")
    plot(
        plot_path,
        {
            "phi": phi_e,
            "evaluations": result.evaluations,
            "chain": np.zeros(len(phi_e), dtype=np.int64),
            "transitions": n_e,
            "n_evaluations": evals_e,
        },
        {
            "phi": phi_p,
            "evaluations": (frame_in_chain + 1) * steps_per_frame,
            "chain": chain,
            "transitions": n_p,
            "n_evaluations": evals_p,
        },
        split,
    )
    if args.trajectory:
        write_trajectory(result, module.topology(), args.trajectory)
    keys = ("transitions", "transitions_per_evaluation", "acceptance_rate", "n_evaluations")
    print(
        json.dumps(
            {
                "enhanced": {k: out["enhanced"][k] for k in keys},
                "ratio": ratio,
                "ratio_lower_95": ratio_lower,
                "alpha_l_fraction": pop_e["fraction"],
                "seconds_per_cycle": out["seconds_per_cycle"],
            },
            indent=2,
        )
    )
    print(f"wrote {out_path} and {plot_path}")


if __name__ == "__main__":
    main()
