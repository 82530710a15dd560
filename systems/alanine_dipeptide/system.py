"""Alanine dipeptide (ACE-ALA-NME, 22 atoms) with amber99sbildn, in vacuum or OBC2 implicit solvent.

The structure is ``data/alanine_dipeptide/alanine_dipeptide.pdb`` (provenance in ``data/README.md``); the
force field comes from OpenMM's own files (``amber99sbildn.xml`` and, for OBC2, ``amber99_obc.xml``),
with ``NoCutoff``, no constraints and flexible water, at 300 K.  Reference MD data are produced by
``generate_md.py`` in this folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
CONFIG: dict[str, Any] = json.loads((HERE / "config.json").read_text())
DATA_DIR = HERE.parents[1] / "data" / "alanine_dipeptide"
PDB_FILE = DATA_DIR / "alanine_dipeptide.pdb"
SOLVENTS = ("vacuum", "obc2")
TEMPERATURE = float(CONFIG["temperature"])  # kelvin
N_ATOMS = 22
PHI_ATOMS = (4, 6, 8, 14)  # C(ACE) N CA C
PSI_ATOMS = (6, 8, 14, 16)  # N CA C N(NME)


def _check_solvent(solvent: str) -> str:
    if solvent not in SOLVENTS:
        raise ValueError(f"solvent must be one of {SOLVENTS}, got {solvent!r}")
    return solvent


def build_openmm_system(solvent: str = "obc2"):
    """``(topology, system, positions)`` of alanine dipeptide; ``positions`` is a ``(22, 3)`` array in nm."""
    from openmm import app, unit

    _check_solvent(solvent)
    pdb = app.PDBFile(str(PDB_FILE))
    files = ["amber99sbildn.xml"] + (["amber99_obc.xml"] if solvent == "obc2" else [])
    forcefield = app.ForceField(*files)
    system = forcefield.createSystem(
        pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False, removeCMMotion=True
    )
    positions = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer), dtype=np.float64)
    return pdb.topology, system, positions


def openmm_energy(solvent: str = "obc2", **kwargs: Any):
    """The exact target: :class:`bgflow_sci.energies.OpenMMEnergy` of the system at ``TEMPERATURE`` (kT, nm).

    ``kwargs`` go to ``OpenMMEnergy`` (``n_workers``, ``chunk_size``, ...); close it (or use ``with``) when done.
    """
    from bgflow_sci.energies import OpenMMEnergy

    return OpenMMEnergy(build_openmm_system(solvent)[1], TEMPERATURE, **kwargs)


def md_file(solvent: str) -> Path:
    """Path of the shipped reference MD data (``.npz``) for ``solvent``."""
    return DATA_DIR / f"md_{_check_solvent(solvent)}.npz"


def regenerate_command(solvent: str) -> str:
    """The exact command that regenerates the reference MD data of ``solvent``."""
    return CONFIG["md"][_check_solvent(solvent)]["command"]


def load_reference_data(solvent: str = "obc2") -> dict[str, np.ndarray]:
    """Reference MD data: ``positions`` (frames, 22, 3) nm float32, ``forces`` (frames, 22, 3) kJ/mol/nm,
    ``time`` (frames,) ps, ``chain`` (frames,) index of the independent chain each frame comes from.

    Raises ``FileNotFoundError`` naming the command that regenerates the file when it is missing.
    """
    path = md_file(solvent)
    if not path.exists():
        raise FileNotFoundError(
            f"reference MD data {path} not found; regenerate it with:\n    {regenerate_command(solvent)}"
        )
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def reference_trajectory(solvent: str = "obc2"):
    """The reference MD positions as an ``mdtraj.Trajectory`` (time in ps within each chain)."""
    import mdtraj

    data = load_reference_data(solvent)
    return mdtraj.Trajectory(data["positions"], topology(), time=data["time"])


def topology():
    """The mdtraj topology of the PDB structure (ACE1-ALA2-NME3, atom order of the OpenMM system)."""
    import mdtraj

    return mdtraj.load_topology(str(PDB_FILE))


def backbone_dihedrals(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Backbone dihedrals ``(phi, psi)`` in radians, each ``(frames,)``, of positions ``(frames, 22, 3)`` in nm.

    ``phi`` is C(ACE)-N-CA-C and ``psi`` N-CA-C-N(NME), atoms ``PHI_ATOMS`` and ``PSI_ATOMS``.
    """
    import mdtraj

    traj = mdtraj.Trajectory(np.asarray(positions, dtype=np.float32).reshape(-1, N_ATOMS, 3), topology())
    dihedrals = mdtraj.compute_dihedrals(traj, np.array([PHI_ATOMS, PSI_ATOMS]), periodic=False)
    return dihedrals[:, 0], dihedrals[:, 1]


def load_reference_free_energy(solvent: str = "obc2") -> dict[str, Any]:
    """The reference ``ΔF = F(φ > 0) - F(φ < 0)`` (kT) and free-energy profile along φ computed by
    ``reference.py`` from the MD data (``reference_<solvent>.json`` and ``.npz``)."""
    path = DATA_DIR / f"reference_{_check_solvent(solvent)}.json"
    if not path.exists():
        raise FileNotFoundError(
            f"reference free energies {path} not found; compute them with:\n"
            f"    python systems/alanine_dipeptide/reference.py --solvent {solvent}"
        )
    result = json.loads(path.read_text())
    with np.load(path.with_suffix(".npz")) as f:
        result["profile"] = {k: f[k] for k in f.files}
    return result
