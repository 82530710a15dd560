"""Draw importance-weighted samples from a trained model (``bgflow-sci sample``) and write them to disk.

The ``.npz`` holds ``x`` ``(n, dim)`` (float32; nm for molecules), ``log_w`` ``(n,)`` (float64, ``-inf`` for
invalid samples), and as JSON strings the ``system`` reference (name, or folder relative to the file) and the
``config`` of the model, so that :func:`~bgflow_sci.workflows.reweight.reweight` needs neither the checkpoint nor
the training data, and the folder can be moved. Systems with a ``write_trajectory(x, path)`` hook also get a
trajectory (e.g. ``.dcd``) and ``<stem>_log_weights.npy`` beside it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .models import load_model
from .systems import system_reference

__all__ = ["read_samples", "sample", "write_samples"]


def sample(
    checkpoint: str | os.PathLike,
    n: int,
    out: str | os.PathLike,
    device: torch.device | str = "cpu",
    batch_size: int | None = None,
) -> Path:
    """Draw ``n`` samples with log weights from ``checkpoint`` (a ``model.pt``); write ``out`` (``.npz``)."""
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    module, config, bg = load_model(checkpoint, device)
    return write_samples(module, bg, n, out, batch_size or config["evaluate"]["batch_size"], config)


def write_samples(module, bg, n: int, out: str | os.PathLike, batch_size: int, config: dict | None = None) -> Path:
    """``bg.sample_with_log_weights(n)`` written to ``out`` (``.npz``, + trajectory); returns the ``.npz`` path."""
    x, log_w = bg.sample_with_log_weights(n, batch_size=batch_size)
    out = Path(out).with_suffix(".npz")
    out.parent.mkdir(parents=True, exist_ok=True)
    x_np, lw_np = x.detach().cpu().numpy().astype(np.float32), log_w.detach().cpu().double().numpy()
    system = json.dumps(system_reference(module.__file__, relative_to=out.parent))
    config = json.dumps(config if config is not None else getattr(module, "CONFIG", {}))
    np.savez_compressed(out, x=x_np, log_w=lw_np, system=system, config=config)
    if hasattr(module, "write_trajectory"):
        module.write_trajectory(x_np, out.with_suffix(""))
        np.save(out.with_name(out.stem + "_log_weights.npy"), lw_np)
    return out


def read_samples(path: str | os.PathLike) -> dict[str, Any]:
    """``{"x", "log_w", "system", "config"}`` of a samples file; errors name the file and the missing key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no samples file {str(path)!r}: write one with `bgflow-sci sample MODEL -n N --out FILE`"
        )
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ("x", "log_w", "system", "config") if k not in f.files]
            if missing:
                raise ValueError(f"samples file {str(path)!r} lacks {missing} (written by `bgflow-sci sample`?)")
            return {
                "x": f["x"],
                "log_w": torch.as_tensor(f["log_w"]),
                "system": json.loads(str(f["system"])),
                "config": json.loads(str(f["config"])),
            }
    except (OSError, EOFError) as err:
        raise ValueError(f"cannot read samples file {str(path)!r}: {err}") from err
