"""Find and import a physical system's module ``systems/<name>/system.py`` by name, folder, module or config path.

A system is assembled from the package's parts and never special-cased inside them (see ``systems/README.md``).
Where the shipped systems live (:func:`systems_dir`): ``$BGFLOW_SCI_SYSTEMS`` if set; else the ``systems/`` folder of
a source checkout beside the package (``pip install -e .``); else the copy bundled into an installed wheel
(``bgflow_sci/_bundle/systems``, with the shipped ``data/`` beside it as ``_bundle/data``, so that a system's
``Path(__file__).parents[1] / "data"`` finds its data in both layouts). A path to any folder with a ``system.py``
works everywhere.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

_PACKAGE = Path(__file__).resolve().parents[1]
_CHECKOUT_SYSTEMS = _PACKAGE.parent / "systems"
_BUNDLED_SYSTEMS = _PACKAGE / "_bundle" / "systems"


def systems_dir() -> Path:
    """The folder of the shipped systems: ``$BGFLOW_SCI_SYSTEMS``, a source checkout's ``systems/``, or the wheel's."""
    env = os.environ.get("BGFLOW_SCI_SYSTEMS")
    if env:
        return Path(env).expanduser().resolve()
    if (_CHECKOUT_SYSTEMS / "README.md").is_file() and (_PACKAGE.parent / "pyproject.toml").is_file():
        return _CHECKOUT_SYSTEMS
    return _BUNDLED_SYSTEMS


SYSTEMS_DIR = systems_dir()


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


def system_reference(name_or_path: str | Path, relative_to: Path | None = None) -> dict[str, str]:
    """How a checkpoint records its system: ``{"name": ...}`` for a shipped system (found again wherever the
    package is installed), else ``{"path": ...}`` relative to ``relative_to`` (the checkpoint's folder) when given,
    plus the absolute ``"absolute"`` path as a fallback."""
    module = find_system(name_or_path)
    if module.parent.parent == SYSTEMS_DIR.resolve():
        return {"name": module.parent.name}
    ref = {"absolute": str(module.parent)}
    if relative_to is not None:
        ref["path"] = os.path.relpath(module.parent, Path(relative_to).resolve())
    return ref


def resolve_system_reference(ref: dict[str, str], relative_to: Path | None = None) -> Path:
    """The ``system.py`` of a :func:`system_reference` (relative path first, then the absolute one); the error
    lists what was tried."""
    tried = []
    if "name" in ref:
        return find_system(ref["name"])
    candidates = [Path(relative_to) / ref["path"]] if relative_to is not None and "path" in ref else []
    candidates += [Path(ref["absolute"])] if "absolute" in ref else []
    for folder in candidates:
        if (folder / "system.py").is_file():
            return (folder / "system.py").resolve()
        tried.append(str(folder))
    raise FileNotFoundError(f"the system of this checkpoint is not found; tried {tried or ref}")
