"""Trajectories in the formats MD tools read, through mdtraj.

Positions are in nm, shaped ``(frames, n_atoms, 3)`` or flat ``(frames, 3 n_atoms)`` as the package's energies
and flows use them; the format follows the file suffix (``.dcd``, ``.xtc``, ``.h5``, ``.pdb``, ...), and mdtraj
converts units where a format stores Å.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["as_mdtraj_topology", "read_trajectory", "write_trajectory"]


def as_mdtraj_topology(topology: Any):
    """An ``mdtraj.Topology`` from an mdtraj or OpenMM topology, or a structure file mdtraj reads (PDB, ...)."""
    import mdtraj

    if isinstance(topology, str | os.PathLike):
        return mdtraj.load_topology(os.fspath(topology))
    if isinstance(topology, mdtraj.Topology):
        return topology
    return mdtraj.Topology.from_openmm(topology)


def write_trajectory(
    positions: Any, topology: Any, path: str | os.PathLike, time_ps: Any = None, suffix: str | None = None
) -> Path:
    """Write frames (nm; ``(frames, n_atoms, 3)`` or ``(frames, 3 n_atoms)``) to ``path``; returns the path.

    ``topology``: see :func:`as_mdtraj_topology`. ``time_ps``: ``(frames,)`` frame times in ps (optional).
    ``suffix`` (e.g. ``".dcd"``) replaces the suffix of ``path``. Raises ``ValueError`` naming both atom counts
    when the frames do not match the topology.
    """
    import mdtraj

    top = as_mdtraj_topology(topology)
    xyz = np.asarray(positions, dtype=np.float32)
    if xyz.ndim == 2:
        if xyz.shape[1] != 3 * top.n_atoms:
            raise ValueError(f"the topology has {top.n_atoms} atoms but the frames have {xyz.shape[1]} coordinates")
        xyz = xyz.reshape(len(xyz), top.n_atoms, 3)
    if xyz.ndim != 3 or xyz.shape[1:] != (top.n_atoms, 3):
        raise ValueError(f"the topology has {top.n_atoms} atoms but the frames have shape {xyz.shape}")
    path = Path(path)
    if suffix is not None:
        path = path.with_suffix(suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    time = None if time_ps is None else np.asarray(time_ps, dtype=np.float64)
    mdtraj.Trajectory(xyz, top, time=time).save(str(path))
    return path


def read_trajectory(path: str | os.PathLike, topology: Any = None) -> np.ndarray:
    """Positions ``(frames, n_atoms, 3)`` in nm from any trajectory mdtraj reads (``topology`` where the format
    has none, e.g. DCD). Raises ``FileNotFoundError`` naming the file."""
    import mdtraj

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no trajectory file {str(path)!r}")
    top = None if topology is None else as_mdtraj_topology(topology)
    traj = mdtraj.load(str(path), top=top) if top is not None else mdtraj.load(str(path))
    return np.asarray(traj.xyz)
