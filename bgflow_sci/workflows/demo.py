"""The embedded default job: a Boltzmann generator for the 2D double well, trained and reweighted.

Steps: exact samples of ``u = x1^4 - 6 x1^2 - 0.5 x1 + 0.5 x2^2`` -> maximum likelihood -> reverse KL
(with a small likelihood anchor) -> importance sampling -> ESS, ΔF between the wells with a
bootstrap error, compared with the exact value from numerical integration -> PNG plots.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from .. import reweighting as rw
from ..bg import BoltzmannGenerator
from ..distributions import Normal
from ..energies import DoubleWell2D
from ..flows import real_nvp
from ..plotting import plot_2d_densities, plot_free_energy_profiles, plot_metrics
from ..training.recipes import ml_then_kl


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the double-well demo (the ``--quick`` variant shrinks steps and sample sizes)."""

    n_data: int = 20_000
    ml_steps: int = 1500
    kl_steps: int = 700
    ml_anchor: float = 0.2
    batch_size: int = 512
    lr: float = 2e-3
    n_layers: int = 8  # affine couplings
    hidden: tuple[int, ...] = (64, 64)
    n_samples: int = 200_000
    n_bootstrap: int = 200
    seed: int = 0

    def quick(self) -> DemoConfig:
        return replace(self, n_data=5000, ml_steps=300, kl_steps=100, n_samples=20_000, n_bootstrap=50)


def run_demo(
    out: str | Path,
    config: DemoConfig = DemoConfig(),
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> dict:
    """Train, reweight and plot; returns the numbers it prints (also written to ``out/results.json``)."""
    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    device = torch.device(device)

    target = DoubleWell2D().to(device, dtype)
    bg = BoltzmannGenerator(Normal(2), real_nvp(2, config.n_layers, hidden=config.hidden), target).to(device, dtype)
    data = target.sample_exact(config.n_data).to(device, dtype)

    total = config.ml_steps + config.kl_steps
    trainer = ml_then_kl(
        bg,
        data,
        config.ml_steps,
        config.kl_steps,
        batch_size=config.batch_size,
        ml_anchor=config.ml_anchor,
        lr=config.lr,
        log_path=out / "metrics.jsonl",
        seed=config.seed,
        progress=progress,
        config=asdict(config),
    )
    trainer.train(total)

    bg.eval()
    x, log_w = bg.sample_with_log_weights(config.n_samples, batch_size=50_000)
    cv = x[:, 0]
    ess = rw.ess(log_w)
    left, right = cv < 0, cv >= 0
    delta_f = rw.free_energy_difference(log_w, left, right, n_bootstrap=config.n_bootstrap)
    delta_f_flow = rw.free_energy_difference(None, left, right, n_bootstrap=config.n_bootstrap)
    exact = target.free_energy_difference_exact(split=0.0)

    edges = torch.linspace(-2.5, 2.5, 41, dtype=torch.float64)
    reweighted = rw.free_energy_profile(cv, log_w, bins=edges, n_bootstrap=config.n_bootstrap)
    unweighted = rw.free_energy_profile(cv, None, bins=edges, n_bootstrap=config.n_bootstrap)
    grid = torch.linspace(-2.5, 2.5, 400, dtype=torch.float64)
    f_exact = target.marginal_x1_free_energy(grid).cpu()
    f_exact = f_exact - f_exact.min()

    extent = (-3.0, 3.0, -4.0, 4.0)
    plots = [
        plot_2d_densities(
            {
                "target exp(-u)": lambda p: -target.energy(p.to(device, dtype)),
                "flow q(x)": lambda p: bg.log_prob(p.to(device, dtype)),
            },
            extent,
            out / "densities.png",
        ),
        plot_free_energy_profiles(
            {"flow (unweighted)": unweighted, "flow reweighted": reweighted},
            out / "free_energy_x1.png",
            exact=(grid, f_exact),
        ),
        plot_metrics(trainer.history, out / "training.png"),
    ]
    results = {
        "ess": ess,
        "delta_f": delta_f.value,
        "delta_f_error": delta_f.error,
        "delta_f_flow_unweighted": delta_f_flow.value,
        "delta_f_exact": exact,
        "abs_error": abs(delta_f.value - exact),
        "n_samples": config.n_samples,
        "n_invalid": int((~torch.isfinite(log_w)).sum()),
        "skipped_steps": trainer.n_skipped,
        "seconds": time.time() - t0,
        "plots": [str(p) for p in plots],
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results


def format_results(r: dict) -> str:
    """Human-readable summary of :func:`run_demo`'s results."""
    return "\n".join(
        [
            f"ESS (Kish)                      {100 * r['ess']:.1f} %  of {r['n_samples']} samples "
            f"({r['n_invalid']} invalid)",
            f"dF = F(x1>0) - F(x1<0) reweighted {r['delta_f']:+.3f} ± {r['delta_f_error']:.3f} kT",
            f"                     flow only  {r['delta_f_flow_unweighted']:+.3f} kT",
            f"                     exact      {r['delta_f_exact']:+.3f} kT  (numerical integration)",
            f"|reweighted - exact|            {r['abs_error']:.3f} kT"
            + ("" if math.isnan(r["abs_error"]) else ("  ok (< 0.2)" if r["abs_error"] < 0.2 else "  > 0.2!")),
            f"time                            {r['seconds']:.1f} s on {r['device']} ({r['dtype']})",
            "plots: " + ", ".join(r["plots"]),
        ]
    )
