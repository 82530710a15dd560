"""A system given only by a molecule config file: the system-module hooks of ``systems/README.md`` built from it.

:class:`ConfigSystem` wraps a :class:`~bgflow_sci.workflows.molecule.Molecule` and provides what
:mod:`~bgflow_sci.workflows.train`, :mod:`~bgflow_sci.workflows.sample`, :mod:`~bgflow_sci.workflows.reweight` and
:mod:`~bgflow_sci.workflows.enhanced_md` read from a ``system.py``, so a config file is a system wherever a system
folder is (:func:`~bgflow_sci.workflows.systems.load_system`). Config keys read here (besides those of
:mod:`~bgflow_sci.workflows.molecule`):

``trajectories``
    reference MD frames: a path or glob, a ``{"file", "stride", "start", "selection", "topology"}`` dict, or a list of
    either (one chain per file). Any format mdtraj reads; ``topology`` (default: the config's topology) is read for
    formats without one (DCD, XTC, NetCDF, ...); ``selection`` (an mdtraj selection on the file's topology) picks the
    atoms of the molecule; ``start`` drops leading frames, ``stride`` keeps every k-th. Atom count and order
    (residue, element, heavy-atom name) are checked against the config's topology. Without ``trajectories`` the
    reference MD of the ``md`` section is generated (or reused) by :func:`bgflow_sci.workflows.md.run_molecule_md`.
``collective_variables``
    ``{name: [a1, a2]}`` distance (nm), ``[a1, a2, a3]`` angle (rad), ``[a1, a2, a3, a4]`` torsion (rad); an atom is
    ``"<resSeq>:<atom name>"`` (e.g. ``"2:CA"``, residue number as in the structure file), a 0-based atom index, or an
    mdtraj selection selecting one atom (``"resSeq 2 and name CA"``). ``"backbone"`` (also the default) gives every
    backbone φ and ψ mdtraj finds, named ``phi_<resSeq>`` / ``psi_<resSeq>``; a dict may include
    ``"backbone": true`` to add them to its own.
``free_energy_regions``
    ``{name: {"a": {cv: [lo, hi], ...}, "b": {...}}}``: ΔF = F_B − F_A; a region is the intersection of its CV
    ranges (a list of such dicts: their union). For torsions a range is periodic: ``[lo, hi]`` runs from ``lo``
    counter-clockwise to ``hi``, so ``[2.2, -2.0]`` wraps through π (rad).
``states``
    ``{"torsion": [a1, a2, a3, a4], "boundaries": [b0, b1, ...]}``: a :class:`~bgflow_sci.state_mixture.StateMixture`
    with one generator per arc of that Z-matrix torsion (atoms as above, boundaries in rad on free-energy barriers).
``model``
    ``n_layers``, ``n_bins``, ``hidden``, ``bound``, ``tight_torsion_std`` of
    :func:`~bgflow_sci.molecular.molecular_boltzmann_generator` and ``target``: ``"auto"`` (the batched
    :class:`~bgflow_sci.energies.TorchForceField`, else :class:`~bgflow_sci.energies.OpenMMEnergy` with a warning
    naming the unsupported force), ``"torch"`` or ``"openmm"``.
``evaluate``
    besides :data:`~bgflow_sci.workflows.config.EVALUATE_DEFAULTS`: ``reference_blocks`` (blocks per chain of the
    block bootstrap of the reference MD's profiles and ΔF, default 10).
"""

from __future__ import annotations

import glob
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .config import merge_config
from .molecule import Molecule, load_molecule

__all__ = ["CONFIG_DEFAULTS", "ConfigSystem"]

