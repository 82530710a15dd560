"""Train a system's Boltzmann generator (``bgflow-sci train``), resumably, then sample and reweight it.

A system module ``systems/<name>/system.py`` (see ``systems/README.md``) provides

* ``CONFIG``: its ``config.json`` as a dict, with sections ``model``, ``train`` and ``evaluate``;
* ``make_boltzmann_generator(config, data) -> BoltzmannGenerator``: prior, flow and target energy (kT), built
  from the ``model`` section and the training frames ``data`` (``(frames, dim)`` tensor; used for statistics);
  a builder that also accepts ``statistics=`` (with ``data=None``) is rebuilt from the ``bg.build_statistics`` it
  recorded, so a saved model loads without the training data;
* ``training_data(config) -> np.ndarray``: ``(frames, dim)`` reference samples for maximum likelihood;

and optionally the hooks that :mod:`~bgflow_sci.workflows.reweight` and :mod:`~bgflow_sci.workflows.enhanced_md`
read. A molecule config file (``topology`` key; :mod:`~bgflow_sci.workflows.molecule`) is a system too: its
:class:`~bgflow_sci.workflows.config_system.ConfigSystem` provides these hooks, and without ``trajectories`` the
reference MD of its ``md`` section is generated first (beside the config, reused next time).
Training is :func:`~bgflow_sci.training.ml_then_kl` (maximum likelihood, then reverse KL with an ML anchor).
A :class:`~bgflow_sci.state_mixture.StateMixture` (one flow per metastable state) is trained component by
component on the frames of its state (per-state overrides ``train.states``), then
:meth:`~bgflow_sci.state_mixture.StateMixture.calibrate` sets the state weights.

**Resuming.** Every ``train.checkpoint_every`` steps the trainer state (weights, optimizer, schedule, RNG states,
history) goes to ``checkpoint.pt`` (``checkpoint_state<k>.pt`` per state) in ``out``, beside ``run.json`` (the
merged config and system of the run). ``train(..., resume=True)`` reads both, skips finished components and
continues the interrupted one, so a run killed at any point (SIGKILL included) ends with the same parameters as an
uninterrupted one. **Under torchrun** (``torchrun --nproc_per_node=N -m bgflow_sci.cli train ...``) every rank
trains its share of each global batch (:mod:`~bgflow_sci.training.distributed`; ``train.batch_size`` stays the
global batch), rank 0 alone writes files and evaluates, reference MD is generated once by rank 0, and ``--resume``
works as in one process. Output files: ``model.pt`` (:mod:`~bgflow_sci.workflows.models`), ``metrics*.jsonl``,
``training*.png``, ``train.json`` and, with ``evaluate``, ``samples.npz`` (+ trajectory), ``results.json`` and plots.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..state_mixture import StateMixture
from ..training import ml_then_kl
from ..training.distributed import init_distributed, is_main_process, main_first
from .config import merge_config, read_json, system_config
from .models import build_model, save_model
from .systems import find_system, load_system, resolve_system_reference, system_reference

__all__ = ["build_training_split", "train"]


def _split(data: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    n_test = max(1, int(round(len(data) * fraction)))
    return data[perm[n_test:]], data[perm[:n_test]]


def build_training_split(module, config: dict[str, Any], device: torch.device, dtype: torch.dtype):
    """``(bg, x_train, x_test)``: the system's training frames split by ``train.seed`` and the model built on them."""
    raw = np.asarray(module.training_data(config))
    data = torch.as_tensor(raw.reshape(len(raw), -1), dtype=dtype)
    if not torch.isfinite(data).all():
        raise ValueError(f"training data of {module.__file__} hold non-finite values")
    t = config["train"]
    if t["max_frames"]:
        data = data[torch.randperm(len(data), generator=torch.Generator().manual_seed(t["seed"]))]
        data = data[: int(t["max_frames"])]
    x_train, x_test = _split(data, t["test_fraction"], t["seed"])
    bg = build_model(module, config, x_train)
    return bg.to(device=device, dtype=dtype), x_train.to(device), x_test.to(device)


