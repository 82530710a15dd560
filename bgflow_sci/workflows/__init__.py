"""The application layer: config-driven runs of the library on files (train, sample, reweight, enhanced MD,
morph, the demo) and system discovery. Besides :mod:`bgflow_sci.io` the only place that knows about files on disk;
the CLI (:mod:`bgflow_sci.cli`) only parses arguments and calls these functions."""

from .config import merge_config, parse_overrides, system_config
from .models import load_model, save_model
from .systems import available_systems, find_system, load_system, systems_dir

__all__ = [
    "available_systems",
    "find_system",
    "load_model",
    "load_system",
    "merge_config",
    "parse_overrides",
    "save_model",
    "system_config",
    "systems_dir",
]
