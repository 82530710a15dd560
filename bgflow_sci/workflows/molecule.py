"""A molecule given by a config file: topology, force field, nonbonded settings, temperature and MD settings.

A *molecule config* is a JSON file (YAML ``.yaml``/``.yml`` with pyyaml, TOML ``.toml``) holding a ``topology`` key;
:func:`load_molecule` reads and validates it and builds the OpenMM system. Keys (relative paths resolve against the
config file's folder; keys starting with ``_`` are comments and ignored):

``name``
    str, default: the config file's stem (its folder's name for ``config.json``).
``topology``
    a structure file (``.pdb``, ``.cif``/``.pdbx``), or ``{"prmtop", "inpcrd"}`` (Amber), or ``{"top", "gro"}``
    (GROMACS, optional ``"include_dir"``), or ``{"system_xml", "pdb"}`` (an OpenMM ``XmlSerializer`` System plus
    a PDB of the same atoms, used as is).
``forcefield``
    list of OpenMM force-field files (``["amber14-all.xml", "implicit/obc2.xml"]``; a file beside the config
    wins over OpenMM's own of the same name); required with a structure file, not allowed otherwise.
``nonbonded``
    ``method`` (OpenMM name: ``NoCutoff``, ``CutoffNonPeriodic``, ``CutoffPeriodic``, ``Ewald``, ``PME``, ``LJPME``;
    default ``PME`` when the topology has a box, else ``NoCutoff``), ``cutoff_nm`` (1.0), ``switch_nm`` (null),
    ``box_nm`` (null: the file's box; a number, three edges or three vectors), ``constraints`` (null,
    ``HBonds``, ``AllBonds``, ``HAngles``), ``rigid_water`` (false), ``ewald_error_tolerance`` (0.0005),
    ``remove_cm_motion`` (true); Amber only: ``implicit_solvent`` (null, ``HCT``, ``OBC1``, ``OBC2``, ``GBn``,
    ``GBn2``), ``implicit_solvent_salt_molar`` (0), ``solute_dielectric`` (1), ``solvent_dielectric`` (78.5).
    Not allowed with ``system_xml``.
``temperature``
    K, default 300.
``md``
    :data:`MD_DEFAULTS` (reference MD of ``bgflow-sci md`` / ``bgflow-sci train`` without ``trajectories``).
``trajectories``, ``collective_variables``, ``free_energy_regions``, ``states``, ``model``, ``train``, ``evaluate``
    read by :mod:`bgflow_sci.workflows.config_system`; checked here only for their container type.

Every bad input raises ``ValueError`` / ``FileNotFoundError`` naming the config file and the key.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "KNOWN_KEYS",
    "MD_DEFAULTS",
    "NONBONDED_DEFAULTS",
    "Molecule",
    "is_molecule_config",
    "load_molecule",
    "read_config_file",
]

CONFIG_SUFFIXES = (".json", ".yaml", ".yml", ".toml")
STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".pdbx")

#: top-level keys of a molecule config and the container type each must have
KNOWN_KEYS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "description": str,
    "topology": (str, dict),
    "forcefield": (list, str),
    "nonbonded": dict,
    "temperature": (int, float),
    "md": dict,
    "trajectories": (str, list, dict),
    "collective_variables": (dict, str),
    "free_energy_regions": dict,
    "states": dict,
    "model": dict,
    "train": dict,
    "evaluate": dict,
}

#: ``md`` settings: simulated time per replica (ns), frame interval (ps), independent replicas, seed, OpenMM
#: platform (None: chosen by ``bgflow-sci md``), Langevin time step (fs) and friction (1/ps), output folder
#: (relative to the config's folder), equilibration before the first frame (ps; minimised first)
MD_DEFAULTS: dict[str, Any] = {
    "ns": 10.0,
    "frame_ps": 1.0,
    "replicas": 1,
    "seed": 0,
    "platform": None,
    "timestep_fs": 1.0,
    "friction_per_ps": 1.0,
    "out": "md",
    "equilibration_ps": 10.0,
}

NONBONDED_DEFAULTS: dict[str, Any] = {
    "method": None,  # None: PME with a box, else NoCutoff
    "cutoff_nm": 1.0,
    "switch_nm": None,
    "box_nm": None,
    "constraints": None,
    "rigid_water": False,
    "ewald_error_tolerance": 0.0005,
    "remove_cm_motion": True,
    "implicit_solvent": None,
    "implicit_solvent_salt_molar": 0.0,
    "solute_dielectric": 1.0,
    "solvent_dielectric": 78.5,
}
_AMBER_ONLY = ("implicit_solvent", "implicit_solvent_salt_molar", "solute_dielectric", "solvent_dielectric")
_METHODS = ("NoCutoff", "CutoffNonPeriodic", "CutoffPeriodic", "Ewald", "PME", "LJPME")
_PERIODIC = ("CutoffPeriodic", "Ewald", "PME", "LJPME")
_CONSTRAINTS = ("HBonds", "AllBonds", "HAngles")
_IMPLICIT = ("HCT", "OBC1", "OBC2", "GBn", "GBn2")
_TOPOLOGY_FORMS = {
    "amber": ("prmtop", "inpcrd"),
    "gromacs": ("top", "gro"),
    "openmm": ("system_xml", "pdb"),
}


@dataclass
class Molecule:
    """A molecule read from a config file (:func:`load_molecule`).

    ``system`` has no constraints and flexible water unless ``nonbonded`` asks otherwise; ``positions`` are
    ``(n_atoms, 3)`` nm (float64) from the topology file; ``md`` holds :data:`MD_DEFAULTS` merged with the config's
    ``md`` section, ``out`` resolved to an absolute path.
    """

    name: str
    config_path: Path
    config: dict
    topology: Any  # openmm.app.Topology
    system: Any  # openmm.System
    positions: np.ndarray
    temperature: float
    md: dict
    _mdtraj_topology: Any = field(default=None, repr=False, compare=False)

    @property
    def n_atoms(self) -> int:
        return int(self.system.getNumParticles())

    def mdtraj_topology(self):
        """The topology as an ``mdtraj.Topology`` (same atom order; bonds from the OpenMM topology)."""
        if self._mdtraj_topology is None:
            import mdtraj

            self._mdtraj_topology = mdtraj.Topology.from_openmm(self.topology)
        return self._mdtraj_topology

    def resolve(self, relative: str | os.PathLike) -> Path:
        """``relative`` (``~`` expanded) against the config file's folder; absolute paths stay as they are."""
        return (self.config_path.parent / Path(relative).expanduser()).resolve()


