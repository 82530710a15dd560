"""Shared fixtures: ``--device`` (cpu by default, ``--device cuda`` on a GPU) and a float32/float64 ``dtype``."""

from __future__ import annotations

import pytest
import torch

# The suite is many small tensor operations: one intra-op thread is faster for them and immune to the
# OpenMP spin-wait slowdowns seen on shared machines. Set once, before any operation (never toggled).
torch.set_num_threads(1)


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
