"""Shared fixtures: ``--device`` (cpu by default, ``--device cuda`` on a GPU) and a float32/float64 ``dtype``;
``require(name)`` for optional oracle packages and ``skip_or_fail(reason)`` for anything else a test needs (both skip
locally, and fail when the environment variable ``CI`` is set)."""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest
import torch

# The suite is many small tensor operations: one intra-op thread is faster for them and immune to the
# OpenMP spin-wait slowdowns seen on shared machines. Set once, before any operation (never toggled).
torch.set_num_threads(1)
# TorchForceField compiles itself for batches >= 1024 (compile="auto"); tests assert correctness, and a compilation
# (tens of seconds to minutes per process) would dominate the suite's time: the eager path here and in the CLI
# subprocesses the tests start. The compiled path is checked against eager by benchmarks/energies.py.
os.environ.setdefault("BGFLOW_SCI_COMPILE", "0")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu", help="torch device to run the tests on (cpu, cuda, cuda:1, ...)")


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> torch.device:
    dev = torch.device(request.config.getoption("--device"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("--device cuda asked for, but CUDA is not available")
    return dev


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    return request.param


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    """Default ``torch.testing.assert_close`` tolerances for a dtype."""
    return {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 1e-9, "rtol": 1e-9}


def in_ci() -> bool:
    """True when the environment variable ``CI`` is set to anything but an empty string, ``0`` or ``false``."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the test (or, at module level, the module) locally; fail it when ``CI`` is set, where nothing a test
    needs (oracle packages, shipped data) may be missing."""
    if in_ci():
        pytest.fail(f"{reason} (a failure, not a skip, because CI is set)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require(name: str) -> ModuleType:
    """Import and return the module ``name`` (an oracle or optional dependency of a test).

    When it cannot be imported the test (or, called at module level, the whole module) is skipped locally, but fails
    when ``CI`` is set: in CI every oracle must be installed, and a missing one must never pass as "skipped".
    """
    try:
        return importlib.import_module(name)
    except ImportError as err:
        skip_or_fail(f"{name} cannot be imported ({type(err).__name__}: {err})")
