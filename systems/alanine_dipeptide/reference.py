"""Reference free energies along φ: ``reference_<solvent>.json`` and ``reference_<solvent>.npz``.

    python systems/alanine_dipeptide/reference.py --solvent obc2

The reference ΔF and profile come from MD under a frozen (φ, ψ) bias built by well-tempered metadynamics
(``metadynamics.py``, ``metad_<solvent>.npz``): exact weights ``exp(V/kT)``, block-bootstrap errors within the
independent walkers, the estimate of each walker and the number of basin transitions as checks. Without those data,
umbrella sampling (``umbrella.py``; MBAR over the windows) is used when its data exist, else plain MD (at 300 K it
visits φ > 0 too rarely). The npz holds ``umbrella_frame_log_weights`` (normalised Boltzmann log weights of the
umbrella frames) when umbrella data exist; the metadynamics frame weights come from the bias stored with them.

Plain MD: unweighted frames, so ``F(s) = -log p(s)`` (kT) from :func:`bgflow_sci.reweighting.free_energy_profile` and
``ΔF = F(φ > 0) - F(φ < 0) = -log N(φ > 0) + log N(φ < 0)`` from
:func:`bgflow_sci.reweighting.free_energy_difference` (``log_w=None``).  Consecutive frames (1 ps apart) are
correlated, so the iid bootstrap of those functions underestimates the error; the errors stored here come from a
block bootstrap (Künsch 1989; :func:`bgflow_sci.reweighting.block_bootstrap_sums`): each chain is cut into
contiguous blocks of ``--block-ps``, the blocks are resampled with replacement, and the estimators are recomputed
from the summed per-block counts.  The JSON also lists the ΔF error for a range of block lengths (it should
plateau once blocks are longer than the correlation time) and the iid bootstrap error for comparison.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from umbrella import periodic_bias  # same folder: the bias the windows were run with

from bgflow_sci.reweighting import (
    block_bootstrap,
    block_bootstrap_sums,
    bootstrap_std,
    contiguous_blocks,
    free_energy_difference,
    free_energy_profile,
    mbar_free_energies,
    mbar_log_weights,
)
from bgflow_sci.workflows.systems import load_system

HERE = Path(__file__).resolve().parent


def block_bootstrap_delta_f(positive: np.ndarray, chain: np.ndarray, block: int, n_bootstrap: int, seed: int):
    """Block-bootstrap standard error of ``ΔF = -log N(φ > 0) + log N(φ < 0)``; also the number of blocks."""
    sides = torch.as_tensor(np.stack([~positive, positive], 1), dtype=torch.float64)  # (frames, 2): φ <= 0, φ > 0
    counts = block_bootstrap_sums(sides, chain, block, n_bootstrap, torch.Generator().manual_seed(seed))
    delta = torch.log(counts[:, 0]) - torch.log(counts[:, 1])
    return float(bootstrap_std(delta)), len(contiguous_blocks(chain, block))


def profile_error(replicates: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Standard deviation over bootstrap replicates ``(R, bins)`` of a free-energy profile (defined up to a
    constant), each replicate first shifted onto ``reference`` by its ``exp(-reference)``-weighted mean
    difference over the bins finite in both; bins empty in a replicate drop out (``nan`` if < 2 remain)."""
    replicates, reference = np.asarray(replicates, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):  # replicates may leave a bin empty
        both = np.isfinite(replicates) & np.isfinite(reference)
        p = np.where(both, np.exp(-reference), 0.0)
        shift = (p * np.where(both, replicates - reference, 0.0)).sum(-1, keepdims=True) / p.sum(-1, keepdims=True)
        aligned = np.where(both, replicates - shift, np.nan)
        enough = both.sum(0) >= 2
        return np.where(enough, np.sqrt(np.nanvar(np.where(enough, aligned, 0.0), 0, ddof=1)), np.nan)


