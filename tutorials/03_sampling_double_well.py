"""Tutorial 3 — four ways to sample the 2D double well, and how exact each one is.

Run:  python tutorials/03_sampling_double_well.py [--quick] [--out DIR]

1. a RealNVP Boltzmann generator, importance-reweighted;
2. the same flow with Metropolis blocks in between: a stochastic normalizing flow (Wu et al. 2020) whose
   path weights stay exact;
3. plain MALA chains started in the left (shallower) well — local moves must cross the barrier;
4. independent Metropolis-Hastings with the Boltzmann generator as proposal (flow MCMC): an unbiased
   Markov chain that jumps between wells.

Each method's ΔF = F(x1>0) - F(x1<0) is printed next to the exact value and the free-energy profiles along x1
are plotted together.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from bgflow_sci import BoltzmannGenerator
from bgflow_sci import reweighting as rw
from bgflow_sci.distributions import Normal
from bgflow_sci.energies import DoubleWell2D, InterpolatedEnergy
from bgflow_sci.flows import AffineCoupling, MetropolisMC, Sequential, half_mask
from bgflow_sci.plotting import plot_free_energy_profiles
from bgflow_sci.samplers import MALA, IndependentMetropolis, Sampler
from bgflow_sci.training import ml_then_kl


def flow(target: DoubleWell2D, prior: Normal, with_mc: bool) -> Sequential:
    """3 RealNVP blocks, optionally each followed by 20 Metropolis steps on u_λ (λ = 1/3, 2/3, 1)."""
    layers = []
    for block, lam in enumerate((1 / 3, 2 / 3, 1.0)):
        layers += [AffineCoupling(2, half_mask(2, second)) for second in (block % 2 == 0, block % 2 == 1)]
        if with_mc:
            layers.append(MetropolisMC(InterpolatedEnergy(prior.energy, target, lam), 2, step_size=0.25, n_steps=20))
    return Sequential(*layers)


def main(quick: bool = False, out: str = "tutorial_out") -> dict:
    torch.manual_seed(0)
    target, prior = DoubleWell2D(), Normal(2)
    exact = target.free_energy_difference_exact()
    data = target.sample_exact(5000)
    steps, n = (150, 5000) if quick else (600, 50_000)
    edges = torch.linspace(-2.5, 2.5, 26, dtype=torch.float64)
    results, profiles = {}, {}

    for name, with_mc in (("flow", False), ("stochastic flow", True)):
        bg = BoltzmannGenerator(prior, flow(target, prior, with_mc), target)
        ml_then_kl(bg, data, steps // 2, steps // 2, batch_size=256, ml_anchor=1.0, progress=False).train(steps)
        x, log_w = bg.sample_with_log_weights(n, batch_size=10_000)
        results[name] = rw.free_energy_difference(log_w, x[:, 0] < 0, x[:, 0] >= 0)
        profiles[name] = rw.free_energy_profile(x[:, 0].double(), log_w.double(), edges)
        if not with_mc:
            proposal = bg

    chains = 256 if quick else 1024
    x0 = torch.tensor([-1.7, 0.0]).expand(chains, 2).clone()  # every chain starts in the left well
    n_steps, burn_in = (400, 100) if quick else (2000, 200)
    for name, kernel in (("MALA", MALA(target, 0.05)), ("flow MCMC (IMH)", IndependentMetropolis(target, proposal))):
        run = Sampler(kernel, x0, seed=1).run(n_steps, burn_in=burn_in, thin=10, progress=False)
        print(f"{name:18s} acceptance {run.diagnostics['mean_acceptance']:.2f}")
        x1 = run.samples[..., 0].reshape(-1).double()
        results[name] = rw.free_energy_difference(None, x1 < 0, x1 >= 0)
        profiles[name] = rw.free_energy_profile(x1, None, edges)

    grid = torch.linspace(-2.5, 2.5, 400, dtype=torch.float64)
    f_exact = target.marginal_x1_free_energy(grid)
    plot_free_energy_profiles(profiles, Path(out) / "sampling_double_well.png", exact=(grid, f_exact - f_exact.min()))
    for name, est in results.items():
        print(f"{name:18s} dF = {est.value:+.3f} ± {est.error:.3f} kT   (exact {exact:+.3f})")
    return {"exact": exact, **{k: (v.value, v.error) for k, v in results.items()}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps and samples (used by the test suite)")
    parser.add_argument("--out", default="tutorial_out", help="folder for the plot")
    args = parser.parse_args()
    main(args.quick, args.out)
