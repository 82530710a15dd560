"""log Z of GMM-40 and ManyWell-32 by AIS and by flow-based importance sampling, against the exact values.

Issue 5, "Must show": AIS and flow-based importance sampling estimate log Z within 0.05 of the exact value.
Methods (all generic: nothing uses the product structure of ManyWell-32):

* ``ais`` — annealed importance sampling from a Gaussian prior along the geometric path ``β ∈ {0} ∪ geomspace(1e-4,
  1)`` with one global step size adapted along the path. GMM-40 (2D, 40 modes, exact log Z = 0): prior
  ``N(0, 30² I)``, MALA. (ManyWell-32 from a Gaussian prior is optional, ``--mw-plain-ais``: its weights are too
  uneven for 0.05 at this budget, see ``notes`` in the output.)
* ``flow_is`` — a Boltzmann generator (neural spline flow + ActNorm, standard normal prior) trained by maximum
  likelihood on exact samples (``sample_exact``), then ``log Z = logsumexp(log w) - log n`` with
  ``log w = -u(x) - log q(x)`` over fresh flow samples (:func:`bgflow_sci.reweighting.log_z`).
* ``flow_ais`` — AIS whose prior is the trained flow (``u_0 = -log q``, ``Z_0 = 1``; forces by autograd through the
  flow), linear schedule, MALA transitions: the flow does the bulk of the work, a short annealing corrects it.

Errors are bootstrap standard errors over samples/chains. ``demonstrated`` = ``|diff| + 2σ < 0.05`` (the run shows
the estimate lies within 0.05 of the exact value at 2σ); ``error_small_enough`` = ``2σ < 0.05``.

    python benchmarks/log_z.py [--threads 1] [--out benchmarks/results/log_z.json]

Runtime on the 2-core shared development machine: see ``seconds`` in the output (budget ~15 minutes).
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

from bgflow_sci import BoltzmannGenerator
from bgflow_sci import reweighting as rw
from bgflow_sci.distributions import Normal
from bgflow_sci.energies import GaussianMixture40, ManyWell32
from bgflow_sci.flows import ActNorm, Sequential, neural_spline_flow
from bgflow_sci.samplers import HMC, MALA, AnnealedImportanceSampler
from bgflow_sci.training import MaximumLikelihood, Trainer

TOL = 0.05


def _row(system, method, estimate, exact, ess, seconds, **extra):
    diff = abs(estimate.value - exact)
    row = {
        "system": system,
        "method": method,
        "log_z": estimate.value,
        "log_z_error": estimate.error,
        "exact": exact,
        "abs_diff": diff,
        "within_0.05": diff < TOL,
        "error_small_enough": 2 * estimate.error < TOL,
        "demonstrated": diff + 2 * estimate.error < TOL,
        "ess": ess,
        "seconds": seconds,
        **extra,
    }
    print(json.dumps(row), flush=True)
    return row


def run_ais(system, target, prior, kernel, step_size, n_chains, n_steps, seed, x0=None, method="ais", betas=None):
    ais = AnnealedImportanceSampler(
        target, prior, betas=betas, n_steps=n_steps, kernel=kernel, step_size=step_size, adapt_rate=0.5
    )
    start = time.time()
    result = ais.run(n_chains, x0=x0, seed=seed, progress=False, dtype=torch.float64)
    return _row(
        system,
        method,
        result.log_z,
        float(target.log_z()),
        result.ess,
        time.time() - start,
        n_chains=n_chains,
        n_annealing_steps=n_steps,
        final_acceptance=float(result.acceptance[-1]),
    )


def train_flow(target, n_data, steps, n_layers, n_bins, hidden, batch_size, lr, seed):
    """ML training on exact samples in float32; returns the Boltzmann generator in float64, eval mode."""
    torch.manual_seed(seed)
    dim = target.dim
    data = target.sample_exact(n_data, generator=torch.Generator().manual_seed(seed + 100), dtype=torch.float32)
    flow = Sequential(neural_spline_flow(dim, n_layers=n_layers, n_bins=n_bins, hidden=(hidden, hidden)), ActNorm(dim))
    bg = BoltzmannGenerator(Normal(dim), flow, target)
    start = time.time()
    trainer = Trainer(
        bg, {"ml": MaximumLikelihood(bg, data, batch_size)}, lr=lr, schedule="cosine", total_steps=steps, progress=False
    )
    history = trainer.train(steps)
    info = {
        "flow": f"neural_spline_flow(n_layers={n_layers}, n_bins={n_bins}, hidden=({hidden}, {hidden})) + ActNorm",
        "training": f"ML, {steps} Adam steps, batch {batch_size}, lr {lr} cosine, {n_data} exact samples (float32)",
        "final_nll": history[-1].get("loss/ml", history[-1].get("ml")) if history else None,
        "train_seconds": time.time() - start,
    }
    return bg.double().eval(), info


def run_flow_is(system, bg, n, batch_size, seed, info):
    torch.manual_seed(seed)
    start = time.time()
    _, log_w = bg.sample_with_log_weights(n, batch_size=batch_size)
    est = rw.log_z(log_w, n_bootstrap=200, generator=torch.Generator().manual_seed(seed))
    return _row(
        system, "flow_is", est, float(bg.target.log_z()), rw.ess(log_w), time.time() - start, n_samples=n, **info
    )


def run_flow_ais(system, bg, n_chains, n_steps, step_size, seed, info):
    torch.manual_seed(seed)
    with torch.no_grad():
        x0, _ = bg.sample_with_log_prob(n_chains)
    betas = torch.linspace(0.0, 1.0, n_steps + 1, dtype=torch.float64)  # the prior is close: a linear schedule
    row = run_ais(
        system, bg.target, bg, MALA, step_size, n_chains, n_steps, seed, x0=x0, method="flow_ais", betas=betas
    )
    row["prior"] = "the trained flow of flow_is: " + info["flow"]
    row["schedule"] = f"linear, {n_steps} steps, one MALA transition each"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gmm-chains", type=int, default=5000)
    parser.add_argument("--gmm-steps", type=int, default=300)
    parser.add_argument("--gmm-train-steps", type=int, default=1500)
    parser.add_argument("--mw-train-steps", type=int, default=800)
    parser.add_argument("--is-samples", type=int, default=100_000)
    parser.add_argument("--mw-is-samples", type=int, default=50_000)
    parser.add_argument("--flow-ais-chains", type=int, default=4000)
    parser.add_argument("--flow-ais-steps", type=int, default=50)
    parser.add_argument("--mw-plain-ais", action="store_true", help="also run ManyWell-32 AIS from a Gaussian prior")
    parser.add_argument("--mw-chains", type=int, default=2000)
    parser.add_argument("--mw-steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/log_z.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # prior draws of the plain AIS runs
    t0 = time.time()

    rows = []
    gmm = GaussianMixture40()
    rows.append(
        run_ais("GMM-40", gmm, Normal(2, 0.0, 30.0).double(), MALA, 1.0, args.gmm_chains, args.gmm_steps, args.seed)
    )
    bg, info = train_flow(gmm, 100_000, args.gmm_train_steps, 6, 16, 64, 512, 2e-3, args.seed)
    rows.append(run_flow_is("GMM-40", bg, args.is_samples, 20_000, args.seed + 1, info))

    mw = ManyWell32()
    if args.mw_plain_ais:
        prior = Normal(32, 0.0, torch.tensor([2.0, 1.0]).repeat(16)).double()
        hmc = lambda p, s: HMC(p, s, n_leapfrog=5)  # noqa: E731
        rows.append(run_ais("ManyWell-32", mw, prior, hmc, 0.3, args.mw_chains, args.mw_steps, args.seed))
    bg, info = train_flow(mw, 100_000, args.mw_train_steps, 6, 8, 96, 512, 2e-3, args.seed)
    rows.append(run_flow_is("ManyWell-32", bg, args.mw_is_samples, 10_000, args.seed + 1, info))
    rows.append(run_flow_ais("ManyWell-32", bg, args.flow_ais_chains, args.flow_ais_steps, 0.05, args.seed + 2, info))

    out = {
        "benchmark": "log_z (AIS, flow importance sampling, flow-AIS)",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "device": "cpu",
            "threads": args.threads,
            "note": "development machine shared with other jobs (load average ~8 on 2 cores): timings are inflated",
        },
        "seed": args.seed,
        "args": vars(args),
        "criterion": "demonstrated = |log_z - exact| + 2 * log_z_error < 0.05",
        "results": rows,
        "total_seconds": time.time() - t0,
        "notes": [
            "ManyWell-32 AIS from the Gaussian prior N(0, diag(2,1,...)^2) with HMC (2000 chains, 2000 steps, "
            "2026-11-29 run): 164.719 +- 0.115 vs exact 164.696 (ESS 0.034, 431 s): within 0.05 but the error bar "
            "cannot demonstrate it; rerun with --mw-plain-ais. flow_ais replaces it as the AIS row for ManyWell-32.",
        ],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out} after {out['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