def block_bootstrap_profile(index, chain, n_bins, log_width, f_ref, block, n_bootstrap, seed) -> np.ndarray:
    """Block-bootstrap error of the profile (:func:`profile_error` of the replicates); ``index``: bin of each frame."""
    one_hot = torch.nn.functional.one_hot(torch.as_tensor(index), n_bins).double()
    counts = block_bootstrap_sums(one_hot, chain, block, n_bootstrap, torch.Generator().manual_seed(seed))
    return profile_error((torch.as_tensor(log_width) - torch.log(counts)).numpy(), f_ref)


def umbrella_reference(
    ad, solvent: str, bins: int, block_ps: float, n_bootstrap: int, seed: int, two_d: bool = True
) -> dict | None:
    """MBAR over the umbrella windows: ΔF and the φ profile with block-bootstrap errors (blocks of ``block_ps``
    resampled within each window, MBAR re-solved per replicate).

    ``two_d``: the (φ, ψ) grid of ``umbrella2d_<solvent>.npz``, else the φ windows of ``umbrella_<solvent>.npz``.
    MBAR (pymbar, :func:`bgflow_sci.reweighting.mbar_free_energies`) runs on every stored φ/ψ sample: the
    ``(windows, samples)`` matrix of the biases, 8 bytes each (a 60-window 1D run: 90 MB; the 24 × 24 grid of
    ``umbrella.py``: 1 GB). Also returns MBAR's window free energies with their asymptotic errors (which assume
    uncorrelated samples) and the log weights of the stored position frames (``frame_log_weights``, normalised),
    for reweighting or training.
    """
    path = ad.DATA_DIR / f"umbrella{'2d' if two_d else ''}_{solvent}.npz"
    if not path.exists():
        return None
    split = ad.BASIN_SPLIT
    with np.load(path) as f:
        phi_kn, psi_kn, centers = f["phi"].astype(np.float64), f["psi"].astype(np.float64), f["centers"]
        kappa, kt, frames = float(f["kappa"]), float(f["kT"]), f["positions"]
    meta = json.loads(path.with_suffix(".json").read_text())
    n_windows, m = phi_kn.shape
    phi = phi_kn.reshape(-1)
    cv = np.stack([phi, psi_kn.reshape(-1)], 1) if centers.ndim == 2 else phi
    bias = torch.as_tensor(periodic_bias(cv, centers, kappa) / kt)  # (windows, samples), kT
    window = torch.arange(n_windows).repeat_interleave(m)  # window of each sample
    mbar = mbar_free_energies(bias, torch.full((n_windows,), m))
    log_w = mbar_log_weights(bias, torch.full((n_windows,), m), mbar.free_energy)  # unbiased state
    phi_t = torch.as_tensor(phi)
    edges = torch.linspace(-math.pi, math.pi, bins + 1, dtype=torch.float64)
    regions = {
        "sign": (phi_t < 0, phi_t > 0),
        "basin": (~ad.in_alpha_l_basin(phi_t), ad.in_alpha_l_basin(phi_t)),
    }

    def estimates(lw: Tensor, index: Tensor) -> Tensor:
        """ΔF of each region, then the profile, of the samples ``index`` with log weights ``lw``."""
        dfs = [free_energy_difference(lw, a[index], b[index], n_bootstrap=0).value for a, b in regions.values()]
        prof = free_energy_profile(phi_t[index], lw, edges, n_bootstrap=0)
        return torch.cat([torch.tensor(dfs, dtype=torch.float64), prof.free_energy])

    def replicates(idx: Tensor) -> Tensor:
        """MBAR re-solved on each resample (row of ``idx``, windows keep their sample counts), then the estimates."""
        rows = []
        for index in idx:
            u, n_k = bias[:, index], torch.bincount(window[index], minlength=n_windows)
            f_k = mbar_free_energies(u, n_k, initial=mbar.free_energy, compute_uncertainty=False).free_energy
            rows.append(estimates(mbar_log_weights(u, n_k, f_k), index))
        return torch.stack(rows) if rows else torch.zeros((0, len(regions) + bins), dtype=torch.float64)

    full = estimates(log_w, torch.arange(len(phi)))
    dfs, profile = full[: len(regions)].tolist(), full[len(regions) :]
    sample_fs = float(meta["sample_fs"])
    block = max(1, round(block_ps * 1000 / sample_fs))
    gen = torch.Generator().manual_seed(seed)
    reps = block_bootstrap(replicates, window, block, n_bootstrap, gen, within_chains=True)
    rep_df_t, rep_prof = reps[:, : len(regions)], reps[:, len(regions) :]
    prof_err = torch.as_tensor(
        profile_error(rep_prof.numpy(), profile.numpy()) if n_bootstrap else np.full(len(profile), np.nan)
    )
    # log weights of the stored position frames (the frames are every `frame_every`-th φ/ψ sample of a window)
    frame_every = m // frames.shape[1]
    frame_log_w = log_w.reshape(n_windows, m)[:, frame_every - 1 :: frame_every][:, : frames.shape[1]]
    frame_log_w = frame_log_w - torch.logsumexp(frame_log_w.reshape(-1), 0)
    definitions = {
        "sign": "F(phi > 0) - F(phi < 0), kT",
        "basin": f"F(0 <= phi < {split}) - F(rest): the alpha_L / C7ax basin against beta, C5, alpha_R "
        "(the beta basin wraps past phi = pi)",
    }
    grid = (
        f"{meta['windows']} x {meta['psi_windows']} windows on the (phi, psi) torus"
        if centers.ndim == 2
        else (f"{n_windows} windows along phi")
    )
    return {
        "delta_f": {
            name: {"definition": definitions[name], "value": dfs[i], "error": float(rep_df_t[:, i].std())}
            for i, name in enumerate(regions)
        },
        "method": f"umbrella sampling, {grid} (kappa {kappa:g} kJ/mol/rad^2, {m * sample_fs / 1000:g} ps per "
        f"window after {meta['equilibrate_ps']:g} ps equilibration), MBAR (pymbar, through "
        "bgflow_sci.reweighting.mbar_free_energies) on every phi/psi sample; errors: block bootstrap within windows "
        f"({block_ps:g} ps blocks, {n_bootstrap} replicates, MBAR re-solved each)",
        "file": path.name,
        "command": meta["command"],
        "total_ns": n_windows * m * sample_fs / 1e6,
        "population_alpha_l_c7ax": float(torch.exp(-torch.logaddexp(torch.tensor(0.0), torch.tensor(dfs[1])))),
        "window_free_energies": {
            "definition": "f_k - f_0 of the biased windows (kT), MBAR asymptotic errors (uncorrelated samples)",
            "value": mbar.free_energy.tolist(),
            "error": mbar.error.tolist(),
        },
        "frame_every_samples": frame_every,
        "frame_log_weights": frame_log_w.numpy(),
        "profile": {
            "centers": (0.5 * (edges[1:] + edges[:-1])).numpy(),
            "free_energy": profile.numpy(),
            "error": prof_err.numpy(),
            "edges": edges.numpy(),
        },
    }


