"""Options and conversions shared by the ``bgflow-sci`` command modules."""

from __future__ import annotations

import argparse

import torch

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def device(name: str) -> torch.device:
    """``--device`` as a torch device; a CUDA device on a machine without CUDA is a usage error."""
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {name} asked for, but CUDA is not available on this machine")
    return dev


def add_runtime_options(p: argparse.ArgumentParser, threads: int | None = None) -> None:
    """``--device`` and ``--threads`` (default: ``threads``, or torch's current count)."""
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 ... (default: cpu)")
    default = threads if threads is not None else max(1, torch.get_num_threads())
    p.add_argument("--threads", type=int, default=default, help=f"torch CPU threads (default {default})")


def set_threads(n: int) -> None:
    if n > 0:
        torch.set_num_threads(n)


def print_json(value) -> None:
    import json

    print(json.dumps(value, indent=2, default=str))
