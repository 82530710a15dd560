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
OMEGA_ATOMS = ((1, 4, 6, 8), (8, 14, 16, 18))  # CH3-C(ACE)-N-CA and CA-C-N-C(NME): the two peptide bonds
BASIN_SPLIT = 2.2  # rad: αL/C7ax basin is 0 <= φ < 2.2; the β basin wraps past φ = π


def in_alpha_l_basin(phi):
    """The αL/C7ax basin ``0 <= φ < BASIN_SPLIT`` (bool, elementwise on a numpy array or tensor of φ in rad);
    its complement is the β/C5/αR basin, which wraps past φ = π."""
    return (phi >= 0) & (phi < BASIN_SPLIT)


def _check_solvent(solvent: str) -> str:
    if solvent not in SOLVENTS:
        raise ValueError(f"solvent must be one of {SOLVENTS}, got {solvent!r}")
    return solvent


def build_openmm_system(solvent: str = "obc2"):
    """``(topology, system, positions)`` of alanine dipeptide; ``positions`` is a ``(22, 3)`` array in nm.

    The force field is defined once, in ``molecule_<solvent>.json`` beside this file, and built by the generic
    :func:`bgflow_sci.workflows.load_molecule` (PDB + OpenMM force-field files, NoCutoff, no constraints)."""
    from bgflow_sci.workflows import load_molecule

    molecule = load_molecule(HERE / f"molecule_{_check_solvent(solvent)}.json")
    return molecule.topology, molecule.system, molecule.positions


def openmm_energy(solvent: str = "obc2", **kwargs: Any):
    """The exact target: :class:`bgflow_sci.energies.OpenMMEnergy` of the system at ``TEMPERATURE`` (kT, nm).

    ``kwargs`` go to ``OpenMMEnergy`` (``n_workers``, ``chunk_size``, ...); close it (or use ``with``) when done.
    """
    from bgflow_sci.energies import OpenMMEnergy

    return OpenMMEnergy(build_openmm_system(solvent)[1], TEMPERATURE, **kwargs)


def md_file(solvent: str, basin: bool = False) -> Path:
    """Path of the shipped reference MD data (``.npz``) for ``solvent``; with ``basin``, of the MD started in the
    αL/C7ax basin (``generate_md.py --start basin``)."""
    return DATA_DIR / f"md_{_check_solvent(solvent)}{'_basin' if basin else ''}.npz"


def regenerate_command(solvent: str, basin: bool = False) -> str:
    """The exact command that regenerates :func:`md_file` ``(solvent, basin)``."""
    return CONFIG["md_basin" if basin else "md"][_check_solvent(solvent)]["command"]


def _existing(path: Path, what: str, command: str) -> Path:
    """``path``, or a ``FileNotFoundError`` naming ``what`` is missing and the ``command`` that writes it."""
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} not found; regenerate it with:\n    {command}")
    return path


def load_reference_data(solvent: str = "obc2") -> dict[str, np.ndarray]:
    """Reference MD data: ``positions`` (frames, 22, 3) nm float32, ``forces`` (frames, 22, 3) kJ/mol/nm,
    ``time`` (frames,) ps, ``chain`` (frames,) index of the independent chain each frame comes from.

    Raises ``FileNotFoundError`` naming the command that regenerates the file when it is missing.
    """
    path = _existing(md_file(solvent), "reference MD data", regenerate_command(solvent))
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
    dihedrals = _dihedrals(positions, (PHI_ATOMS, PSI_ATOMS))
    return dihedrals[:, 0], dihedrals[:, 1]


def _dihedrals(positions: np.ndarray, quartets) -> np.ndarray:
    """Dihedrals ``(frames, len(quartets))`` in radians (mdtraj) of positions ``(frames, 22, 3)`` nm."""
    import mdtraj

    traj = mdtraj.Trajectory(np.asarray(positions, dtype=np.float32).reshape(-1, N_ATOMS, 3), topology())
    return mdtraj.compute_dihedrals(traj, np.array(quartets), periodic=False)


def all_trans(positions: np.ndarray) -> np.ndarray:
    """``(frames,)`` bool: both peptide bonds trans (|ω| > π/2) in positions ``(frames, 22, 3)`` nm.

    The cis ↔ trans isomerisation of an amide bond has a barrier of ~80 kJ/mol and never happens in plain MD
    at 300 K; a frame with a cis bond comes from a forced path (e.g. umbrella windows dragged around φ) and
    belongs to another, much less populated, state."""
    return (np.abs(_dihedrals(positions, OMEGA_ATOMS)) > np.pi / 2).all(1)