def metadynamics_reference(
    ad, solvent: str, bins: int, block_ps: float, n_bootstrap: int, seed: int, core: float = 0.3
) -> dict | None:
    """ΔF and the φ profile from MD under a frozen (φ, ψ) bias (``metadynamics.py``): frame weights ``exp(V/kT)``.

    Errors: block bootstrap over contiguous blocks of ``block_ps`` within each walker (blocks resampled with
    replacement across all walkers). Also the estimate of each walker alone (independent bias and chain), and the
    number of transitions between the cores of the two φ regions (``φ < -core`` and ``core <= φ < split - core``),
    which shows whether the frozen-bias chains mix.
    """
    path = ad.DATA_DIR / f"metad_{solvent}.npz"
    if not path.exists():
        return None
    split = ad.BASIN_SPLIT
    with np.load(path) as f:
        phi_wn, bias_wn = f["phi"].astype(np.float64), f["bias"].astype(np.float64)
        kt, sample_fs = float(f["kT"]), float(f["sample_fs"])
    meta = json.loads(path.with_suffix(".json").read_text())
    n_walkers, m = phi_wn.shape
    log_w_wn = bias_wn / kt  # frame weights of the positions: system.metadynamics_frames
    shift = log_w_wn.max()
    edges = np.linspace(-math.pi, math.pi, bins + 1)
    # bins 0..bins-1 of φ for the profile; two extra labels for the ΔF regions are derived from φ directly
    index = np.clip(np.searchsorted(edges, phi_wn, side="right") - 1, 0, bins - 1).reshape(-1)
    chain = np.repeat(np.arange(n_walkers), m)
    weights = np.exp(log_w_wn - shift).reshape(-1)
    phi = phi_wn.reshape(-1)
    region_masks = {
        "sign": (phi > 0).astype(np.int64),
        "basin": ad.in_alpha_l_basin(phi).astype(np.int64),
    }
    block = max(1, round(block_ps * 1000 / sample_fs))
    log_width = np.log(np.diff(edges))

    # summed weights of the φ bins (columns 0..bins-1), then rest/region (0/1) of each ΔF region, per frame
    one_hot = [np.eye(bins)[index]] + [np.eye(2)[v] for v in region_masks.values()]
    weighted = torch.as_tensor(weights[:, None] * np.concatenate(one_hot, 1))

    def from_sums(sums: np.ndarray) -> tuple[list, np.ndarray]:
        """ΔF = F(region) - F(rest) = log S(rest) - log S(region) from summed weights, and the profile."""
        prof_sums = sums[..., :bins]
        regions = [sums[..., bins + 2 * i : bins + 2 * i + 2] for i in range(len(region_masks))]
        with np.errstate(divide="ignore"):
            dfs = [np.log(r[..., 0]) - np.log(r[..., 1]) for r in regions]
            prof = -np.log(prof_sums) + np.log(prof_sums.sum(-1, keepdims=True)) - log_width
        return dfs, prof

    # the frames of complete blocks (a walker's incomplete last block is left out, as in every replicate)
    dfs, profile = from_sums(weighted[contiguous_blocks(chain, block).reshape(-1)].sum(0).numpy())
    dfs = [float(d) for d in dfs]
    profile = profile - profile[np.isfinite(profile)].min()
    reps = block_bootstrap_sums(weighted, chain, block, n_bootstrap, np.random.default_rng(seed))
    with np.errstate(divide="ignore", invalid="ignore"):  # replicates may leave a bin or region empty
        rep_dfs, rep_prof = from_sums(reps.numpy())
    prof_err = profile_error(rep_prof, profile)
    per_walker = [
        {
            name: float(np.log(weights[(chain == k) & (v == 0)].sum()) - np.log(weights[(chain == k) & (v == 1)].sum()))
            for name, v in region_masks.items()
        }
        for k in range(n_walkers)
    ]
    # transitions between the cores of the two regions (with hysteresis), per walker
    transitions = []
    for k in range(n_walkers):
        state = np.where(phi_wn[k] < -core, 0, np.where((phi_wn[k] >= core) & (phi_wn[k] < split - core), 1, -1))
        visited = state[state >= 0]
        transitions.append(int((np.diff(visited) != 0).sum()))
    definitions = {
        "sign": "F(phi > 0) - F(phi < 0), kT",
        "basin": f"F(0 <= phi < {split}) - F(rest): the alpha_L / C7ax basin against beta, C5, alpha_R "
        "(the beta basin wraps past phi = pi)",
    }
    rep = np.stack(rep_dfs, 1)
    kish = weights.sum() ** 2 / (weights**2).sum()
    return {
        "delta_f": {
            name: {"definition": definitions[name], "value": dfs[i], "error": float(rep[:, i].std(ddof=1))}
            for i, name in enumerate(region_masks)
        },
        "method": f"well-tempered metadynamics on (phi, psi) to build a bias (gamma {meta['bias_factor']:g}, "
        f"{meta['build_ns']:g} ns per walker), then {meta['production_ns']:g} ns of MD under the frozen bias per "
        f"walker ({n_walkers} independent walkers), reweighted with exp(V/kT); errors: block bootstrap "
        f"({block_ps:g} ps blocks within walkers, {n_bootstrap} replicates)",
        "file": path.name,
        "command": meta["command"],
        "total_ns": n_walkers * m * sample_fs / 1e6,
        "per_walker": per_walker,
        "transitions_per_walker": transitions,
        "transition_cores": f"phi < -{core} vs {core} <= phi < {split - core}",
        "kish_ess_fraction": float(kish / len(weights)),
        "population_alpha_l_c7ax": float(1.0 / (1.0 + math.exp(dfs[1]))),
        "profile": {
            "centers": 0.5 * (edges[1:] + edges[:-1]),
            "free_energy": profile,
            "error": prof_err,
            "edges": edges,
        },
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solvent", choices=("vacuum", "obc2"), default="obc2")
    parser.add_argument("--bins", type=int, default=60, help="bins of φ over [-π, π)")
    parser.add_argument("--block-ps", type=float, default=1000.0, help="block length of the block bootstrap")
    parser.add_argument("--n-bootstrap", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--umbrella-block-ps", type=float, default=10.0, help="block length within umbrella windows")
    parser.add_argument("--umbrella-bootstrap", type=int, default=100, help="MBAR bootstrap replicates")
    parser.add_argument("--metad-block-ps", type=float, default=500.0, help="block length within metad walkers")
    a = parser.parse_args(argv)

    ad = load_system(HERE)
    data = ad.load_reference_data(a.solvent)
    meta = json.loads(ad.md_file(a.solvent).with_suffix(".json").read_text())
    interval = float(meta["interval_ps"])
    phi, _ = ad.backbone_dihedrals(data["positions"])
    phi_t = torch.as_tensor(phi, dtype=torch.float64)
    chain = data["chain"]
    gen = torch.Generator().manual_seed(a.seed)

    prof = free_energy_profile(phi_t, None, bins=a.bins, range=(-math.pi, math.pi), n_bootstrap=200, generator=gen)
    edges = prof.edges.numpy()
    index = np.clip(np.searchsorted(edges, phi, side="right") - 1, 0, a.bins - 1)
    log_width = np.log(np.diff(edges))
    f_raw = prof.free_energy.numpy()
    block = max(1, round(a.block_ps / interval))
    md_profile_error = block_bootstrap_profile(index, chain, a.bins, log_width, f_raw, block, a.n_bootstrap, a.seed)

    positive = phi > 0
    iid = free_energy_difference(None, ~torch.as_tensor(positive), torch.as_tensor(positive), 200, gen)
    delta_f_error, n_blocks = block_bootstrap_delta_f(positive, chain, block, a.n_bootstrap, a.seed)
    scan = {}
    for ps in (10, 100, 250, 500, 1000, 2500, 5000):
        b = round(ps / interval)
        if len(phi) // b >= 10:
            err, nb = block_bootstrap_delta_f(positive, chain, b, a.n_bootstrap, a.seed)
            scan[str(ps)] = {"n_blocks": nb, "error": err}

    # visits: contiguous runs of phi > 0 frames within a chain; the error estimates mean little with few visits
    starts = positive & ~np.concatenate([[False], positive[:-1] & (chain[1:] == chain[:-1])])
    n_visits = int(starts.sum())
    warning = (
        f"only {n_visits} visit(s) to phi > 0 in {len(phi) * interval / 1000:g} ns: the MD estimate of ΔF and its "
        "error are unreliable (the bootstrap drops replicates without phi > 0 frames); use enhanced sampling"
        if n_visits < 10
        else None
    )
    plain_md = {
        "definition": "F(phi > 0) - F(phi < 0) = -log N(phi>0) + log N(phi<0), kT",
        "value": iid.value,
        "error": delta_f_error,
        "error_method": f"block bootstrap over {n_blocks} contiguous blocks of {block * interval:g} ps, "
        f"{a.n_bootstrap} replicates",
        "iid_bootstrap_error": iid.error,
        "fraction_phi_positive": float(positive.mean()),
        "n_frames_phi_positive": int(positive.sum()),
        "n_visits_phi_positive": n_visits,
        "phi_of_positive_frames_rad": [round(float(v), 3) for v in phi[positive][:20]],
        "warning": warning,
        "block_error_scan_ps": scan,
    }
    metad = metadynamics_reference(ad, a.solvent, a.bins, a.metad_block_ps, a.n_bootstrap, a.seed)
    if metad is None:
        print(f"no metad_{a.solvent}.npz: falling back to umbrella sampling / plain MD", file=sys.stderr)
    umbrella = umbrella_reference(ad, a.solvent, a.bins, a.umbrella_block_ps, a.umbrella_bootstrap, a.seed)
    umbrella_1d = umbrella_reference(
        ad, a.solvent, a.bins, a.umbrella_block_ps, a.umbrella_bootstrap, a.seed, two_d=False
    )
    if umbrella is None:  # no 2D grid: the φ windows
        umbrella, umbrella_1d = umbrella_1d, None
    # the reference: frozen-bias metadynamics when its data exist, else umbrella sampling, else plain MD
    primary = metad or umbrella
    skip = ("profile", "delta_f", "frame_log_weights")
    result = {
        "solvent": a.solvent,
        "temperature_K": meta["temperature_K"],
        "md": {
            "file": meta["file"],
            "frames": int(len(phi)),
            "interval_ps": interval,
            "total_ns": len(phi) * interval / 1000,
            "chains": int(len(np.unique(chain))),
            "command": meta["command"],
        },
        "delta_f": dict(primary["delta_f"]["sign"], method=primary["method"]) if primary else plain_md,
        "delta_f_basin": primary["delta_f"]["basin"] if primary else None,
        "delta_f_plain_md": plain_md,
        "metadynamics": {k: v for k, v in metad.items() if k not in skip} if metad else None,
        "umbrella": {k: v for k, v in umbrella.items() if k not in skip} | {"delta_f": umbrella["delta_f"]}
        if umbrella
        else None,
        # cross-check: the 1D φ windows (ψ free; hidden ψ barriers at φ > 0 may bias the αL/C7ax population)
        "umbrella_1d_cross_check": {k: v for k, v in umbrella_1d.items() if k not in skip}
        | {"delta_f": umbrella_1d["delta_f"]}
        if umbrella_1d
        else None,
        "profile": {
            "file": f"reference_{a.solvent}.npz",
            "cv": "phi (rad), C(ACE)-N-CA-C",
            "bins": a.bins,
            "range": [-math.pi, math.pi],
            "definition": "F = -log p(phi), kT, minimum 0; keys free_energy/error (the reference method: "
            "frozen-bias metadynamics, else umbrella + MBAR, else MD), umbrella_free_energy/umbrella_error "
            "(umbrella + MBAR) and md_free_energy/md_error (plain MD)",
            "error_method": f"block bootstrap ({block * interval:g} ps blocks), replicates aligned by "
            "the probability-weighted constant shift",
        },
        "computed_by": "python systems/alanine_dipeptide/reference.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
    }
    ad.DATA_DIR.joinpath(f"reference_{a.solvent}.json").write_text(json.dumps(result, indent=2) + "\n")
    main_profile = primary["profile"] if primary else {"free_energy": f_raw, "error": md_profile_error}
    np.savez(
        ad.DATA_DIR / f"reference_{a.solvent}.npz",
        centers=prof.centers.numpy(),
        edges=edges,
        free_energy=main_profile["free_energy"],
        error=main_profile["error"],
        **(
            {"umbrella_free_energy": umbrella["profile"]["free_energy"], "umbrella_error": umbrella["profile"]["error"]}
            if umbrella
            else {}
        ),
        md_free_energy=f_raw,
        md_error=md_profile_error,
        md_iid_error=prof.error.numpy(),
        md_counts=prof.counts.numpy(),
        **({"umbrella_frame_log_weights": umbrella["frame_log_weights"]} if umbrella else {}),
    )
    print(json.dumps({k: result[k] for k in ("delta_f", "delta_f_basin")}, indent=2))
    return result


if __name__ == "__main__":
    main()