def _fail(config_path: Path, key: str, message: str) -> ValueError:
    return ValueError(f"{config_path}: key {key!r}: {message}")


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping in a ``.json`` / ``.yaml`` / ``.yml`` / ``.toml`` file; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no config file {str(path)!r}")
    suffix = path.suffix.lower()
    if suffix not in CONFIG_SUFFIXES:
        raise ValueError(f"config file {str(path)!r}: unknown format {suffix!r}; use one of {CONFIG_SUFFIXES}")
    text = path.read_text()
    try:
        if suffix == ".json":
            value = json.loads(text)
        elif suffix == ".toml":
            import tomllib

            value = tomllib.loads(text)
        else:
            try:
                import yaml
            except ImportError as err:
                raise ValueError(f"config file {str(path)!r}: reading YAML needs pyyaml (pip install pyyaml)") from err
            value = yaml.safe_load(text)
    except ValueError as err:
        if str(path) in str(err):
            raise
        raise ValueError(f"config file {str(path)!r} cannot be parsed: {err}") from err
    except Exception as err:  # yaml.YAMLError and friends
        raise ValueError(f"config file {str(path)!r} cannot be parsed: {err}") from err
    if not isinstance(value, dict):
        raise ValueError(f"config file {str(path)!r} must hold a mapping, got {type(value).__name__}")
    return value


