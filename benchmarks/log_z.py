"""log Z of GMM-40 and ManyWell-32 by annealed importance sampling, against the exact values.

Issue 5, "Must show": AIS estimates log Z within 0.05 of the exact value. GMM-40 (2D, 40 modes, exact log Z = 0):
prior ``N(0, 30² I)``, MALA transitions. ManyWell-32 (16 double wells, exact log Z by quadrature): prior
``N(0, diag(2², 1², ...))`` (wide along the double-well coordinates, the exact marginal along the harmonic ones),
HMC transitions with 5 leapfrog steps. Geometric schedules ``β ∈ {0} ∪ geomspace(1e-4, 1)``, one global step size
adapted along the path. Error: bootstrap standard error of ``logsumexp(log w) - log n``.

    python benchmarks/log_z.py [--gmm-chains 8000 --gmm-steps 300] [--mw-chains 2000 --mw-steps 2000]
                               [--threads 1] [--out benchmarks/results/log_z.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import torch

from bgflow_sci.distributions import Normal
from bgflow_sci.energies import GaussianMixture40, ManyWell32
from bgflow_sci.samplers import HMC, MALA, AnnealedImportanceSampler


def run_case(name, target, prior, kernel, step_size, n_chains, n_steps, seed):
    ais = AnnealedImportanceSampler(target, prior, n_steps=n_steps, kernel=kernel, step_size=step_size, adapt_rate=0.5)
    start = time.time()
    result = ais.run(n_chains, seed=seed, progress=True, dtype=torch.float64)
    exact = float(target.log_z())
    row = {
        "system": name,
        "n_chains": n_chains,
        "n_annealing_steps": n_steps,
        "log_z": result.log_z.value,
        "log_z_error": result.log_z.error,
        "exact": exact,
        "abs_diff": abs(result.log_z.value - exact),
        "within_0.05": abs(result.log_z.value - exact) < 0.05,
        "error_small_enough": 2 * result.log_z.error < 0.05,  # can this run resolve a 0.05 deviation at 2 sigma?
        "ess": result.ess,
        "final_acceptance": float(result.acceptance[-1]),
        "seconds": time.time() - start,
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gmm-chains", type=int, default=8000)
    parser.add_argument("--gmm-steps", type=int, default=300)
    parser.add_argument("--mw-chains", type=int, default=2000)
    parser.add_argument("--mw-steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="benchmarks/results/log_z.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)

    rows = []
    gmm = GaussianMixture40().to(dev)
    rows.append(
        run_case(
            "GMM-40", gmm, Normal(2, 0.0, 30.0).double().to(dev), MALA, 1.0, args.gmm_chains, args.gmm_steps, args.seed
        )
    )
    mw = ManyWell32().to(dev)
    prior = Normal(32, 0.0, torch.tensor([2.0, 1.0]).repeat(16)).double().to(dev)
    hmc = lambda p, s: HMC(p, s, n_leapfrog=5)  # noqa: E731
    rows.append(run_case("ManyWell-32", mw, prior, hmc, 0.3, args.mw_chains, args.mw_steps, args.seed))

    out = {
        "benchmark": "log_z (AIS)",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "device": str(dev),
            "threads": args.threads,
        },
        "seed": args.seed,
        "results": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