#: defaults of a config system, below the config file: a small peptide on one CPU core in minutes
CONFIG_DEFAULTS: dict[str, Any] = {
    "model": {
        "n_layers": 6,
        "n_bins": 8,
        "hidden": [128, 128],
        "bound": 5.0,
        "tight_torsion_std": 0.3,
        "target": "auto",
    },
    "train": {
        "ml_steps": 3000,
        "kl_steps": 1000,
        "batch_size": 256,
        "kl_batch_size": 256,
        "lr": 1e-3,
        "schedule": "cosine",
        "final_lr_factor": 0.05,
        "ml_anchor": 0.5,
        "energy_cutoff": 100.0,
    },
    "evaluate": {"samples": 20_000, "batch_size": 5_000, "bins": 36, "n_bootstrap": 100, "reference_blocks": 10},
}
_TRAJECTORY_KEYS = ("file", "stride", "start", "selection", "topology")
_ATOM_SPEC = re.compile(r"^\s*(-?\d+)\s*:\s*(\S+)\s*$")
_KINDS = {2: "distance", 3: "angle", 4: "torsion"}


class ConfigSystem:
    """The system hooks of a molecule config (see the module docstring); ``__file__`` is the config path."""

    def __init__(self, molecule: Molecule | str | os.PathLike):
        self.molecule = molecule if isinstance(molecule, Molecule) else load_molecule(molecule)
        self.__file__ = str(self.molecule.config_path)
        self.__name__ = f"bgflow_sci_config_systems.{self.molecule.name}"
        self.name = self.molecule.name
        self.TEMPERATURE = self.molecule.temperature
        self.CONFIG: dict[str, Any] = merge_config(CONFIG_DEFAULTS, self.molecule.config)
        self._frames_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._targets: dict[str, Any] = {}
        self._cvs = self._parse_collective_variables(self.molecule.config.get("collective_variables", "backbone"))
        self._regions = self._parse_regions(self.molecule.config.get("free_energy_regions") or {})
        self._reference = None
        self.md_progress = True  # progress bar of a reference MD generated on first use (train sets it)

    def __repr__(self) -> str:
        return f"ConfigSystem({self.__file__!r})"

    # ------------------------------------------------------------------------------------------- errors and atoms
    def _error(self, key: str, message: str) -> ValueError:
        return ValueError(f"{self.__file__}: key {key!r}: {message}")

    @property
    def n_atoms(self) -> int:
        return self.molecule.n_atoms

    def atom_index(self, spec: Any, key: str) -> int:
        """0-based index of an atom given as ``"resSeq:NAME"``, an index, or an mdtraj selection of one atom."""
        top = self.molecule.mdtraj_topology()
        if isinstance(spec, int) and not isinstance(spec, bool):
            if not 0 <= spec < top.n_atoms:
                raise self._error(key, f"atom index {spec} out of range (the topology has {top.n_atoms} atoms)")
            return spec
        if not isinstance(spec, str):
            raise self._error(key, f"an atom is 'resSeq:NAME', an index or a selection string, got {spec!r}")
        match = _ATOM_SPEC.match(spec)
        if match:
            res_seq, name = int(match.group(1)), match.group(2)
            hits = [a.index for a in top.atoms if a.residue.resSeq == res_seq and a.name == name]
            if not hits:
                residue = [r for r in top.residues if r.resSeq == res_seq]
                names = sorted({a.name for r in residue for a in r.atoms})
                where = (
                    f"residue {res_seq} ({residue[0].name}) has atoms {names}"
                    if residue
                    else (f"no residue numbered {res_seq}; residues: {[f'{r.resSeq}:{r.name}' for r in top.residues]}")
                )
                raise self._error(key, f"no atom {spec!r}: {where}")
            if len(hits) > 1:
                raise self._error(key, f"atom {spec!r} is ambiguous ({len(hits)} atoms); use a selection string")
            return hits[0]
        try:
            hits = top.select(spec)
        except Exception as err:
            raise self._error(
                key, f"atom {spec!r} is neither 'resSeq:NAME' nor a valid mdtraj selection: {err}"
            ) from err
        if len(hits) != 1:
            raise self._error(key, f"selection {spec!r} selects {len(hits)} atoms, not one")
        return int(hits[0])

    # ---------------------------------------------------------------------------------------- reference frames
    def _trajectory_entries(self, spec: Any) -> list[dict[str, Any]]:
        entries = spec if isinstance(spec, list) else [spec]
        out = []
        for k, entry in enumerate(entries):
            key = "trajectories" if not isinstance(spec, list) else f"trajectories[{k}]"
            entry = {"file": entry} if isinstance(entry, str) else entry
            if not isinstance(entry, dict) or "file" not in entry:
                raise self._error(key, f"a trajectory is a path or a dict with 'file', got {entry!r}")
            unknown = sorted(set(entry) - set(_TRAJECTORY_KEYS))
            if unknown:
                raise self._error(key, f"unknown setting(s) {unknown}; known: {list(_TRAJECTORY_KEYS)}")
            for name, lowest in (("stride", 1), ("start", 0)):
                value = entry.get(name, lowest)
                if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                    raise self._error(f"{key}.{name}", f"must be an integer >= {lowest}, got {value!r}")
            pattern = str(self.molecule.resolve(entry["file"]))
            files = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            if not files or not all(Path(f).is_file() for f in files):
                raise FileNotFoundError(f"{self.__file__}: key {key + '.file'!r}: no trajectory file {pattern!r}")
            out += [{**entry, "file": f, "key": key} for f in files]
        return out

    def _read_trajectory(self, entry: dict[str, Any]) -> np.ndarray:
        """Positions ``(frames, n_atoms, 3)`` nm of one ``trajectories`` entry, checked against the topology."""
        import mdtraj

        path, key = entry["file"], entry["key"]
        own = Path(path).suffix.lower() in (".h5", ".pdb", ".gro", ".cif", ".mol2", ".lh5", ".pdb.gz", ".hdf5")
        ref_top = self.molecule.mdtraj_topology()
        if entry.get("topology") is not None:
            top = str(self.molecule.resolve(entry["topology"]))
            if not Path(top).is_file():
                raise FileNotFoundError(f"{self.__file__}: key {key + '.topology'!r}: no file {top!r}")
        else:
            top = None if own else ref_top
            if not own:  # a format without topology: compare its atom count before mdtraj fails on it
                n_file = _atoms_in_file(path)
                if n_file is not None and n_file != ref_top.n_atoms:
                    raise ValueError(
                        f"{self.__file__}: key {key!r}: the trajectory {path!r} has {n_file} atoms but the topology "
                        f"{self._topology_source()} has {ref_top.n_atoms} (for a file holding more atoms, give its "
                        "own 'topology' and a 'selection' of the molecule)"
                    )
        try:
            traj = mdtraj.load(path, top=top) if top is not None else mdtraj.load(path)
        except Exception as err:
            raise ValueError(f"{self.__file__}: key {key!r}: cannot read the trajectory {path!r}: {err}") from err
        if entry.get("selection") is not None:
            try:
                atoms = traj.topology.select(entry["selection"])
            except Exception as err:
                raise self._error(key + ".selection", f"{entry['selection']!r} on {path!r}: {err}") from err
            traj = traj.atom_slice(atoms)
        traj = traj[entry.get("start", 0) :: entry.get("stride", 1)]
        if traj.n_atoms != ref_top.n_atoms:
            raise ValueError(
                f"{self.__file__}: key {key!r}: the trajectory {path!r} has {traj.n_atoms} atoms but the topology "
                f"{self._topology_source()} has {ref_top.n_atoms}"
            )
        if traj.topology is not ref_top:
            self._check_atom_order(traj.topology, path, key)
        if traj.n_frames == 0:
            raise self._error(key, f"the trajectory {path!r} holds no frames (after start/stride)")
        return np.asarray(traj.xyz, dtype=np.float32)

    def _topology_source(self) -> str:
        topology = self.molecule.config["topology"]
        return repr(
            str(self.molecule.resolve(topology if isinstance(topology, str) else next(iter(topology.values()))))
        )

    def _check_atom_order(self, top, path: str, key: str) -> None:
        """Residue number, element and (heavy atoms) name of every atom must match the config's topology."""
        ref = self.molecule.mdtraj_topology()
        ref_res = {r.index: k for k, r in enumerate(ref.residues)}
        top_res = {r.index: k for k, r in enumerate(top.residues)}
        for a, b in zip(top.atoms, ref.atoms):
            same_element = (a.element is None or b.element is None) or a.element.symbol == b.element.symbol
            heavy = b.element is not None and b.element.symbol != "H"
            same = same_element and top_res[a.residue.index] == ref_res[b.residue.index]
            if not same or (heavy and a.name != b.name):
                raise ValueError(
                    f"{self.__file__}: key {key!r}: atom {a.index} of the trajectory {path!r} is "
                    f"{a.residue.name}{a.residue.resSeq}:{a.name}, but the topology {self._topology_source()} has "
                    f"{b.residue.name}{b.residue.resSeq}:{b.name} there (atom order differs; reorder the "
                    "trajectory or use 'selection')"
                )

    def reference_frames(self, config: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(positions (frames, n_atoms, 3) float32 nm, chain (frames,) int)`` of the reference MD: the
        ``trajectories`` of ``config`` (one chain per file), else the MD of the ``md`` section (one chain per
        replica; generated on first use)."""
        import json

        spec = (config or self.CONFIG).get("trajectories")
        cache_key = json.dumps(spec, sort_keys=True, default=str)
        if cache_key in self._frames_cache:
            return self._frames_cache[cache_key]
        if spec is None:
            positions, chain = self._md_frames()
        else:
            parts = [self._read_trajectory(e) for e in self._trajectory_entries(spec)]
            positions = np.concatenate(parts)
            chain = np.concatenate([np.full(len(p), k) for k, p in enumerate(parts)])
        if not np.isfinite(positions).all():
            raise ValueError(f"{self.__file__}: the reference frames hold non-finite positions")
        self._frames_cache[cache_key] = (positions, chain)
        return positions, chain

    def _md_frames(self) -> tuple[np.ndarray, np.ndarray]:
        try:
            from .md import read_md, run_molecule_md
        except ImportError as err:
            raise ValueError(
                f"{self.__file__}: no 'trajectories' given and the MD runner is unavailable ({err}); "
                "give reference frames under 'trajectories'"
            ) from err
        data = read_md(run_molecule_md(self.molecule, progress=self.md_progress))
        positions = np.asarray(data["positions"], dtype=np.float32)
        chain = np.asarray(data.get("replica", np.zeros(len(positions), dtype=int)))
        return positions.reshape(len(positions), self.n_atoms, 3), chain

    # ------------------------------------------------------------------------------------------ system hooks
    def training_data(self, config: dict[str, Any]) -> np.ndarray:
        """Reference frames ``(frames, 3 n_atoms)`` in nm (:meth:`reference_frames`)."""
        positions, _ = self.reference_frames(config)
        return positions.reshape(len(positions), -1)

    def target_energy(self, kind: str = "auto"):
        """The reduced energy (kT) at the config's temperature: ``"torch"`` :class:`TorchForceField`, ``"openmm"``
        :class:`OpenMMEnergy`, ``"auto"`` the former unless the system holds a force it does not support."""
        from ..energies import OpenMMEnergy, TorchForceField

        if kind not in ("auto", "torch", "openmm"):
            raise self._error("model.target", f"must be 'auto', 'torch' or 'openmm', got {kind!r}")
        if kind not in self._targets:
            system, temperature = self.molecule.system, self.molecule.temperature
            if kind == "openmm":
                target = OpenMMEnergy(system, temperature)
            else:
                try:
                    target = TorchForceField.from_openmm(system, temperature)
                except ValueError as err:
                    if kind == "torch":
                        raise self._error("model.target", f"TorchForceField cannot take this system: {err}") from err
                    warnings.warn(
                        f"{self.__file__}: TorchForceField does not support this system ({err}); the target energy "
                        "falls back to OpenMMEnergy (exact, slower; set model.target to silence this)",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    target = OpenMMEnergy(system, temperature)
            self._targets[kind] = target
        return self._targets[kind]

    def make_boltzmann_generator(self, config: dict[str, Any], data, statistics: dict | None = None):
        """:func:`~bgflow_sci.molecular.molecular_boltzmann_generator` on the molecule's topology (or, with
        ``states``, :func:`~bgflow_sci.molecular.molecular_state_mixture`); target :meth:`target_energy`."""
        from ..molecular import molecular_boltzmann_generator, molecular_state_mixture

        model = merge_config(CONFIG_DEFAULTS["model"], config.get("model", {}))
        unknown = sorted(set(model) - set(CONFIG_DEFAULTS["model"]))
        if unknown:
            raise self._error("model", f"unknown setting(s) {unknown}; known: {sorted(CONFIG_DEFAULTS['model'])}")
        target = self.target_energy(model["target"])
        kwargs = {
            "n_layers": int(model["n_layers"]),
            "n_bins": int(model["n_bins"]),
            "hidden": tuple(int(h) for h in model["hidden"]),
            "bound": float(model["bound"]),
            "tight_torsion_std": float(model["tight_torsion_std"]),
            "seed": int(config.get("train", {}).get("seed", 0)),
        }
        top = self.molecule.mdtraj_topology()
        states = config.get("states")
        if not states:
            return molecular_boltzmann_generator(top, target, data, statistics=statistics, **kwargs)
        if not isinstance(states, dict) or set(states) != {"torsion", "boundaries"}:
            raise self._error("states", f"must be {{'torsion': [4 atoms], 'boundaries': [rad, ...]}}, got {states!r}")
        atoms = states["torsion"]
        if not isinstance(atoms, list) or len(atoms) != 4:
            raise self._error("states.torsion", f"must list four atoms, got {atoms!r}")
        torsion = [self.atom_index(a, "states.torsion") for a in atoms]
        from ..flows import InternalCoordinates
        from ..molecular import zmatrix_torsion

        try:  # before the frames are split: a torsion outside the Z-matrix cannot confine a component
            zmatrix_torsion(InternalCoordinates.from_mdtraj(top), torsion)
        except ValueError as err:
            raise self._error("states.torsion", f"{atoms} (atoms {torsion}): {err}") from err
        try:
            return molecular_state_mixture(
                top, target, data, torsion, [float(b) for b in states["boundaries"]], statistics=statistics, **kwargs
            )
        except ValueError as err:
            raise self._error("states", str(err)) from err

    # ------------------------------------------------------------------------------------ collective variables
    def _parse_collective_variables(self, spec: Any) -> dict[str, tuple[str, tuple[int, ...]]]:
        """``{name: (kind, atom indices)}`` of the ``collective_variables`` key."""
        if spec is None:
            spec = "backbone"
        if isinstance(spec, str):
            if spec != "backbone":
                raise self._error("collective_variables", f"must be a dict or 'backbone', got {spec!r}")
            spec = {"backbone": True}
        if not isinstance(spec, dict):
            raise self._error("collective_variables", f"must be a dict or 'backbone', got {type(spec).__name__}")
        cvs: dict[str, tuple[str, tuple[int, ...]]] = {}
        for name, atoms in spec.items():
            key = f"collective_variables.{name}"
            if name == "backbone":
                if atoms is True:
                    cvs.update(self._backbone_torsions())
                elif atoms is not False:
                    raise self._error(key, f"must be true or false, got {atoms!r}")
                continue
            if not isinstance(atoms, list) or len(atoms) not in _KINDS:
                raise self._error(key, f"must list 2 (distance), 3 (angle) or 4 (torsion) atoms, got {atoms!r}")
            idx = tuple(self.atom_index(a, key) for a in atoms)
            if len(set(idx)) != len(idx):
                raise self._error(key, f"the atoms {atoms!r} are not distinct")
            cvs[str(name)] = (_KINDS[len(idx)], idx)
        return cvs

    def _backbone_torsions(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        import mdtraj

        top = self.molecule.mdtraj_topology()
        traj = mdtraj.Trajectory(self.molecule.positions[None].astype(np.float32), top)
        out = {}
        for kind, compute, centre in (("phi", mdtraj.compute_phi, 2), ("psi", mdtraj.compute_psi, 1)):
            indices, _ = compute(traj, periodic=False)
            for quartet in indices:
                res_seq = top.atom(int(quartet[centre])).residue.resSeq
                out[f"{kind}_{res_seq}"] = ("torsion", tuple(int(i) for i in quartet))
        return dict(sorted(out.items(), key=lambda kv: (int(kv[0].split("_")[1]), kv[0])))

    @property
    def collective_variable_kinds(self) -> dict[str, str]:
        """``{name: "distance" | "angle" | "torsion"}``."""
        return {name: kind for name, (kind, _) in self._cvs.items()}

    def collective_variables(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """``{name: (frames,)}`` of flat or ``(frames, n_atoms, 3)`` positions in nm (rad for angles/torsions)."""
        import mdtraj

        if not self._cvs:
            return {}
        xyz = np.asarray(x, dtype=np.float32).reshape(-1, self.n_atoms, 3)
        traj = mdtraj.Trajectory(xyz, self.molecule.mdtraj_topology())
        out = {}
        for kind in ("distance", "angle", "torsion"):
            names = [n for n, (k, _) in self._cvs.items() if k == kind]
            if not names:
                continue
            atoms = np.array([self._cvs[n][1] for n in names])
            compute = {"distance": mdtraj.compute_distances, "angle": mdtraj.compute_angles}.get(
                kind, mdtraj.compute_dihedrals
            )
            values = compute(traj, atoms, periodic=False).astype(np.float64)
            out.update({n: np.ascontiguousarray(values[:, i]) for i, n in enumerate(names)})
        return {n: out[n] for n in self._cvs}

    # ------------------------------------------------------------------------------------ free-energy regions
    def _parse_regions(self, spec: dict[str, Any]) -> dict[str, dict[str, list[dict[str, tuple[float, float]]]]]:
        regions = {}
        for name, sides in spec.items():
            key = f"free_energy_regions.{name}"
            if not isinstance(sides, dict) or set(sides) != {"a", "b"}:
                raise self._error(key, f"must be {{'a': {{cv: [lo, hi]}}, 'b': {{...}}}}, got {sides!r}")
            regions[str(name)] = {}
            for side, boxes in sides.items():
                boxes = boxes if isinstance(boxes, list) else [boxes]
                parsed = []
                for box in boxes:
                    if not isinstance(box, dict) or not box:
                        raise self._error(f"{key}.{side}", f"must map CV names to [lo, hi], got {box!r}")
                    ranges = {}
                    for cv, bounds in box.items():
                        if cv not in self._cvs:
                            raise self._error(f"{key}.{side}", f"unknown CV {cv!r}; the CVs are {sorted(self._cvs)}")
                        ok = isinstance(bounds, list | tuple) and len(bounds) == 2
                        if not ok or not all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds):
                            raise self._error(f"{key}.{side}.{cv}", f"must be [lo, hi], got {bounds!r}")
                        lo, hi = float(bounds[0]), float(bounds[1])
                        if self._cvs[cv][0] != "torsion" and not lo < hi:
                            raise self._error(f"{key}.{side}.{cv}", f"needs lo < hi, got {bounds!r}")
                        ranges[cv] = (lo, hi)
                    parsed.append(ranges)
                regions[str(name)][side] = parsed
        return regions

    def _in_range(self, cv: str, values: np.ndarray, lo: float, hi: float) -> np.ndarray:
        if self._cvs[cv][0] != "torsion":
            return (values >= lo) & (values <= hi)
        width = (hi - lo) % (2 * math.pi)
        if width == 0.0:  # a full turn or an empty arc: [lo, lo + 2π]
            width = 2 * math.pi if hi != lo else 0.0
        return np.remainder(values - lo, 2 * math.pi) <= width

    def free_energy_regions(self, cvs: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{name: (in_a, in_b)}`` boolean masks of the ``free_energy_regions`` key (ΔF = F_B − F_A)."""
        out = {}
        for name, sides in self._regions.items():
            masks = []
            for side in ("a", "b"):
                n = len(next(iter(cvs.values()))) if cvs else 0
                union = np.zeros(n, dtype=bool)
                for box in sides[side]:
                    inside = np.ones(n, dtype=bool)
                    for cv, (lo, hi) in box.items():
                        inside &= self._in_range(cv, np.asarray(cvs[cv]), lo, hi)
                    union |= inside
                masks.append(union)
            out[name] = (masks[0], masks[1])
        return out

    # --------------------------------------------------------------------------------- reference free energies
    def reference_free_energies(self) -> dict[str, Any] | None:
        """ΔF of each region and the profile of each CV (kT) from the reference MD frames, with block-bootstrap
        errors (``evaluate.reference_blocks`` contiguous blocks per chain, ``evaluate.n_bootstrap`` replicates);
        ``None`` without CVs. Profile bins as :func:`~bgflow_sci.workflows.reweight.reweight` uses them for
        torsions (``evaluate.bins`` over [-π, π]); other CVs over the range of the reference frames."""
        if self._reference is not None or not self._cvs:
            return self._reference
        import torch

        from .. import reweighting as rw

        ev = self.CONFIG["evaluate"]
        positions, chain = self.reference_frames()
        cvs = self.collective_variables(positions)
        chain_t = torch.as_tensor(chain)
        shortest = int(torch.bincount(chain_t - chain_t.min()).min())
        block = max(1, shortest // max(1, int(ev.get("reference_blocks", 10))))
        n_boot, gen = int(ev["n_bootstrap"]), torch.Generator().manual_seed(0)
        result: dict[str, Any] = {"delta_f": {}, "profiles": {}, "frames": len(positions), "block_frames": block}
        for name, (in_a, in_b) in self.free_energy_regions(cvs).items():
            sides = torch.as_tensor(np.stack([in_a, in_b], 1), dtype=torch.float64)
            totals = sides.sum(0)
            value = float(torch.log(totals[0]) - torch.log(totals[1]))
            sums = rw.block_bootstrap_sums(sides, chain_t, block, n_boot, gen)
            if not math.isfinite(value):
                empty = " and ".join(s for s, t in zip("AB", totals.tolist()) if t == 0)
                warnings.warn(
                    f"{self.__file__}: region {empty} of free_energy_regions.{name} holds none of the "
                    f"{len(positions)} reference MD frames: no reference ΔF",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            reps = torch.log(sums[:, 0]) - torch.log(sums[:, 1])
            result["delta_f"][name] = {"value": value, "error": float(rw.bootstrap_std(reps))}
        for name, values in cvs.items():
            cv = torch.as_tensor(values, dtype=torch.float64)
            if self._cvs[name][0] == "torsion":
                edges = torch.linspace(-math.pi, math.pi, ev["bins"] + 1, dtype=torch.float64)
            else:
                edges = torch.linspace(float(cv.min()), float(cv.max()), ev["bins"] + 1, dtype=torch.float64)
            result["profiles"][name] = _block_profile(cv, chain_t, edges, block, n_boot, gen)
        self._reference = result
        return result

    # ------------------------------------------------------------------------------------------ files and MD
    def write_trajectory(self, x: np.ndarray, path: str | os.PathLike) -> Path:
        """Frames ``(n, 3 n_atoms)`` nm as a DCD ``<path>.dcd`` (:func:`bgflow_sci.io.write_trajectory`)."""
        from ..io import write_trajectory

        return write_trajectory(x, self.molecule.mdtraj_topology(), path, suffix=".dcd")

    def openmm_system(self, config: dict[str, Any] | None = None):
        """``(topology, system, positions (n_atoms, 3) nm)`` of the molecule (for flow-enhanced MD)."""
        m = self.molecule
        return m.topology, m.system, m.positions.copy()


def _atoms_in_file(path: str) -> int | None:
    """Atom count of the first frame of a trajectory file (``None`` where mdtraj cannot peek into it)."""
    import mdtraj

    try:
        with mdtraj.open(path) as f:
            return int(np.shape(f.read(n_frames=1)[0])[1])
    except Exception:
        return None


def _block_profile(cv, chain, edges, block: int, n_bootstrap: int, generator) -> dict[str, np.ndarray]:
    """Unweighted free-energy profile of correlated frames with block-bootstrap errors, as numpy arrays."""
    from ..reweighting import free_energy_profile

    prof = free_energy_profile(
        cv, None, edges, n_bootstrap=n_bootstrap, generator=generator, chain_ids=chain, block_length=block
    )
    return {"centers": prof.centers.numpy(), "free_energy": prof.free_energy.numpy(), "error": prof.error.numpy()}
