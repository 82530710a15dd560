"""FAB with a replay buffer against reverse KL on the 40-mode Gaussian mixture (FAB's GMM-40, 2D), same flow.

Both train a RealNVP (8 couplings, 64x64) over a Normal(0, 20²) prior with Adam (lr 1e-3), batch 128, for
``--steps`` steps; FAB: AIS with 6 intermediate distributions and HMC (4 leapfrog steps, step 0.5, adapted) from q
towards p²/q, a prioritised buffer of 25 600 samples refreshed with 128 chains every 4 steps. Every 500 steps:
Kish ESS of 20 000 flow samples, how many of the 40 modes receive samples (nearest mean), the largest deviation
of a mode's reweighted weight from 1/40, and the target-energy evaluations so far. One JSON line per report.

    python benchmarks/fab_gmm40.py fab 0 6000
    python benchmarks/fab_gmm40.py kl 0 6000
"""

from __future__ import annotations

import json
import sys
import time

import torch

from bgflow_sci import BoltzmannGenerator
from bgflow_sci import reweighting as rw
from bgflow_sci.distributions import Normal
from bgflow_sci.energies import GaussianMixture40
from bgflow_sci.flows import real_nvp
from bgflow_sci.training import FlowAnnealedBootstrap, ReverseKL, Trainer


def main() -> None:
    method, seed, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(1)
    target = GaussianMixture40()
    torch.manual_seed(seed)
    bg = BoltzmannGenerator(Normal(2, std=20.0), real_nvp(2, 8, hidden=(64, 64)), target)
    if method == "fab":
        loss = FlowAnnealedBootstrap(bg, 128, n_ais_steps=6, n_leapfrog=4, step_size=0.5, buffer_size=25600,
                                     refresh_every=4)  # fmt: skip
    elif method == "kl":
        loss = ReverseKL(bg, 128)
    else:
        raise SystemExit(f"method must be fab or kl, got {method!r}")
    trainer = Trainer(bg, {method: loss}, lr=1e-3, progress=False, seed=seed)
    t0 = time.time()
    for _ in range(steps // 500):
        trainer.train(500)
        with torch.no_grad():
            x, log_w = bg.sample_with_log_weights(20_000)
        nearest = ((x[:, None, :].double() - target.means.double()) ** 2).sum(-1).argmin(1)
        w = torch.zeros(40, dtype=torch.float64).index_add_(0, nearest, rw.normalized_weights(log_w).double())
        report = {"method": method, "seed": seed, "step": trainer.step, "time_s": round(time.time() - t0),
                  "ess": rw.ess(log_w), "modes_hit": int((torch.bincount(nearest, minlength=40) > 0).sum()),
                  "max_abs_mode_weight_minus_1_40": float((w - 1 / 40).abs().max()),
                  "energy_evaluations": getattr(loss, "n_energy_evaluations", None)}  # fmt: skip
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
