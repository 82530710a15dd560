"""Find and import a physical system's module ``systems/<name>/system.py`` by name, folder, module or config path.

A system is assembled from the package's parts and never special-cased inside them (see ``systems/README.md``).
Where the shipped systems live (:func:`systems_dir`): ``$BGFLOW_SCI_SYSTEMS`` if set; else the ``systems/`` folder of
a source checkout beside the package (``pip install -e .``); else the copy bundled into an installed wheel
(``bgflow_sci/_bundle/systems``, with the shipped ``data/`` beside it as ``_bundle/data``, so that a system's
``Path(__file__).parents[1] / "data"`` finds its data in both layouts). A path to any folder with a ``system.py``
works everywhere.

A *config system* is a molecule config file with a ``topology`` key (:mod:`~bgflow_sci.workflows.molecule`; JSON,
YAML or TOML), or a folder holding such a ``config.json`` and no ``system.py``: :func:`load_system` returns a
:class:`~bgflow_sci.workflows.config_system.ConfigSystem` for it, which provides the same hooks as a module.
A folder's ``system.py`` wins over its config file.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

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


_CONFIG_NAMES = ("config.json", "config.yaml", "config.yml", "config.toml")
_CONFIG_SYSTEMS: dict[Path, tuple[float, Any]] = {}  # config path -> (mtime, ConfigSystem)


def _folder_system(folder: Path) -> Path | None:
    """A folder's ``system.py``, else its molecule config (``config.json``/``.yaml``/``.yml``/``.toml``), else None."""
    from .molecule import is_molecule_config

    if (folder / "system.py").is_file():
        return folder / "system.py"
    return next((folder / n for n in _CONFIG_NAMES if is_molecule_config(folder / n)), None)


def is_config_system(path: str | os.PathLike) -> bool:
    """Whether a path found by :func:`find_system` is a molecule config (not a ``system.py``)."""
    return Path(path).suffix.lower() != ".py"


def available_systems(root: Path = SYSTEMS_DIR) -> list[str]:
    """Names of the folders in ``root`` that contain a ``system.py`` or a molecule ``config.json``."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _folder_system(p) is not None)


def find_system(name_or_path: str | Path, root: Path = SYSTEMS_DIR) -> Path:
    """Path of the ``system.py`` for a system name, its folder, the module itself or a config file in its folder;
    or of the molecule config file (given directly, or of a folder without ``system.py``)."""
    from .molecule import is_molecule_config

    candidate = Path(name_or_path).expanduser()
    if candidate.is_file():
        if candidate.suffix == ".py":
            module = candidate
        elif (candidate.parent / "system.py").is_file() or not is_molecule_config(candidate):
            module = candidate.parent / "system.py"
        else:
            module = candidate
    elif candidate.is_dir():
        module = _folder_system(candidate) or candidate / "system.py"
    else:
        module = _folder_system(root / str(name_or_path)) or root / str(name_or_path) / "system.py"
    if not module.is_file():
        names = ", ".join(available_systems(root)) or "none"
        raise FileNotFoundError(
            f"no system {str(name_or_path)!r}: expected a system name in {root} or a path to a system folder, its "
            f"system.py, a config file beside it, or a molecule config file (with a 'topology' key); available "
            f"systems: {names}"
        )
    return module.resolve()


def load_system(name_or_path: str | Path, root: Path = SYSTEMS_DIR) -> Any:
    """Import ``systems/<name>/system.py`` (or the module at an explicit path) as ``bgflow_sci_systems.<name>``;
    for a molecule config, its :class:`~bgflow_sci.workflows.config_system.ConfigSystem`.

    Modules are cached in ``sys.modules`` and config systems by path (until the file changes), so repeated loads
    return the same object.
    """
    path = find_system(name_or_path, root)
    if is_config_system(path):
        from .config_system import ConfigSystem

        mtime = path.stat().st_mtime
        cached = _CONFIG_SYSTEMS.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        system = ConfigSystem(path)
        _CONFIG_SYSTEMS[path] = (mtime, system)
        return system
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
    shipped = module.parent.parent == SYSTEMS_DIR.resolve()
    if shipped and (not is_config_system(module) or _folder_system(module.parent) == module):
        return {"name": module.parent.name}
    target = module if is_config_system(module) else module.parent  # a config file itself, a module's folder
    ref = {"absolute": str(target)}
    if relative_to is not None:
        ref["path"] = os.path.relpath(target, Path(relative_to).resolve())
    return ref


def resolve_system_reference(ref: dict[str, str], relative_to: Path | None = None) -> Path:
    """The ``system.py`` of a :func:`system_reference` (relative path first, then the absolute one); the error
    lists what was tried."""
    tried = []
    if "name" in ref:
        return find_system(ref["name"])
    candidates = [Path(relative_to) / ref["path"]] if relative_to is not None and "path" in ref else []
    candidates += [Path(ref["absolute"])] if "absolute" in ref else []
    for candidate in candidates:
        if candidate.is_file():  # a config system's file
            return find_system(candidate)
        found = _folder_system(candidate) if candidate.is_dir() else None
        if found is not None:
            return found.resolve()
        tried.append(str(candidate))
    raise FileNotFoundError(f"the system of this checkpoint is not found; tried {tried or ref}")