def load_reference_free_energy(solvent: str = "obc2") -> dict[str, Any]:
    """The reference ``ΔF = F(φ > 0) - F(φ < 0)`` (kT) and free-energy profile along φ computed by
    ``reference.py`` from the MD data (``reference_<solvent>.json`` and ``.npz``)."""
    path = _existing(
        DATA_DIR / f"reference_{_check_solvent(solvent)}.json",
        "reference free energies",
        f"python systems/alanine_dipeptide/reference.py --solvent {solvent}",
    )
    result = json.loads(path.read_text())
    with np.load(path.with_suffix(".npz")) as f:
        result["profile"] = {k: f[k] for k in f.files}
    return result


# --------------------------------------------------------------- hooks of `bgflow-sci train/sample/reweight`


def metadynamics_frames(solvent: str = "obc2") -> tuple[np.ndarray, np.ndarray]:
    """Frames ``(n, 22, 3)`` nm of MD under the frozen (φ, ψ) bias of ``metadynamics.py`` and their normalised
    Boltzmann log weights ``V(φ, ψ)/kT`` (exact: the bias is fixed and known): a weighted sample of the unbiased
    distribution that covers every basin of the (φ, ψ) surface, the rare αL/C7ax one included."""
    path = _existing(
        DATA_DIR / f"metad_{_check_solvent(solvent)}.npz",
        "metadynamics data",
        CONFIG["metadynamics"][solvent]["command"],
    )
    with np.load(path) as f:
        frames, bias, kt = f["positions"], f["bias"].astype(np.float64), float(f["kT"])
        every = round(float(f["frame_ps"]) * 1000 / float(f["sample_fs"]))
    # frame j of a walker is its sample (j + 1) * every - 1
    log_w = (bias[:, every - 1 :: every][:, : frames.shape[1]] / kt).reshape(-1)
    log_w = log_w - np.logaddexp.reduce(log_w)
    return frames.reshape(-1, N_ATOMS, 3), log_w


def training_data(config: dict[str, Any]) -> np.ndarray:
    """Training frames ``(frames, 66)`` nm: the reference MD of ``config["data"]["solvent"]`` (β/C5/αR; plain MD
    never leaves it) plus frames of the αL/C7ax basin (``in_alpha_l_basin``) from

    * ``data.basin_md``: the in-basin frames of ``md_<solvent>_basin.npz``, plain MD started in the basin
      (``generate_md.py --start basin``; many short chains, since the basin's lifetime is about 1 ns), and/or
    * ``data.basin_frames > 0``: that many frames drawn with replacement from the frozen-bias metadynamics frames
      (:func:`metadynamics_frames`) in proportion to their Boltzmann weights (duplicates: a flow trained long on
      them alone overfits).

    The basin's share of the training set is a choice, not its Boltzmann population; importance weights with the
    exact energy remove that bias from every estimate (and a StateMixture trains each state on its own frames).
    """
    data = config.get("data", {})
    solvent = data.get("solvent", CONFIG["solvent"])
    parts = [load_reference_data(solvent)["positions"].reshape(-1, 3 * N_ATOMS)]
    if data.get("basin_md"):
        path = _existing(md_file(solvent, basin=True), "basin MD data", regenerate_command(solvent, basin=True))
        with np.load(path) as f:
            frames = f["positions"]
        parts.append(frames[in_alpha_l_basin(backbone_dihedrals(frames)[0])].reshape(-1, 3 * N_ATOMS))
    n_basin = int(data.get("basin_frames", 0))
    if n_basin > 0:
        frames, log_w = metadynamics_frames(solvent)
        phi, _ = backbone_dihedrals(frames)
        basin = in_alpha_l_basin(phi)
        p = np.exp(log_w[basin] - log_w[basin].max())
        pick = np.random.default_rng(int(data.get("seed", 0))).choice(basin.sum(), size=n_basin, p=p / p.sum())
        parts.append(frames[basin][np.sort(pick)].reshape(-1, 3 * N_ATOMS))
    return np.concatenate(parts)


