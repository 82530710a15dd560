"""Find and import a physical system's module ``systems/<name>/system.py`` by name, folder, module or config path.

The ``systems/`` folder sits beside the package (``Path(bgflow_sci.__file__).parents[1] / "systems"``), outside it:
a system is assembled from the package's parts and never special-cased inside them (see ``systems/README.md``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SYSTEMS_DIR = Path(__file__).resolve().parents[1] / "systems"


def available_systems(root: Path = SYSTEMS_DIR) -> list[str]:
    """Names of the folders in ``root`` that contain a ``system.py``."""
    return sorted(p.parent.name for p in root.glob("*/system.py")) if root.is_dir() else []


def find_system(name_or_path: str | Path, root: Path = SYSTEMS_DIR) -> Path:
    """Path of the ``system.py`` for a system name, its folder, the module itself or a config file in its folder."""
    candidate = Path(name_or_path).expanduser()
    if candidate.is_file():
        module = candidate if candidate.suffix == ".py" else candidate.parent / "system.py"
    elif candidate.is_dir():
        module = candidate / "system.py"
    else:
        module = root / str(name_or_path) / "system.py"
    if not module.is_file():
        names = ", ".join(available_systems(root)) or "none"
        raise FileNotFoundError(
            f"no system {str(name_or_path)!r}: expected a system name in {root} or a path to a system folder, its "
            f"system.py or a config file beside it; available systems: {names}"
        )
    return module.resolve()


def load_system(name_or_path: str | Path, root: Path = SYSTEMS_DIR) -> ModuleType:
    """Import ``systems/<name>/system.py`` (or the module at an explicit path) as ``bgflow_sci_systems.<name>``.

    The module is cached in ``sys.modules``, so repeated loads return the same module object.
    """
    path = find_system(name_or_path, root)
    module_name = f"bgflow_sci_systems.{path.parent.name}"
    module = sys.modules.get(module_name)
    if module is not None and Path(getattr(module, "__file__", "")).resolve() == path:
        return module
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import the system module {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module
