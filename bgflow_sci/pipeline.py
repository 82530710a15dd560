"""Train, sample and reweight a Boltzmann generator for any system folder (``bgflow-sci train/sample/reweight``).

A system module ``systems/<name>/system.py`` (see ``systems/README.md``) provides

* ``CONFIG``: its ``config.json`` as a dict, with sections ``model``, ``train`` and ``evaluate``;
* ``make_boltzmann_generator(config, data) -> BoltzmannGenerator``: prior, flow and target energy (kT), built
  from the ``model`` section and the training frames ``data`` (``(frames, dim)`` tensor; used for statistics);
* ``training_data(config) -> np.ndarray``: ``(frames, dim)`` reference samples for maximum likelihood;

and optionally

* ``collective_variables(x) -> {name: (n,) array}`` for profiles (the first two also give a 2D map);
* ``free_energy_regions(cvs) -> {name: (in_a, in_b)}`` boolean masks for ``ΔF = F_B - F_A``;
* ``reference_free_energies() -> {"delta_f": {name: {"value", "error"}}, "profiles": {cv: {"centers",
  "free_energy", "error"}}}`` to compare against;
* ``write_trajectory(x, path) -> Path`` to write samples in a format MD tools read (e.g. mdtraj DCD).

Training is :func:`~bgflow_sci.training.ml_then_kl` (maximum likelihood, then reverse KL with an ML anchor). If
the generator is a :class:`~bgflow_sci.state_mixture.StateMixture` (one flow per metastable state), each component
is trained on the frames of its state (settings overridable per state with ``train.states``, a list of dicts),
then :meth:`~bgflow_sci.state_mixture.StateMixture.calibrate` sets the state weights (``train.calibration_samples``
per state, ``train.state_weights`` rule); its metrics go to ``metrics_state<k>.jsonl`` and ``training_state<k>.png``.
Reweighting uses :mod:`bgflow_sci.reweighting`. Every step writes into one output folder: ``model.pt`` (config +
weights), ``metrics.jsonl``, ``training.png``, ``samples.npz`` (+ trajectory and ``weights.npy``),
``results.json`` and the plots.
"""

from __future__ import annotations

import copy
import datetime
import json
import math
import os
import platform
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from . import reweighting as rw
from .state_mixture import StateMixture
from .systems import find_system, load_system
from .training import ml_then_kl

TRAIN_DEFAULTS: dict[str, Any] = {
    "ml_steps": 2000,
    "kl_steps": 0,
    "batch_size": 256,
    "kl_batch_size": None,
    "lr": 5e-4,
    "schedule": "cosine",
    "final_lr_factor": 0.0,
    "weight_decay": 0.0,
    "ml_anchor": 0.5,
    "energy_cutoff": None,
    "test_fraction": 0.1,
    "max_frames": None,
    "seed": 0,
    "kl_bias": 0.0,  # kT; > 0: reverse KL against the system's kl_target(config, bg) (a biased training target)
    # a StateMixture generator: per-state overrides of these settings (a list of dicts, one per state), the
    # samples per state that estimate the state weights afterwards, and their rule (StateMixture.calibrate)
    "states": None,
    "calibration_samples": 20_000,
    "state_weights": "ess",
}
EVALUATE_DEFAULTS: dict[str, Any] = {"samples": 100_000, "batch_size": 10_000, "bins": 36, "n_bootstrap": 200}