def is_molecule_config(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a readable config file (:data:`CONFIG_SUFFIXES`) holding a ``topology`` key."""
    path = Path(path)
    if not path.is_file() or path.suffix.lower() not in CONFIG_SUFFIXES:
        return False
    try:
        return "topology" in read_config_file(path)
    except (ValueError, OSError):
        return False


def _check_types(config: dict[str, Any], config_path: Path) -> None:
    unknown = sorted(k for k in config if k not in KNOWN_KEYS and not str(k).startswith("_"))
    if unknown:
        raise _fail(config_path, unknown[0], f"unknown key(s) {unknown}; known keys: {sorted(KNOWN_KEYS)}")
    for key, types in KNOWN_KEYS.items():
        if key in config and config[key] is not None:
            value = config[key]
            if not isinstance(value, types) or isinstance(value, bool):
                names = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
                raise _fail(config_path, key, f"must be {names}, got {type(value).__name__} {value!r}")


def _section(config: dict[str, Any], key: str, defaults: dict[str, Any], config_path: Path) -> dict[str, Any]:
    given = config.get(key) or {}
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise _fail(config_path, key, f"unknown setting(s) {unknown}; known: {sorted(defaults)}")
    merged = copy.deepcopy(defaults)
    merged.update(copy.deepcopy(given))
    return merged


def _existing_file(config_path: Path, key: str, value: Any) -> Path:
    if not isinstance(value, str | os.PathLike) or not str(value):
        raise _fail(config_path, key, f"must be a file path, got {value!r}")
    path = (config_path.parent / Path(value).expanduser()).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{config_path}: key {key!r}: no file {str(path)!r}")
    return path


def _number(config_path: Path, key: str, value: Any, positive: bool = True, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise _fail(config_path, key, f"must be a number, got {value!r}")
    if positive and value <= 0:
        raise _fail(config_path, key, f"must be positive, got {value!r}")
    return float(value)


def _box_vectors(config_path: Path, value: Any):
    """``box_nm``: a number (cube), three edges (rectangular) or a 3x3 matrix of box vectors (rows), in nm."""
    from openmm import Vec3, unit

    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.asarray([])
    if arr.shape == ():
        arr = np.eye(3) * float(arr)
    elif arr.shape == (3,):
        arr = np.diag(arr)
    if arr.shape != (3, 3) or not np.isfinite(arr).all() or np.any(np.diag(arr) <= 0):
        raise _fail(
            config_path, "nonbonded.box_nm", f"must be a positive number, three edges or three vectors, got {value!r}"
        )
    return [Vec3(*row) for row in arr.tolist()] * unit.nanometer


def _choice(config_path: Path, key: str, value: Any, options: tuple[str, ...], allow_none: bool = True):
    if value is None and allow_none:
        return None
    if value not in options:
        raise _fail(
            config_path, key, f"must be one of {list(options)}{' or null' if allow_none else ''}, got {value!r}"
        )
    return value


def _topology_form(config_path: Path, topology: Any) -> tuple[str, dict[str, Path]]:
    """``("structure"|"amber"|"gromacs"|"openmm", {role: path})`` of the ``topology`` key."""
    if isinstance(topology, str):
        path = _existing_file(config_path, "topology", topology)
        if path.suffix.lower() not in STRUCTURE_SUFFIXES:
            raise _fail(
                config_path,
                "topology",
                f"{str(path)!r} is not a structure file {STRUCTURE_SUFFIXES}; give Amber/GROMACS/OpenMM inputs as "
                '{"prmtop", "inpcrd"}, {"top", "gro"} or {"system_xml", "pdb"}',
            )
        return "structure", {"structure": path}
    keys = set(topology)
    for form, required in _TOPOLOGY_FORMS.items():
        allowed = set(required) | ({"include_dir"} if form == "gromacs" else set())
        if set(required) <= keys:
            extra = sorted(keys - allowed)
            if extra:
                raise _fail(
                    config_path, "topology", f"unknown key(s) {extra} for {form} input; known: {sorted(allowed)}"
                )
            files = {role: _existing_file(config_path, f"topology.{role}", topology[role]) for role in required}
            if "include_dir" in topology:
                inc = (config_path.parent / Path(str(topology["include_dir"])).expanduser()).resolve()
                if not inc.is_dir():
                    raise FileNotFoundError(f"{config_path}: key 'topology.include_dir': no folder {str(inc)!r}")
                files["include_dir"] = inc
            return form, files
    forms = ", ".join("{" + ", ".join(repr(k) for k in r) + "}" for r in _TOPOLOGY_FORMS.values())
    raise _fail(config_path, "topology", f"must be a structure file path or one of {forms}; got keys {sorted(keys)}")


def _positions_nm(positions) -> np.ndarray:
    from openmm import unit

    if hasattr(positions, "value_in_unit"):
        positions = positions.value_in_unit(unit.nanometer)
    return np.asarray([[c.x, c.y, c.z] if hasattr(c, "x") else list(c) for c in positions], dtype=np.float64)


def _forcefield_files(config_path: Path, value: Any) -> list[str]:
    files = [value] if isinstance(value, str) else value
    if not files or not all(isinstance(f, str) and f for f in files):
        raise _fail(config_path, "forcefield", f"must be a non-empty list of force-field file names, got {value!r}")
    out = []
    for name in files:  # a file beside the config wins over OpenMM's own of the same name
        local = (config_path.parent / Path(name).expanduser()).resolve()
        out.append(str(local) if local.is_file() else name)
    return out


def _build_system(config: dict[str, Any], config_path: Path):
    """``(topology, system, positions)`` for the ``topology``/``forcefield``/``nonbonded`` keys."""
    from openmm import XmlSerializer, app, unit

    if "topology" not in config:
        raise _fail(config_path, "topology", "missing: give a PDB file or Amber/GROMACS/OpenMM inputs")
    form, files = _topology_form(config_path, config["topology"])
    has_ff = config.get("forcefield") is not None
    if form == "structure" and not has_ff:
        raise _fail(
            config_path, "forcefield", 'missing: a structure file needs force-field files, e.g. ["amber14-all.xml"]'
        )
    if form != "structure" and has_ff:
        raise _fail(config_path, "forcefield", f"not used with {form} input (the force field is in its files); drop it")
    if form == "openmm":
        if config.get("nonbonded"):
            raise _fail(config_path, "nonbonded", "not used with a serialized system (system_xml): it is used as is")
        pdb = _read_structure(config_path, "topology.pdb", files["pdb"])
        try:
            system = XmlSerializer.deserialize(files["system_xml"].read_text())
        except Exception as err:
            raise _fail(config_path, "topology.system_xml", f"cannot read {str(files['system_xml'])!r}: {err}") from err
        if not hasattr(system, "getNumParticles"):
            raise _fail(config_path, "topology.system_xml", f"{str(files['system_xml'])!r} holds no OpenMM System")
        if system.getNumParticles() != pdb.topology.getNumAtoms():
            raise _fail(
                config_path,
                "topology",
                f"the system {str(files['system_xml'])!r} has {system.getNumParticles()} particles but the PDB "
                f"{str(files['pdb'])!r} has {pdb.topology.getNumAtoms()} atoms",
            )
        return pdb.topology, system, _positions_nm(pdb.getPositions())

    nb = _section(config, "nonbonded", NONBONDED_DEFAULTS, config_path)
    if form != "amber":
        given = [k for k in _AMBER_ONLY if (config.get("nonbonded") or {}).get(k) is not None]
        if given:
            raise _fail(config_path, "nonbonded", f"{given} apply only to Amber (prmtop) input")
    if form == "structure":
        structure = _read_structure(config_path, "topology", files["structure"])
        topology, positions = structure.topology, structure.getPositions()
    elif form == "amber":
        try:
            prmtop = app.AmberPrmtopFile(str(files["prmtop"]))
        except Exception as err:
            raise _fail(config_path, "topology.prmtop", f"cannot read {str(files['prmtop'])!r}: {err}") from err
        try:
            inpcrd = app.AmberInpcrdFile(str(files["inpcrd"]))
        except Exception as err:
            raise _fail(config_path, "topology.inpcrd", f"cannot read {str(files['inpcrd'])!r}: {err}") from err
        topology, positions = prmtop.topology, inpcrd.getPositions()
        if inpcrd.boxVectors is not None:
            topology.setPeriodicBoxVectors(inpcrd.boxVectors)
    else:
        try:
            gro = app.GromacsGroFile(str(files["gro"]))
        except Exception as err:
            raise _fail(config_path, "topology.gro", f"cannot read {str(files['gro'])!r}: {err}") from err
        box = gro.getPeriodicBoxVectors()
        include = str(files["include_dir"]) if "include_dir" in files else None
        try:
            top = app.GromacsTopFile(str(files["top"]), periodicBoxVectors=box, includeDir=include)
        except Exception as err:
            raise _fail(config_path, "topology.top", f"cannot read {str(files['top'])!r}: {err}") from err
        topology, positions = top.topology, gro.getPositions()
    positions = _positions_nm(positions)
    if len(positions) != topology.getNumAtoms():
        raise _fail(
            config_path,
            "topology",
            f"the coordinates have {len(positions)} atoms but the topology {topology.getNumAtoms()}",
        )

    if nb["box_nm"] is not None:
        topology.setPeriodicBoxVectors(_box_vectors(config_path, nb["box_nm"]))
    periodic_box = topology.getPeriodicBoxVectors()
    method = _choice(config_path, "nonbonded.method", nb["method"], _METHODS)
    method = method or ("PME" if periodic_box is not None else "NoCutoff")
    if method in _PERIODIC and periodic_box is None:
        raise _fail(config_path, "nonbonded.method", f"{method} needs a periodic box: set nonbonded.box_nm")
    constraints = _choice(config_path, "nonbonded.constraints", nb["constraints"], _CONSTRAINTS)
    if not isinstance(nb["rigid_water"], bool) or not isinstance(nb["remove_cm_motion"], bool):
        raise _fail(config_path, "nonbonded", "rigid_water and remove_cm_motion must be true or false")
    cutoff = _number(config_path, "nonbonded.cutoff_nm", nb["cutoff_nm"])
    switch = _number(config_path, "nonbonded.switch_nm", nb["switch_nm"], allow_none=True)
    if switch is not None and switch >= cutoff:
        raise _fail(config_path, "nonbonded.switch_nm", f"must be below cutoff_nm = {cutoff}, got {switch}")
    if method in _PERIODIC:
        vectors = np.array([[float(c) for c in _nm(v)] for v in periodic_box])
        # the width of a reduced box along each axis is its diagonal element; OpenMM needs cutoff <= width / 2
        half_width = 0.5 * float(np.min(np.diag(vectors)))
        if cutoff > half_width:
            raise _fail(
                config_path,
                "nonbonded.cutoff_nm",
                f"{cutoff} nm is more than half the periodic box width ({half_width:.4g} nm) of the topology or "
                "nonbonded.box_nm: enlarge the box, shorten the cutoff, or for a molecule in vacuum set "
                'nonbonded.method to "NoCutoff"',
            )
    kwargs: dict[str, Any] = {
        "nonbondedMethod": getattr(app, method),
        "nonbondedCutoff": cutoff * unit.nanometer,
        "constraints": None if constraints is None else getattr(app, constraints),
        "rigidWater": nb["rigid_water"],
        "ewaldErrorTolerance": _number(config_path, "nonbonded.ewald_error_tolerance", nb["ewald_error_tolerance"]),
        "removeCMMotion": nb["remove_cm_motion"],
    }
    if form == "structure":
        if switch is not None:
            kwargs.update(switchDistance=switch * unit.nanometer)
        ff_files = _forcefield_files(config_path, config["forcefield"])
        try:
            forcefield = app.ForceField(*ff_files)
        except Exception as err:
            raise _fail(config_path, "forcefield", f"cannot load the force-field files {ff_files}: {err}") from err
        try:
            system = forcefield.createSystem(topology, **kwargs)
        except Exception as err:
            raise _fail(
                config_path,
                "forcefield",
                f"{ff_files} cannot build a system for the topology {str(files['structure'])!r}: {err}",
            ) from err
        return topology, system, positions

    if switch is not None:
        kwargs.update(switchDistance=switch * unit.nanometer)
    source = files["prmtop"] if form == "amber" else files["top"]
    if form == "amber":
        implicit = _choice(config_path, "nonbonded.implicit_solvent", nb["implicit_solvent"], _IMPLICIT)
        kwargs.update(
            implicitSolvent=None if implicit is None else getattr(app, implicit),
            implicitSolventSaltConc=_number(
                config_path, "nonbonded.implicit_solvent_salt_molar", nb["implicit_solvent_salt_molar"], positive=False
            )
            * unit.molar,
            soluteDielectric=_number(config_path, "nonbonded.solute_dielectric", nb["solute_dielectric"]),
            solventDielectric=_number(config_path, "nonbonded.solvent_dielectric", nb["solvent_dielectric"]),
            temperature=_temperature(config, config_path) * unit.kelvin,
        )
        builder = prmtop
    else:
        builder = top
    try:
        system = builder.createSystem(**kwargs)
    except Exception as err:
        raise _fail(config_path, "topology", f"cannot build a system from {str(source)!r}: {err}") from err
    if periodic_box is not None and method in _PERIODIC:
        system.setDefaultPeriodicBoxVectors(*periodic_box)
    return topology, system, positions


def _nm(vector) -> list[float]:
    """One OpenMM box vector (a ``Quantity`` or plain numbers in nm) as three floats in nm."""
    from openmm import unit

    if unit.is_quantity(vector):
        vector = vector.value_in_unit(unit.nanometer)
    return [float(c) for c in vector]


def _read_structure(config_path: Path, key: str, path: Path):
    from openmm import app

    try:
        return app.PDBxFile(str(path)) if path.suffix.lower() in (".cif", ".pdbx") else app.PDBFile(str(path))
    except Exception as err:
        raise _fail(config_path, key, f"cannot read the structure {str(path)!r}: {err}") from err


def _temperature(config: dict[str, Any], config_path: Path) -> float:
    return _number(config_path, "temperature", config.get("temperature", 300.0))


def _md_settings(config: dict[str, Any], config_path: Path) -> dict[str, Any]:
    md = _section(config, "md", MD_DEFAULTS, config_path)
    for key in ("ns", "frame_ps", "timestep_fs", "friction_per_ps"):
        md[key] = _number(config_path, f"md.{key}", md[key])
    md["equilibration_ps"] = _number(config_path, "md.equilibration_ps", md["equilibration_ps"], positive=False)
    if md["equilibration_ps"] < 0:
        raise _fail(config_path, "md.equilibration_ps", f"must be non-negative, got {md['equilibration_ps']}")
    for key in ("replicas", "seed"):
        if isinstance(md[key], bool) or not isinstance(md[key], int) or md[key] < (1 if key == "replicas" else 0):
            raise _fail(
                config_path,
                f"md.{key}",
                f"must be a {'positive' if key == 'replicas' else 'non-negative'} integer, got {md[key]!r}",
            )
    if md["platform"] is not None and not isinstance(md["platform"], str):
        raise _fail(config_path, "md.platform", f"must be an OpenMM platform name or null, got {md['platform']!r}")
    if not isinstance(md["out"], str | os.PathLike):
        raise _fail(config_path, "md.out", f"must be a folder path, got {md['out']!r}")
    md["out"] = (config_path.parent / Path(md["out"]).expanduser()).resolve()
    return md


def _default_name(config_path: Path) -> str:
    return config_path.parent.name if config_path.stem == "config" else config_path.stem


def load_molecule(path: str | os.PathLike) -> Molecule:
    """Read, validate and build the molecule of a config file (see the module docstring for the keys)."""
    config_path = Path(path).expanduser().resolve()
    config = read_config_file(config_path)
    _check_types(config, config_path)
    name = config.get("name") or _default_name(config_path)
    temperature = _temperature(config, config_path)
    md = _md_settings(config, config_path)
    topology, system, positions = _build_system(config, config_path)
    return Molecule(
        name=str(name),
        config_path=config_path,
        config=config,
        topology=topology,
        system=system,
        positions=positions,
        temperature=temperature,
        md=md,
    )
