"""Reference free energies along φ from the MD data: ``reference_<solvent>.json`` and ``reference_<solvent>.npz``.

    python systems/alanine_dipeptide/reference.py --solvent obc2

Unweighted MD frames, so ``F(s) = -log p(s)`` (kT) from :func:`bgflow_sci.reweighting.free_energy_profile` and
``ΔF = F(φ > 0) - F(φ < 0) = -log N(φ > 0) + log N(φ < 0)`` from
:func:`bgflow_sci.reweighting.free_energy_difference` (``log_w=None``).  Consecutive frames (1 ps apart) are
correlated, so the iid bootstrap of those functions underestimates the error; the errors stored here come from a
block bootstrap (Künsch 1989): each chain is cut into contiguous blocks of ``--block-ps``, the blocks are resampled
with replacement, and the estimators are recomputed from the summed per-block counts.  The JSON also lists the
ΔF error for a range of block lengths (it should plateau once blocks are longer than the correlation time) and
the iid bootstrap error for comparison.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from bgflow_sci.reweighting import bootstrap, bootstrap_std, free_energy_difference, free_energy_profile
from bgflow_sci.systems import load_system

HERE = Path(__file__).resolve().parent


def block_counts(index: np.ndarray, chain: np.ndarray, n_bins: int, block: int) -> np.ndarray:
    """Counts ``(n_blocks, n_bins)`` of ``index`` (bin of each frame) in contiguous blocks of ``block`` frames
    within each chain (a chain's incomplete last block is dropped)."""
    rows = []
    for c in np.unique(chain):
        idx = index[chain == c]
        n_blocks = len(idx) // block
        if n_blocks:
            blocks = idx[: n_blocks * block].reshape(n_blocks, block)
            rows.append(np.stack([np.bincount(b, minlength=n_bins) for b in blocks]))
    return np.concatenate(rows) if rows else np.zeros((0, n_bins), dtype=np.int64)


def block_bootstrap_delta_f(positive: np.ndarray, chain: np.ndarray, block: int, n_bootstrap: int, seed: int):
    """Block-bootstrap standard error of ``ΔF = -log N(φ > 0) + log N(φ < 0)``; also the number of blocks."""
    counts = torch.as_tensor(block_counts(positive.astype(np.int64), chain, 2, block), dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    reps = bootstrap(lambda r: counts[r].sum(1), len(counts), n_bootstrap, gen)
    delta = torch.log(reps[:, 0]) - torch.log(reps[:, 1])
    return float(bootstrap_std(delta)), len(counts)


def block_bootstrap_profile(index, chain, n_bins, log_width, f_ref, block, n_bootstrap, seed) -> np.ndarray:
    """Block-bootstrap error of the profile; replicates aligned to ``f_ref`` by the probability-weighted shift."""
    counts = torch.as_tensor(block_counts(index, chain, n_bins, block), dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    f_ref = torch.as_tensor(f_ref)
    populated = torch.isfinite(f_ref)
    p = torch.where(populated, torch.exp(-f_ref), torch.zeros_like(f_ref))
    p = p / p.sum()

    def aligned(r):
        f_rep = torch.as_tensor(log_width) - torch.log(counts[r].sum(1))
        both = torch.isfinite(f_rep) & populated
        pw = torch.where(both, p.expand_as(f_rep), torch.zeros_like(f_rep))
        diff = torch.where(both, f_rep - f_ref, torch.zeros_like(f_rep))
        return f_rep - (pw * diff).sum(-1, keepdim=True) / pw.sum(-1, keepdim=True)

    return bootstrap_std(bootstrap(aligned, len(counts), n_bootstrap, gen)).numpy()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solvent", choices=("vacuum", "obc2"), default="obc2")
    parser.add_argument("--bins", type=int, default=60, help="bins of φ over [-π, π)")
    parser.add_argument("--block-ps", type=float, default=1000.0, help="block length of the block bootstrap")
    parser.add_argument("--n-bootstrap", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
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
    profile_error = block_bootstrap_profile(index, chain, a.bins, log_width, f_raw, block, a.n_bootstrap, a.seed)

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
        "delta_f": {
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
        },
        "profile": {
            "file": f"reference_{a.solvent}.npz",
            "cv": "phi (rad), C(ACE)-N-CA-C",
            "bins": a.bins,
            "range": [-math.pi, math.pi],
            "definition": "F = -log p(phi), kT, minimum 0",
            "error_method": f"block bootstrap ({block * interval:g} ps blocks), replicates aligned by "
            "the probability-weighted constant shift",
        },
        "computed_by": "python systems/alanine_dipeptide/reference.py " + " ".join(argv or []),
    }
    ad.DATA_DIR.joinpath(f"reference_{a.solvent}.json").write_text(json.dumps(result, indent=2) + "\n")
    np.savez(
        ad.DATA_DIR / f"reference_{a.solvent}.npz",
        centers=prof.centers.numpy(),
        edges=edges,
        free_energy=f_raw,
        error=profile_error,
        iid_error=prof.error.numpy(),
        counts=prof.counts.numpy(),
    )
    print(json.dumps(result["delta_f"], indent=2))
    return result


if __name__ == "__main__":
    main()