def merge_config(base: dict[str, Any], *updates: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge dicts (later wins) into a new dict."""
    out = copy.deepcopy(base)
    for update in updates:
        for key, value in update.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge_config(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["train.ml_steps=100", "model.hidden=[64,64]"]`` -> nested dict; values parsed as JSON when possible."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects SECTION.KEY=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _system_config(module, config_path: str | os.PathLike | None, overrides: dict[str, Any]) -> dict[str, Any]:
    for hook in ("make_boltzmann_generator", "training_data"):
        if not hasattr(module, hook):
            raise AttributeError(f"system module {module.__file__} lacks {hook}(); see systems/README.md")
    user = json.loads(Path(config_path).read_text()) if config_path else {}
    config = merge_config({"train": TRAIN_DEFAULTS, "evaluate": EVALUATE_DEFAULTS}, module.CONFIG, user, overrides)
    per_state = config["train"]["states"] or []  # per-state overrides of the same settings
    for where, settings in [("train", config["train"]), *(("train.states", s) for s in per_state)]:
        unknown = set(settings) - set(TRAIN_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown {where} settings {sorted(unknown)}; known: {sorted(TRAIN_DEFAULTS)}")
    return config


def _split(data: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    n_test = max(1, int(round(len(data) * fraction)))
    return data[perm[n_test:]], data[perm[:n_test]]


def _build(module, config: dict[str, Any], device: torch.device, dtype: torch.dtype):
    raw = np.asarray(module.training_data(config))
    data = torch.as_tensor(raw.reshape(len(raw), -1), dtype=dtype)
    if not torch.isfinite(data).all():
        raise ValueError("training data hold non-finite values")
    train = config["train"]
    if train["max_frames"]:
        data = data[torch.randperm(len(data), generator=torch.Generator().manual_seed(train["seed"]))]
        data = data[: int(train["max_frames"])]
    x_train, x_test = _split(data, train["test_fraction"], train["seed"])
    bg = module.make_boltzmann_generator(config, x_train)
    return bg.to(device=device, dtype=dtype), x_train.to(device), x_test.to(device)


def train(
    system: str | os.PathLike,
    out: str | os.PathLike,
    config_path: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    evaluate: bool = True,
) -> dict[str, Any]:
    """Train the system's Boltzmann generator; write ``model.pt``, metrics and plots to ``out``.

    With ``evaluate`` the model is then sampled (``evaluate.samples``) and reweighted into the same folder.
    Returns the results (training times in wall and process-CPU seconds, held-out NLL, and the reweighting).
    """
    from .plotting import plot_metrics

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    module = load_system(system)
    config = _system_config(module, config_path, overrides or {})
    device = torch.device(device)
    t = config["train"]
    torch.manual_seed(t["seed"])
    bg, x_train, x_test = _build(module, config, device, dtype)
    kl_target = None
    if t["kl_bias"]:
        if not hasattr(module, "kl_target"):
            raise ValueError(f"train.kl_bias needs the hook kl_target(config, bg) in {module.__file__}")
        kl_target = module.kl_target(config, bg)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if isinstance(bg, StateMixture):  # one generator per state, each on its own frames; then the state weights
        settings = t["states"] or [{}] * bg.n_states
        if len(settings) != bg.n_states:
            raise ValueError(f"train.states needs one dict per state ({bg.n_states}), got {len(settings)}")
        trainers = [
            _fit(
                component,
                frames,
                merge_config(t, {"seed": t["seed"] + k}, settings[k]),
                kl_target,
                out / f"metrics_state{k}.jsonl",
                progress,
            )
            for k, (component, frames) in enumerate(zip(bg.components, bg.split(x_train)))
        ]
        calibration = bg.calibrate(t["calibration_samples"], rule=t["state_weights"])
    else:
        trainers, calibration = [_fit(bg, x_train, t, kl_target, out / "metrics.jsonl", progress)], None
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    bg.eval()
    with torch.no_grad():
        nll = float(-bg.log_prob(x_test).mean())
    torch.save(
        {"system": str(find_system(system)), "config": config, "dtype": str(dtype), "state_dict": bg.state_dict()},
        out / "model.pt",
    )
    for k, trainer in enumerate(trainers):
        plot_metrics(trainer.history, out / ("training.png" if len(trainers) == 1 else f"training_state{k}.png"))
    results = {
        "system": str(system),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {device}",
        "train_frames": len(x_train),
        "heldout_frames": len(x_test),
        "steps": sum(tr.step for tr in trainers),
        "skipped_steps": sum(tr.n_skipped for tr in trainers),
        "train_wall_s": round(wall, 1),
        "train_cpu_s": round(cpu, 1),
        "heldout_nll": nll,
        **({"state_calibration": calibration} if calibration else {}),
        "config": config,
    }
    (out / "train.json").write_text(json.dumps(results, indent=2) + "\n")
    if evaluate:
        ev = config["evaluate"]  # the model in memory is the one just saved: no reload from model.pt
        path = _write_samples(module, bg, ev["samples"], out / "samples.npz", out / "model.pt", ev["batch_size"])
        results["reweighting"] = reweight(path, out)
        (out / "train.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def _fit(bg, data: torch.Tensor, t: dict[str, Any], kl_target, log_path: Path, progress: bool):
    """Run :func:`ml_then_kl` with the ``train`` settings ``t`` on ``bg``; returns the trainer."""
    log_path.unlink(missing_ok=True)
    trainer = ml_then_kl(
        bg,
        data,
        t["ml_steps"],
        t["kl_steps"],
        batch_size=t["batch_size"],
        kl_batch_size=t["kl_batch_size"],
        ml_anchor=t["ml_anchor"],
        energy_cutoff=t["energy_cutoff"],
        lr=t["lr"],
        schedule=t["schedule"],
        final_lr_factor=t["final_lr_factor"],
        weight_decay=t["weight_decay"],
        kl_target=kl_target,
        log_path=log_path,
        log_every=10,
        seed=t["seed"],
        progress=progress,
    )
    trainer.train(t["ml_steps"] + t["kl_steps"])
    return trainer


def load_model(checkpoint: str | os.PathLike, device: torch.device | str = "cpu"):
    """``(module, config, bg)`` from a ``model.pt`` written by :func:`train`."""
    module, config, bg, _ = _load(checkpoint, device)
    return module, config, bg


def _load(checkpoint: str | os.PathLike, device: torch.device | str = "cpu"):
    """:func:`load_model` plus the training frames the model was built from."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"no checkpoint {checkpoint}: write one with `bgflow-sci train SYSTEM --out DIR`")
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    module = load_system(state["system"])
    dtype = getattr(torch, state["dtype"].removeprefix("torch."))
    config = state["config"]
    bg, x_train, _ = _build(module, config, torch.device(device), dtype)
    bg.load_state_dict(state["state_dict"])
    return module, config, bg.eval(), x_train


def sample(
    checkpoint: str | os.PathLike,
    n: int,
    out: str | os.PathLike,
    device: torch.device | str = "cpu",
    batch_size: int | None = None,
) -> Path:
    """Draw ``n`` samples with log weights from a trained model; write ``out`` (``.npz``: ``x``, ``log_w``).

    If the system writes trajectories, the samples also go to ``out`` with the system's suffix (e.g. ``.dcd``)
    and the log weights to ``<stem>_log_weights.npy`` beside it.
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    module, config, bg = load_model(checkpoint, device)
    return _write_samples(module, bg, n, out, checkpoint, batch_size or config["evaluate"]["batch_size"])


def _write_samples(module, bg, n: int, out: str | os.PathLike, checkpoint: str | os.PathLike, batch_size: int) -> Path:
    x, log_w = bg.sample(n, batch_size=batch_size)
    out = Path(out).with_suffix(".npz")
    out.parent.mkdir(parents=True, exist_ok=True)
    x_np, lw_np = x.detach().cpu().numpy().astype(np.float32), log_w.detach().cpu().double().numpy()
    np.savez_compressed(out, x=x_np, log_w=lw_np, checkpoint=str(Path(checkpoint).resolve()))
    if hasattr(module, "write_trajectory"):
        module.write_trajectory(x_np, out.with_suffix(""))
        np.save(out.with_name(out.stem + "_log_weights.npy"), lw_np)
    return out


def reweight(samples: str | os.PathLike, out: str | os.PathLike, n_bootstrap: int | None = None) -> dict[str, Any]:
    """Importance-reweight samples written by :func:`sample`: ESS, log Z, ΔF of the system's regions and profiles
    of its collective variables (flow, reweighted flow, reference), with bootstrap errors; ``results.json`` and
    plots into ``out``."""
    from .plotting import plot_2d_histograms, plot_free_energy_profiles

    samples = Path(samples)
    if not samples.is_file():
        raise FileNotFoundError(f"no samples file {samples}: write one with `bgflow-sci sample MODEL -n N --out FILE`")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with np.load(samples) as f:
        x, log_w, checkpoint = f["x"], torch.as_tensor(f["log_w"]), str(f["checkpoint"])
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    module, config = load_system(state["system"]), state["config"]
    ev = merge_config(EVALUATE_DEFAULTS, config.get("evaluate", {}))
    n_boot = n_bootstrap if n_bootstrap is not None else ev["n_bootstrap"]
    gen = torch.Generator().manual_seed(0)
    finite = torch.isfinite(log_w)
    results: dict[str, Any] = {
        "samples": len(log_w),
        "invalid": int((~finite).sum()),
        "ess": rw.ess(log_w),
        "log_z": rw.log_z(log_w, n_bootstrap=n_boot, generator=gen)._asdict(),
    }
    reference = module.reference_free_energies() if hasattr(module, "reference_free_energies") else None
    cvs = module.collective_variables(x) if hasattr(module, "collective_variables") else {}
    cvs_t = {k: torch.as_tensor(np.asarray(v), dtype=torch.float64) for k, v in cvs.items()}
    if hasattr(module, "free_energy_regions") and cvs:
        results["delta_f"] = {}
        for name, (in_a, in_b) in module.free_energy_regions(cvs).items():
            a, b = torch.as_tensor(in_a), torch.as_tensor(in_b)
            est = rw.free_energy_difference(log_w, a, b, n_bootstrap=n_boot, generator=gen)
            flow = rw.free_energy_difference(None, a[finite], b[finite], n_bootstrap=0)
            entry = {"reweighted": est.value, "error": est.error, "flow_only": flow.value}
            ref = (reference or {}).get("delta_f", {}).get(name)
            if ref is not None:
                entry.update(reference=ref["value"], reference_error=ref["error"])
                entry["abs_error"] = abs(est.value - ref["value"])
            results["delta_f"][name] = entry
    for name, cv in cvs_t.items():
        edges = torch.linspace(-math.pi, math.pi, ev["bins"] + 1, dtype=torch.float64)
        if cv.min() < -math.pi - 1e-6 or cv.max() > math.pi + 1e-6:
            edges = torch.linspace(float(cv.min()), float(cv.max()), ev["bins"] + 1, dtype=torch.float64)
        flow = rw.free_energy_profile(cv[finite], None, edges, n_bootstrap=0)
        profiles = {
            "flow": SimpleNamespace(centers=flow.centers, free_energy=flow.free_energy),
            "reweighted flow": rw.free_energy_profile(cv, log_w, edges, n_bootstrap=n_boot, generator=gen),
        }
        ref = (reference or {}).get("profiles", {}).get(name)
        if ref is not None:
            profiles["reference"] = SimpleNamespace(**ref)
        values = [np.asarray(p.free_energy)[np.isfinite(np.asarray(p.free_energy))] for p in profiles.values()]
        top = max((float(v.max()) for v in values if v.size), default=10.0)
        ylim = (-1.0, min(top, 30.0) + 2)
        plot_free_energy_profiles(profiles, out / f"free_energy_{name}.png", xlabel=name, ylim=ylim)
    if len(cvs) >= 2:
        (n1, c1), (n2, c2) = list(cvs.items())[:2]
        panels = {"flow": (c1[finite.numpy()], c2[finite.numpy()], None)}
        panels["reweighted flow"] = (c1, c2, rw.normalized_weights(log_w).numpy())
        if hasattr(module, "training_data"):
            ref_cv = module.collective_variables(np.asarray(module.training_data(config)))
            panels = {"reference data": (ref_cv[n1], ref_cv[n2], None), **panels}
        plot_2d_histograms(panels, out / f"map_{n1}_{n2}.png", xlabel=n1, ylabel=n2)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    return results


def enhanced_md(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    n_cycles: int,
    md_steps: int = 100,
    proposals_per_cycle: int = 10,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Flow-enhanced MD (:class:`~bgflow_sci.samplers.FlowEnhancedMD`) of a system with a trained model as proposal.

    Needs the system hook ``openmm_system(config) -> (topology, system, positions)`` and ``TEMPERATURE``; starts
    from the first frame of the training split. Writes ``trajectory`` (system format, e.g. DCD),
    ``enhanced_md.json`` with the acceptance, the energy evaluations and, per region of ``free_energy_regions``,
    the fraction of frames in region B and the transitions between A and B (changes of the last region visited)
    per evaluation.
    """
    from .samplers import FlowEnhancedMD, count_transitions

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    module, config, bg, x_train = _load(checkpoint)
    if not hasattr(module, "openmm_system"):
        raise AttributeError(f"system module {module.__file__} lacks openmm_system(config); see systems/README.md")
    _, system, _ = module.openmm_system(config)
    x0 = x_train[0].cpu().double().numpy()
    with FlowEnhancedMD(
        system, module.TEMPERATURE, bg, md_steps=md_steps, proposals_per_cycle=proposals_per_cycle, seed=seed
    ) as sampler:
        result = sampler.run(n_cycles, x0=x0, progress=progress)
    frames = result.positions.reshape(len(result.positions), -1)
    report: dict[str, Any] = {"checkpoint": str(Path(checkpoint).resolve()), **result.summary()}
    if hasattr(module, "collective_variables") and hasattr(module, "free_energy_regions"):
        report["regions"] = {}
        for name, (in_a, in_b) in module.free_energy_regions(module.collective_variables(frames)).items():
            labels = np.where(np.asarray(in_b), 1, np.where(np.asarray(in_a), 0, -1))
            n_tr = count_transitions(labels)
            report["regions"][name] = {
                "fraction_in_b": float(np.mean(labels == 1)),
                "transitions": n_tr,
                "transitions_per_evaluation": n_tr / max(result.n_evaluations, 1),
            }
    if hasattr(module, "write_trajectory"):
        report["trajectory"] = str(module.write_trajectory(frames, out / "trajectory"))
    (out / "enhanced_md.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    return report