def _run_config(out: Path, system, config_path, overrides: dict[str, Any], resume: bool) -> tuple[Any, dict[str, Any]]:
    """The system module and merged config of the run; with ``resume`` both come from ``out/run.json``."""
    run_file = out / "run.json"
    if resume:
        if not run_file.is_file():
            raise FileNotFoundError(f"--resume: no {run_file} (the run to continue writes it when it starts)")
        if config_path or overrides:
            raise ValueError(f"--resume continues the run in {out} with its saved settings; drop --config/--set")
        run = read_json(run_file, "run file")
        module = load_system(resolve_system_reference(run["system"], out))
        if system is not None and find_system(system) != Path(module.__file__).resolve():
            raise ValueError(f"--resume: {out} holds a run of {module.__file__}, not of {system!r}")
        return module, run["config"]
    module = load_system(system)
    config = system_config(module, config_path, overrides)
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        run = {"system": system_reference(system, relative_to=out), "config": config}
        (out / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    return module, config


def train(
    system: str | os.PathLike | None,
    out: str | os.PathLike,
    config_path: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    evaluate: bool = True,
    resume: bool = False,
) -> dict[str, Any]:
    """Train the system's Boltzmann generator; write ``model.pt``, checkpoints, metrics and plots to ``out``.

    ``resume``: continue the run in ``out`` from its last checkpoint (``system`` may then be ``None``; settings
    come from ``out/run.json``). With ``evaluate`` the model is then sampled (``evaluate.samples``) and reweighted
    into the same folder. Returns the results (training times in wall and process-CPU seconds, held-out NLL, and
    the reweighting).
    """
    with init_distributed(device) as ctx:  # a no-op without torchrun
        return _train(system, Path(out), config_path, overrides, ctx.device, dtype, progress, evaluate, resume, ctx)


def _train(system, out: Path, config_path, overrides, device, dtype, progress, evaluate, resume, ctx) -> dict:
    from ..plotting import plot_metrics
    from .reweight import reweight
    from .sample import write_samples

    with main_first():  # rank 0 writes run.json first (the others read it on --resume)
        module, config = _run_config(out, system, config_path, overrides or {}, resume)
    progress = progress and ctx.is_main
    if hasattr(module, "md_progress"):  # a config system generating its reference MD first
        module.md_progress = progress
    t = config["train"]
    torch.manual_seed(t["seed"])
    with main_first():  # reference MD of a config system: generated by rank 0, read from its cache by the others
        bg, x_train, x_test = build_training_split(module, config, device, dtype)
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
                out,
                f"_state{k}",
                progress,
                resume,
            )
            for k, (component, frames) in enumerate(zip(bg.components, bg.split(x_train)))
        ]
        calibration = bg.calibrate(t["calibration_samples"], rule=t["state_weights"]) if ctx.is_main else None
    else:
        trainers, calibration = [_fit(bg, x_train, t, kl_target, out, "", progress, resume)], None
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if not ctx.is_main:  # rank 0 saves, plots and evaluates
        return {"rank": ctx.rank, "world_size": ctx.world_size, "steps": sum(tr.step for tr in trainers)}
    bg.eval()
    with torch.no_grad():
        nll = float(-bg.log_prob(x_test).mean())
    save_model(out / "model.pt", module.__file__, config, bg, dtype)
    for k, trainer in enumerate(trainers):
        plot_metrics(trainer.history, out / ("training.png" if len(trainers) == 1 else f"training_state{k}.png"))
    results = {
        "system": str(system if system is not None else module.__file__),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {device}",
        "world_size": ctx.world_size,
        "train_frames": len(x_train),
        "heldout_frames": len(x_test),
        "steps": sum(tr.step for tr in trainers),
        "skipped_steps": sum(tr.n_skipped for tr in trainers),
        "resumed": resume,
        "train_wall_s": round(wall, 1),
        "train_cpu_s": round(cpu, 1),
        "heldout_nll": nll,
        **({"state_calibration": calibration} if calibration else {}),
        "config": config,
    }
    (out / "train.json").write_text(json.dumps(results, indent=2) + "\n")
    if evaluate:
        ev = config["evaluate"]  # the model in memory is the one just saved: no reload from model.pt
        path = write_samples(module, bg, ev["samples"], out / "samples.npz", ev["batch_size"])
        results["reweighting"] = reweight(path, out)
        (out / "train.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def _fit(bg, data: torch.Tensor, t: dict[str, Any], kl_target, out: Path, tag: str, progress: bool, resume: bool):
    """Run :func:`ml_then_kl` with the ``train`` settings ``t`` on ``bg``, checkpointing to
    ``out/checkpoint<tag>.pt``; with ``resume`` continue from that checkpoint. Returns the trainer."""
    methods = {"ml_kl": "total", "path_kl": "path"}
    if t["method"] not in methods:
        raise ValueError(f"train.method must be one of {sorted(methods)}, got {t['method']!r}")
    log_path, checkpoint = out / f"metrics{tag}.jsonl", out / f"checkpoint{tag}.pt"
    total = t["ml_steps"] + t["kl_steps"]
    if not (resume and checkpoint.is_file()) and is_main_process():
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
        kl_gradient=methods[t["method"]],
        log_path=log_path,
        log_every=10,
        seed=t["seed"],
        progress=progress,
        checkpoint_path=checkpoint,
        checkpoint_every=t["checkpoint_every"],
        config={"train": t},
    )
    if resume and checkpoint.is_file():
        trainer.load_checkpoint(checkpoint)
    trainer.train(total - trainer.step)
    return trainer
