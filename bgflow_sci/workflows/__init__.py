"""The application layer: config-driven runs of the library on files (train, sample, reweight, enhanced MD,
morph, the demo) and system discovery. Besides :mod:`bgflow_sci.io` the only place that knows about files on disk;
the CLI (:mod:`bgflow_sci.cli`) only parses arguments and calls these functions."""

from .config import merge_config, parse_overrides, system_config
from .config_system import ConfigSystem
from .md import read_md, run_md, run_molecule_md
from .models import load_model, save_model
from .molecule import Molecule, load_molecule
from .systems import available_systems, find_system, load_system, systems_dir

__all__ = [
    "ConfigSystem",
    "Molecule",
    "available_systems",
    "find_system",
    "load_model",
    "load_molecule",
    "load_system",
    "merge_config",
    "parse_overrides",
    "read_md",
    "run_md",
    "run_molecule_md",
    "save_model",
    "system_config",
    "systems_dir",
]
