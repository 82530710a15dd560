"""Run settings of a system: the defaults, the system's ``config.json``, a user file and ``--set`` overrides.

Sections: ``model`` (read by the system's ``make_boltzmann_generator``), ``train`` (:data:`TRAIN_DEFAULTS`) and
``evaluate`` (:data:`EVALUATE_DEFAULTS`). Later sources win, key by key (:func:`merge_config`); an unknown ``train``
key is an error that lists the known ones.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

TRAIN_DEFAULTS: dict[str, Any] = {
    # "ml_kl": maximum likelihood, then reverse KL (standard gradient); "path_kl": the same with the path-gradient
    # reverse KL (ReverseKL(gradient="path"))
    "method": "ml_kl",
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
    # write a resumable checkpoint every this many training steps (`bgflow-sci train --resume` continues from it)
    "checkpoint_every": 500,
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


def system_config(module, config_path: str | os.PathLike | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """The merged settings of a system module (defaults < ``module.CONFIG`` < ``config_path`` < ``overrides``)."""
    for hook in ("make_boltzmann_generator", "training_data"):
        if not hasattr(module, hook):
            raise AttributeError(f"system module {module.__file__} lacks {hook}(); see systems/README.md")
    user = read_json(config_path, "config file") if config_path else {}
    config = merge_config({"train": TRAIN_DEFAULTS, "evaluate": EVALUATE_DEFAULTS}, module.CONFIG, user, overrides)
    per_state = config["train"]["states"] or []  # per-state overrides of the same settings
    for where, settings in [("train", config["train"]), *(("train.states", s) for s in per_state)]:
        unknown = set(settings) - set(TRAIN_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown {where} settings {sorted(unknown)}; known: {sorted(TRAIN_DEFAULTS)}")
    return config


def read_json(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """A JSON object from ``path``; errors name the file (missing, unreadable, not an object)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} {str(path)!r}")
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} {str(path)!r} is not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise ValueError(f"{what} {str(path)!r} must hold a JSON object, got {type(value).__name__}")
    return value
