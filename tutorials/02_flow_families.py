"""Tutorial 2 — flow families side by side on the 2D double well.

Run:  python tutorials/02_flow_families.py [--quick] [--out DIR]

Every family is trained on the same exact samples of ``u(x) = x1^4 - 6 x1^2 - 0.5 x1 + 0.5 x2^2`` and scored by
its held-out negative log-likelihood (nats; the exact entropy of the target is the floor):

* RealNVP — affine couplings (Dinh et al. 2017), maximum likelihood;
* neural spline flow — rational-quadratic spline couplings (Durkan et al. 2019), maximum likelihood;
* masked autoregressive flow — spline MAF layers with alternating orders (Papamakarios et al. 2017);
* smooth-mixture coupling — C^∞ mixtures of smooth sigmoids on the box ``[-5, 5]^2`` with a uniform prior
  (Köhler, Krämer, Noé 2021); trained in its analytic direction (density = forward map);
* continuous flow — a vector field trained by OT flow matching (Lipman et al. 2023; Tong et al. 2024) and
  integrated with dopri5; its density comes from the instantaneous change of variables.

All five families are required: a missing one (or a missing dependency) is an error, not a skip.  One PNG shows
the exact and learned densities (top) and samples (bottom).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import bgflow_sci.flows as F  # noqa: E402
from bgflow_sci import DensityModel  # noqa: E402
from bgflow_sci.distributions import Normal, UniformBox  # noqa: E402
from bgflow_sci.energies import DoubleWell2D  # noqa: E402
from bgflow_sci.training import FlowMatching, MaximumLikelihood, Trainer  # noqa: E402

BOX = 5.0  # half-width of the smooth-mixture box
LIMITS = ((-3.2, 3.2), (-3.8, 3.8))  # plot window, inside the box


def _real_nvp() -> tuple[DensityModel, str]:
    return DensityModel(Normal(2), F.real_nvp(2, 8, hidden=(64, 64))), "ml"


def _spline_coupling() -> tuple[DensityModel, str]:
    return DensityModel(Normal(2), F.neural_spline_flow(2, 4, n_bins=8, bound=5.0)), "ml"


def _autoregressive() -> tuple[DensityModel, str]:
    from bgflow_sci.flows.transformers import Domain

    layers = [
        F.MaskedAutoregressive(2, F.RationalQuadraticSpline(Domain(), 8, 5.0), (64, 64), order=order)
        for order in ([0, 1], [1, 0], [0, 1], [1, 0])
    ]
    return DensityModel(Normal(2), F.Sequential(*layers)), "ml"


def _smooth_mixture() -> tuple[DensityModel, str]:
    from bgflow_sci.flows.smooth import SmoothMixture
    from bgflow_sci.flows.transformers import Domain

    box = Domain.interval(-BOX, BOX)
    layers = [F.Coupling(2, SmoothMixture(box, n_components=8), F.half_mask(2, i % 2 == 0), (64, 64)) for i in range(4)]
    # density direction analytic: log q(x) = log U(f(x)) + log|det ∂f/∂x|; sampling inverts by root finding
    return DensityModel(UniformBox(-BOX, BOX, dim=2), F.Inverse(F.Sequential(*layers))), "ml"


def _continuous() -> tuple[DensityModel, str]:
    field = F.VectorField(2, hidden=(64, 64, 64))
    return DensityModel(Normal(2), F.ContinuousFlow(field, solver="dopri5", atol=1e-5, rtol=1e-5)), "fm"


FAMILIES: dict[str, Callable[[], tuple[DensityModel, str]]] = {
    "RealNVP": _real_nvp,
    "spline coupling": _spline_coupling,
    "autoregressive (MAF)": _autoregressive,
    "smooth mixture": _smooth_mixture,
    "continuous (OT-FM)": _continuous,
}


def train(bg: DensityModel, kind: str, data: torch.Tensor, steps: int) -> None:
    """Maximum likelihood for the discrete flows, OT flow matching for the continuous one."""
    if kind == "fm":
        field = bg.flow.vector_field
        loss = FlowMatching(field, bg.prior, data, batch_size=256, coupling="ot")
        trainer = Trainer(field, {"fm": loss}, lr=3e-3, schedule="cosine", total_steps=steps, progress=False)
    else:
        loss = MaximumLikelihood(bg, data, batch_size=256)
        trainer = Trainer(bg, {"ml": loss}, lr=2e-3, schedule="cosine", total_steps=steps, progress=False)
    trainer.train(steps)


def held_out_nll(bg: DensityModel, x: torch.Tensor) -> float:
    """``-mean log q(x)`` in nats."""
    with torch.no_grad():
        return float(-bg.log_prob(x).mean())


def main(quick: bool = False, out: str = "tutorial_out") -> dict:
    torch.manual_seed(2)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps, n_data = (200, 4000) if quick else (3000, 20_000)

    # the target and its exact references: held-out NLL can go no lower than the entropy E[u] + log Z
    target = DoubleWell2D()
    data = target.sample_exact(n_data, generator=torch.Generator().manual_seed(0))
    held_out = target.sample_exact(2000, generator=torch.Generator().manual_seed(1))
    exact_nll = float((target.energy(held_out) + target.log_z()).mean())
    print(f"exact entropy (held-out NLL floor): {exact_nll:.3f} nats")

    g1 = torch.linspace(*LIMITS[0], 120)
    g2 = torch.linspace(*LIMITS[1], 120)
    grid = torch.stack(torch.meshgrid(g1, g2, indexing="ij"), dim=-1).reshape(-1, 2)

    results: dict[str, dict[str, float]] = {}
    densities: dict[str, torch.Tensor] = {"exact": torch.exp(-target.energy(grid) - target.log_z())}
    samples: dict[str, torch.Tensor] = {"exact": held_out[:1500]}
    for name, build in FAMILIES.items():
        bg, kind = build()
        untrained = held_out_nll(bg, held_out)
        t0 = time.perf_counter()
        train(bg, kind, data, steps)
        seconds = time.perf_counter() - t0
        nll = held_out_nll(bg, held_out)
        with torch.no_grad():
            densities[name] = bg.log_prob(grid).exp()
            samples[name] = bg.sample_with_log_prob(1500)[0]
        results[name] = {"nll": nll, "untrained_nll": untrained, "train_seconds": seconds}
        print(f"{name:22s} held-out NLL {nll:.3f}  (untrained {untrained:.3f}, exact {exact_nll:.3f})  {seconds:.0f} s")

    figure = out_dir / "flow_families.png"
    plot(densities, samples, results, exact_nll, (g1, g2), figure)
    return {"families": results, "exact_nll": exact_nll, "figure": str(figure)}


def plot(densities, samples, results, exact_nll, axes_grid, path: Path) -> None:
    """Densities (top row, shared colour scale) and samples (bottom row), one column per model."""
    g1, g2 = axes_grid
    names = list(densities)
    fig, axes = plt.subplots(2, len(names), figsize=(3.0 * len(names), 6.0), squeeze=False)
    vmax = float(densities["exact"].max())
    for j, name in enumerate(names):
        dens = densities[name].reshape(len(g1), len(g2)).T
        axes[0, j].imshow(
            dens.numpy(), origin="lower", extent=(*LIMITS[0], *LIMITS[1]), aspect="auto", vmin=0.0, vmax=vmax
        )
        nll = exact_nll if name == "exact" else results[name]["nll"]
        axes[0, j].set_title(f"{name}\nNLL {nll:.3f}", fontsize=9)
        x = samples[name].numpy()
        axes[1, j].scatter(x[:, 0], x[:, 1], s=1, alpha=0.4)
        axes[1, j].set_xlim(*LIMITS[0])
        axes[1, j].set_ylim(*LIMITS[1])
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("density")
    axes[1, 0].set_ylabel("samples")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps and samples (used by the test suite)")
    parser.add_argument("--out", default="tutorial_out", help="folder for the figure")
    args = parser.parse_args()
    torch.set_num_threads(min(torch.get_num_threads(), 4))  # small 2D models: more threads only contend
    main(args.quick, args.out)