def make_boltzmann_generator(config: dict[str, Any], data, statistics: dict | None = None):
    """Internal-coordinate spline-flow Boltzmann generator (``bgflow_sci.molecular``) with the batched torch
    force field of the OpenMM system as target (kT at ``TEMPERATURE``).

    With ``model.states = {"torsion": [i, j, k, l], "boundaries": [...]}`` it is a
    :class:`~bgflow_sci.state_mixture.StateMixture`: one generator per arc of that Z-matrix torsion
    (``molecular_state_mixture``). The shipped config cuts C(ACE)-N-CA-HA (atoms 4, 6, 8, 9; it is φ + 2.06 rad,
    ±0.08, the offset fixed by the tetrahedral CA) at φ ≈ 0 and φ ≈ BASIN_SPLIT, both free-energy barriers
    (≥ 11 kT above the β basin): one generator for β/C5/αR, one for the αL/C7ax basin.
    ``statistics`` (the ``bg.build_statistics`` a saved model carries) replaces ``data``.
    """
    from bgflow_sci.energies import TorchForceField
    from bgflow_sci.molecular import molecular_boltzmann_generator, molecular_state_mixture

    model = config.get("model", {})
    solvent = config.get("data", {}).get("solvent", CONFIG["solvent"])
    target = TorchForceField.from_openmm(build_openmm_system(solvent)[1], TEMPERATURE)
    kwargs = {
        "n_layers": model.get("n_layers", 8),
        "n_bins": model.get("n_bins", 8),
        "hidden": tuple(model.get("hidden", (128, 128))),
        "bound": model.get("bound", 5.0),
        "tight_torsion_std": model.get("tight_torsion_std", 0.3),
        "seed": config.get("train", {}).get("seed", 0),
    }
    states = model.get("states")
    if states:
        torsion, boundaries = states["torsion"], states["boundaries"]
        return molecular_state_mixture(topology(), target, data, torsion, boundaries, statistics=statistics, **kwargs)
    return molecular_boltzmann_generator(topology(), target, data, statistics=statistics, **kwargs)


def kl_target(config: dict[str, Any], bg):
    """Hook of ``train.kl_bias = h`` (kT): reverse KL against ``u(x) − h s(φ(x))``, ``s`` a smooth indicator
    (width 0.1 rad) of the αL/C7ax basin ``0 <= φ < BASIN_SPLIT``.

    The flow is then trained towards a distribution in which the basin holds about ``p e^h / (1 - p + p e^h)`` of
    the mass (``p`` its Boltzmann population, 2.1 %: h = 2 gives ≈ 13 %), so that each KL batch shapes the basin;
    the importance weights still use the exact energy (``bg.target``).
    """
    import torch

    from bgflow_sci.energies import BiasedEnergy
    from bgflow_sci.flows.internal import dihedral

    h = float(config["train"]["kl_bias"])

    def basin_bias(x):
        p = x.reshape(len(x), N_ATOMS, 3)
        phi = dihedral(*(p[:, i] for i in PHI_ATOMS))
        return -h * torch.sigmoid(phi / 0.1) * torch.sigmoid((BASIN_SPLIT - phi) / 0.1)

    return BiasedEnergy(bg.target, basin_bias)


def collective_variables(x: np.ndarray) -> dict[str, np.ndarray]:
    """``{"phi": ..., "psi": ...}`` (rad) of flat or ``(frames, 22, 3)`` positions in nm."""
    phi, psi = backbone_dihedrals(np.asarray(x).reshape(-1, N_ATOMS, 3))
    return {"phi": phi, "psi": psi}


def free_energy_regions(cvs: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``ΔF = F_B - F_A`` regions: ``phi_sign`` (φ < 0 vs φ > 0, as the issue defines it) and ``phi_basin``
    (β/C5/αR vs the αL/C7ax basin ``0 <= φ < BASIN_SPLIT``; the β basin wraps past φ = π)."""
    phi = cvs["phi"]
    basin = in_alpha_l_basin(phi)
    return {"phi_sign": (phi < 0, phi > 0), "phi_basin": (~basin, basin)}


def reference_free_energies(solvent: str | None = None) -> dict[str, Any] | None:
    """Reference ΔF of :func:`free_energy_regions` and the φ profile (``reference.py``), or ``None``."""
    try:
        ref = load_reference_free_energy(solvent or CONFIG["solvent"])
    except FileNotFoundError:
        return None
    delta_f = {"phi_sign": ref["delta_f"]}
    if ref.get("delta_f_basin"):
        delta_f["phi_basin"] = ref["delta_f_basin"]
    p = ref["profile"]
    return {"delta_f": delta_f, "profiles": {"phi": {k: p[k] for k in ("centers", "free_energy", "error")}}}


def write_trajectory(x: np.ndarray, path: Path) -> Path:
    """Samples ``(n, 66)`` in nm as an mdtraj DCD trajectory ``<path>.dcd`` (:func:`bgflow_sci.io.write_trajectory`)."""
    from bgflow_sci.io import write_trajectory as write

    return write(x, topology(), path, suffix=".dcd")


def openmm_system(config: dict[str, Any]):
    """``(topology, system, positions)`` of the configured solvent (for flow-enhanced MD)."""
    return build_openmm_system(config.get("data", {}).get("solvent", CONFIG["solvent"]))
