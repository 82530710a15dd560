"""A trained Boltzmann generator on disk: ``model.pt`` in the one checkpoint format (:mod:`bgflow_sci.io`).

The file holds the system (its name, or its folder relative to the checkpoint), the merged config, the dtype, the
weights, and the statistics the model was built from (``bg.build_statistics``, e.g. internal-coordinate means and
the tight/loose torsion split of :mod:`bgflow_sci.molecular`), so that :func:`load_model` rebuilds the generator
without the training data and after the output folder was moved. A system whose builder records no statistics is
rebuilt from its training data, as before.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import torch

from ..io import CheckpointError, load_checkpoint, save_checkpoint
from .config import system_config
from .systems import load_system, resolve_system_reference, system_reference

KIND = "boltzmann_generator"


def save_model(path: str | os.PathLike, system: str | os.PathLike, config: dict[str, Any], bg, dtype) -> Path:
    """Write ``bg`` (a BoltzmannGenerator or StateMixture of ``system``) with its config to ``path``."""
    path = Path(path)
    payload = {
        "system": system_reference(system, relative_to=path.parent),
        "config": config,
        "dtype": str(dtype).removeprefix("torch."),
        "statistics": getattr(bg, "build_statistics", None),
        "state_dict": bg.state_dict(),
    }
    return save_checkpoint(path, KIND, payload)


def build_model(module, config: dict[str, Any], data: torch.Tensor | None, statistics: dict | None = None):
    """``module.make_boltzmann_generator(config, data)``, or with ``statistics=`` (and no data) where both the
    builder accepts it and statistics were recorded."""
    builder = module.make_boltzmann_generator
    if statistics is not None and "statistics" in inspect.signature(builder).parameters:
        return builder(config, None, statistics=statistics)
    if data is None:
        raise ValueError(f"{module.__file__}: make_boltzmann_generator needs training data (no statistics stored)")
    return builder(config, data)


def load_model(checkpoint: str | os.PathLike, device: torch.device | str = "cpu"):
    """``(module, config, bg)`` from a ``model.pt`` written by :func:`save_model` (``bgflow-sci train``).

    Errors name the file: missing (``FileNotFoundError``), corrupt or foreign (:class:`~bgflow_sci.io.CheckpointError`).
    """
    from .train import build_training_split

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(
            f"no checkpoint {str(checkpoint)!r}: write one with `bgflow-sci train SYSTEM --out DIR`"
        )
    state = load_checkpoint(checkpoint, KIND)
    module = load_system(resolve_system_reference(state["system"], checkpoint.parent))
    dtype = getattr(torch, state["dtype"])
    config = system_config(module, None, state["config"])
    statistics = state.get("statistics")
    if statistics is not None:
        bg = build_model(module, config, None, statistics)
    else:
        bg = build_training_split(module, config, torch.device("cpu"), dtype)[0]
    try:
        bg.load_state_dict(state["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(f"{str(checkpoint)!r} does not fit the model its system builds: {err}") from err
    return module, config, bg.to(device=torch.device(device), dtype=dtype).eval()
