"""Tutorial 7 — rigid bodies: orientations on S^3, tetrahedra in a field, and ice XI from 250 K to 100 K.

Run:  python tutorials/07_rigid_bodies.py [--quick] [--out DIR]

A rigid molecule is a position and an orientation. Orientations are unit quaternions ``q`` on the sphere S^3, and
``q`` and ``-q`` are the same rotation: every flow here is odd (``f(-q) = -f(q)``) and every conditioner sees only
``q qᵀ``, so a density that is symmetric on S^3 is a proper density of rotations (``p_SO3 = 2 p``).

1. **Orientations** (:mod:`bgflow_sci.quaternions`, :class:`~bgflow_sci.distributions.UniformS3`,
   :class:`~bgflow_sci.flows.DoubleMobius`): a random double-Möbius stack over the uniform prior is a normalised
   density on S^3 (Monte Carlo integral 1) with ``log q(q) = log q(-q)``.
2. **One tetrahedron in an orienting field** (:class:`~bgflow_sci.energies.TetrahedraInField`): a flow trained by
   reverse KL, importance-weighted to the exact orientational partition function, which a quadrature over SO(3)
   gives independently (:func:`~bgflow_sci.energies.orientational_log_z`).
3. **Ice XI of rigid TIP4P-Ew** (:func:`~bgflow_sci.energies.tip4p_ew_ice`: the proton-ordered Cmc2₁ crystal, 16
   molecules, OpenMM with PME and a cutoff of half the box): rigid-water MD at 250 K
   (:func:`bgflow_sci.workflows.md.run_md`), frames turned into rigid-body states (positions of the oxygens,
   quaternions), and a many-body flow (:func:`~bgflow_sci.flows.rigid_body_flow`: circular splines of the positions
   relative to molecule 0, double-Möbius maps of the orientations, coupled both ways) trained to map the 250 K
   samples onto 100 K (:class:`~bgflow_sci.training.FreeEnergyPerturbation`): ``log w = u_250(x) + log|J| -
   u_100(f(x))`` and ``-log mean w = f_100 - f_250``.

Units: positions nm, energies kT of each state, free energies reduced (``f = -log Z``) per molecule.

The quick mode (about a minute) runs 10 ps of MD and 60 training steps: it shows the pipeline, not the result. The
full mode runs 1 ns of MD and 400 steps on 1250 training frames (the tutorial itself was not timed in full mode).
The measured numbers are those of ``benchmarks/rigid.py`` (BENCHMARKS.md, 2026-12-04, 2-core CPU): plain FEP
(the identity map) ESS 0.06 % and a biased ``Δf``; with 6000 training frames of 5 ns MD, a trained flow ESS
19.0–20.9 % on 5500 held-out 250 K frames over 3 seeds (the issue's target, 25 %, is not reached yet) and
``Δf = f_100 - f_250`` of -41.4471 to -41.4497 ± 0.002 per molecule, within 0.01 of MBAR over 8 temperatures
(-41.4557 ± 0.0066).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bgflow_sci import BoltzmannGenerator  # noqa: E402
from bgflow_sci import quaternions as Q  # noqa: E402
from bgflow_sci import reweighting as rw  # noqa: E402
from bgflow_sci.bg import DensityModel  # noqa: E402
from bgflow_sci.distributions import UniformS3  # noqa: E402
from bgflow_sci.energies import TetrahedraInField, as_energy, orientational_log_z, tip4p_ew_ice  # noqa: E402
from bgflow_sci.energies.ice import rigid_state_from_atoms  # noqa: E402
from bgflow_sci.flows import DoubleMobius, QuaternionRotation, Sequential, rigid_body_flow  # noqa: E402
from bgflow_sci.training import FreeEnergyPerturbation, ReverseKL, Trainer  # noqa: E402
from bgflow_sci.workflows.md import read_md, run_md  # noqa: E402


def orientations(n_samples: int) -> dict:
    """Step 1: a random double-Möbius stack over UniformS3 integrates to one and is even in q."""
    torch.manual_seed(0)
    layers = []
    for _ in range(3):
        layers += [QuaternionRotation(2, init_scale=0.5), DoubleMobius(2, init_scale=0.5)]
    model = DensityModel(UniformS3(2), Sequential(*layers)).double()
    prior = UniformS3(2).double()
    with torch.no_grad():
        q = prior.sample(n_samples)
        ratio = torch.exp(model.log_prob(q) - prior.log_prob(q))  # E_uniform[q/uniform] = ∫ q = 1
        even = (model.log_prob(-q[:1000]) - model.log_prob(q[:1000])).abs().max()
    error = ratio.std() / n_samples**0.5
    print(f"∫ q over S^3 = {ratio.mean():.4f} ± {error:.4f};  max |log q(-q) - log q(q)| = {even:.1e}")
    rotation = Q.rotation_matrix(q[:1, :4])
    assert torch.allclose(rotation, Q.rotation_matrix(-q[:1, :4]))  # q and -q: one rotation
    return {"integral": float(ratio.mean()), "integral_error": float(ratio.std() / n_samples**0.5)}


def tetrahedron(steps: int, n_samples: int) -> dict:
    """Step 2: one tetrahedron in the field; reweighted log Z against the SO(3) quadrature."""
    torch.manual_seed(1)
    energy = TetrahedraInField(1).double()
    target = as_energy(lambda q: energy.field_energy(q.reshape(-1, 4)), dim=4)
    layers = []
    for _ in range(3):
        layers += [QuaternionRotation(1, init_scale=0.5), DoubleMobius(1, init_scale=0.3)]
    bg = BoltzmannGenerator(UniformS3(1), Sequential(*layers), target).double()
    Trainer(bg, {"kl": ReverseKL(bg, batch_size=256)}, lr=1e-2, schedule="cosine", total_steps=steps).train(steps)
    with torch.no_grad():
        _, log_w = bg.sample_with_log_weights(n_samples)
    estimate, exact = rw.log_z(log_w), orientational_log_z(energy)
    print(f"tetrahedron: ESS {rw.ess(log_w):.3f}, log Z = {estimate} (quadrature {exact:.4f})")
    return {"ess": rw.ess(log_w), "log_z": estimate.value, "log_z_error": estimate.error, "log_z_exact": exact}


def ice(out: Path, md_ns: float, steps: int, train_frames: int) -> dict:
    """Step 3: ice XI, 16 rigid TIP4P-Ew molecules, 250 K MD -> a flow onto 100 K."""
    crystal = tip4p_ew_ice((2, 1, 1))  # 0.898 x 0.778 x 0.734 nm, PME, cutoff 0.367 nm
    print(f"ice XI: {crystal.n_molecules} molecules, box {crystal.box} nm, cutoff {crystal.cutoff_nm:.3f} nm")
    run_md(
        crystal.system,
        crystal.positions,
        250.0,
        out / "md_250K",
        ns=md_ns,
        frame_ps=0.4,
        timestep_fs=2.0,
        equilibration_ps=5.0,
        platform="CPU",
        threads=1,
        topology=crystal.topology,
    )
    states = rigid_state_from_atoms(crystal, read_md(out / "md_250K")["positions"])  # (frames, 7 * 16)
    hot, cold = crystal.energy(250.0), crystal.energy(100.0)
    with torch.no_grad():
        u_hot = hot.energy(states)
    n_train = min(train_frames, len(states) // 2)
    train, test = states[:n_train], states[n_train:]
    torch.manual_seed(0)
    n = crystal.n_molecules
    flow = rigid_body_flow(crystal.box, crystal.state[0, : 3 * n].reshape(n, 3)).double()
    loss = FreeEnergyPerturbation(flow, cold, train, source_energy=u_hot[:n_train], batch_size=64)
    trainer = Trainer(flow, {"fep": loss}, lr=2e-3, schedule="cosine", total_steps=steps, warmup_steps=min(50, steps))
    history = trainer.train(steps)
    with torch.no_grad():
        plain = u_hot[n_train:] - cold.energy(test)  # the identity map: plain FEP
    learned = loss.log_weights(test, u_hot[n_train:])
    result = {}
    for name, log_w in (("plain FEP", plain), ("flow", learned)):
        est = rw.log_z(log_w)
        result[name] = {"ess": rw.ess(log_w), "delta_f": -est.value / n, "delta_f_error": est.error / n}
        df, err = -est.value / n, est.error / n
        print(f"{name:>9}: ESS {rw.ess(log_w):.4f}, f_100 - f_250 = {df:.4f} ± {err:.4f} per molecule")
    plot_ice(plain, learned, history, out / "ice_fep.png")
    return result


def plot_ice(plain: torch.Tensor, learned: torch.Tensor, metrics: list[dict], path: Path) -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, log_w in (("plain FEP (identity)", plain), ("trained flow", learned)):
        lw = (log_w - torch.logsumexp(log_w, 0)).numpy()
        ax1.hist(lw[np.isfinite(lw)], bins=50, histtype="step", lw=1.5, label=f"{name}: ESS {rw.ess(log_w):.3f}")
    ax1.set_xlabel("normalised log weight of a 250 K test frame")
    ax1.set_ylabel("frames")
    ax1.set_yscale("log")
    ax1.legend(fontsize=8)
    steps = [m["step"] for m in metrics if "fep/ess" in m]
    ax2.plot(steps, [m["fep/ess"] for m in metrics if "fep/ess" in m], lw=1)
    ax2.set_xlabel("training step")
    ax2.set_ylabel("batch ESS (64 frames)")
    ax2.set_title("ice XI, 16 TIP4P-Ew: 250 K -> 100 K")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(quick: bool = False, out: str = "tutorial_out/rigid_bodies") -> dict:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "orientations": orientations(50_000 if quick else 1_000_000),
        "tetrahedron": tetrahedron(30 if quick else 300, 20_000 if quick else 200_000),
        "ice": ice(out_dir, md_ns=0.01 if quick else 1.0, steps=60 if quick else 400, train_frames=1250),
    }
    (out_dir / "results.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps and samples (used by the test suite)")
    parser.add_argument("--out", default="tutorial_out/rigid_bodies", help="folder for results and plots")
    args = parser.parse_args()
    main(args.quick, args.out)
