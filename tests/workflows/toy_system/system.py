"""A system folder the tests ship outside ``systems/``: the 2D double well with a small RealNVP generator.

It exercises the generic hooks of :mod:`bgflow_sci.workflows` (and a system given by path) in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

CONFIG = json.loads((Path(__file__).parent / "config.json").read_text())


def make_boltzmann_generator(config: dict[str, Any], data, statistics=None):
    """Normal prior, RealNVP (``model.n_layers`` couplings), double-well target; ``data`` only sets a shift."""
    from bgflow_sci import BoltzmannGenerator
    from bgflow_sci.distributions import Normal
    from bgflow_sci.energies import DoubleWell2D
    from bgflow_sci.flows import real_nvp

    model = config["model"]
    bg = BoltzmannGenerator(Normal(2), real_nvp(2, model["n_layers"], hidden=tuple(model["hidden"])), DoubleWell2D())
    # a data statistic that the rebuilt model must get back without the data
    mean = statistics["mean"] if statistics is not None else [float(v) for v in data.mean(0)]
    bg.build_statistics = {"mean": mean}
    return bg


def training_data(config: dict[str, Any]) -> np.ndarray:
    from bgflow_sci.energies import DoubleWell2D

    gen = torch.Generator().manual_seed(123)
    return DoubleWell2D().sample_exact(config["data"]["frames"], generator=gen).numpy()


def collective_variables(x: np.ndarray) -> dict[str, np.ndarray]:
    return {"x1": np.asarray(x)[:, 0], "x2": np.asarray(x)[:, 1]}


def free_energy_regions(cvs: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {"wells": (cvs["x1"] < 0, cvs["x1"] >= 0)}
