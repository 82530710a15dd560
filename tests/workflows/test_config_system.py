"""Config-only systems: a PDB plus force-field names in a JSON file is a system for ``bgflow-sci train / sample /
reweight / enhanced-md`` (``workflows.molecule``, ``workflows.config_system``), and every bad input names the key and
the file."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import require

require("mdtraj")
require("openmm")

import mdtraj  # noqa: E402

from bgflow_sci.workflows import load_model, load_system  # noqa: E402
from bgflow_sci.workflows.config_system import ConfigSystem  # noqa: E402
from bgflow_sci.workflows.molecule import MD_DEFAULTS, is_molecule_config, load_molecule  # noqa: E402
from bgflow_sci.workflows.systems import find_system, resolve_system_reference, system_reference  # noqa: E402

from .._killing import kill_after_checkpoint  # noqa: E402

PDB = Path(__file__).resolve().parents[2] / "data" / "alanine_dipeptide" / "alanine_dipeptide.pdb"
N_ATOMS, N_FRAMES = 22, 300
QUICK = {
    "model": {"n_layers": 2, "hidden": [16]},
    "train": {"ml_steps": 150, "kl_steps": 20, "kl_batch_size": 64, "checkpoint_every": 25},
    "evaluate": {"samples": 400, "batch_size": 400, "n_bootstrap": 10},
}


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "bgflow_sci.cli", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _md_frames(pdb: Path, n_frames: int) -> np.ndarray:
    """``(n_frames, 22, 3)`` nm: Langevin MD (amber14-all, vacuum, 300 K, 10 fs between frames) from the PDB."""
    import openmm
    from openmm import app, unit

    structure = app.PDBFile(str(pdb))
    system = app.ForceField("amber14-all.xml").createSystem(structure.topology, nonbondedMethod=app.NoCutoff)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 1 * unit.femtosecond)
    integrator.setRandomNumberSeed(7)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(structure.positions)
    openmm.LocalEnergyMinimizer.minimize(context)
    frames = []
    for _ in range(n_frames):
        integrator.step(10)
        frames.append(context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    return np.asarray(frames, dtype=np.float32)


@pytest.fixture(scope="module")
def molecule_dir(tmp_path_factory) -> Path:
    """A folder with ``peptide.pdb``, ``md.dcd`` (its MD) and ``config.json`` (PDB + force field + regions)."""
    folder = tmp_path_factory.mktemp("molecule")
    shutil.copy(PDB, folder / "peptide.pdb")
    frames = _md_frames(folder / "peptide.pdb", N_FRAMES)
    top = mdtraj.load_topology(str(folder / "peptide.pdb"))
    mdtraj.Trajectory(frames, top).save(str(folder / "md.dcd"))
    psi = mdtraj.compute_psi(mdtraj.Trajectory(frames, top))[1][:, 0]
    split = float(np.median(psi))  # both regions hold reference frames
    config = {
        "name": "capped_alanine_amber14",
        "topology": "peptide.pdb",
        "forcefield": ["amber14-all.xml"],
        "temperature": 300,
        "trajectories": [{"file": "md.dcd"}],
        "free_energy_regions": {"psi_split": {"a": {"psi_2": [-math.pi, split]}, "b": {"psi_2": [split, math.pi]}}},
        **QUICK,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    return folder


def _reference_energy(system, positions: np.ndarray) -> float:
    """Potential energy (kJ/mol) of ``system`` at ``positions`` (nm) on OpenMM's Reference platform."""
    import openmm

    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(positions)
    return ctx.getState(getEnergy=True).getPotentialEnergy()._value


def write_config(folder: Path, name: str = "variant.json", drop: tuple[str, ...] = (), **changes) -> Path:
    """A variant of the fixture config beside it."""
    config = json.loads((folder / "config.json").read_text())
    for key in drop:
        config.pop(key)
    config.update(changes)
    path = folder / name
    path.write_text(json.dumps(config))
    return path


# ------------------------------------------------------------------------------------------------ molecule


def test_load_molecule_builds_the_openmm_system(molecule_dir):
    m = load_molecule(molecule_dir / "config.json")
    assert m.name == "capped_alanine_amber14" and m.temperature == 300.0
    assert m.config_path == (molecule_dir / "config.json").resolve() and m.config["topology"] == "peptide.pdb"
    assert m.positions.shape == (N_ATOMS, 3) and m.positions.dtype == np.float64
    np.testing.assert_allclose(m.positions, mdtraj.load(str(PDB)).xyz[0], atol=1e-6)
    assert m.system.getNumParticles() == N_ATOMS and m.system.getNumConstraints() == 0
    forces = {type(f).__name__: f for f in m.system.getForces()}
    assert forces["NonbondedForce"].getNonbondedMethod() == 0  # NoCutoff: no box in the PDB
    assert m.md == {**MD_DEFAULTS, "out": (molecule_dir / "md").resolve()}
    assert m.resolve("md.dcd") == (molecule_dir / "md.dcd").resolve()
    assert m.mdtraj_topology().n_residues == 3 and is_molecule_config(molecule_dir / "config.json")
    assert not is_molecule_config(molecule_dir / "peptide.pdb")


def test_nonbonded_settings_and_box(molecule_dir):
    path = write_config(
        molecule_dir,
        nonbonded={"method": "CutoffPeriodic", "cutoff_nm": 0.9, "box_nm": 3.0, "constraints": "HBonds"},
    )
    m = load_molecule(path)
    nb = next(f for f in m.system.getForces() if type(f).__name__ == "NonbondedForce")
    assert nb.getNonbondedMethod() == 2 and nb.getCutoffDistance()._value == pytest.approx(0.9)
    assert m.system.getNumConstraints() == 12  # the C-H and N-H bonds
    box = np.array(
        [[v._value if hasattr(v, "_value") else v for v in vec] for vec in m.system.getDefaultPeriodicBoxVectors()]
    )
    np.testing.assert_allclose(box, 3.0 * np.eye(3))
    with pytest.raises(ValueError, match=r"nonbonded.method.*periodic box"):
        load_molecule(write_config(molecule_dir, nonbonded={"method": "PME"}))
    with pytest.raises(ValueError, match=r"'nonbonded'.*unknown setting.*'cutof'"):
        load_molecule(write_config(molecule_dir, nonbonded={"cutof": 1.0}))
    with pytest.raises(ValueError, match=r"implicit_solvent.*only to Amber"):
        load_molecule(write_config(molecule_dir, nonbonded={"implicit_solvent": "OBC2"}))


def test_system_xml_and_pdb_gives_the_same_energy(molecule_dir, tmp_path):
    import openmm

    reference = load_molecule(molecule_dir / "config.json")
    (tmp_path / "system.xml").write_text(openmm.XmlSerializer.serialize(reference.system))
    shutil.copy(molecule_dir / "peptide.pdb", tmp_path / "structure.pdb")
    config = {"topology": {"system_xml": "system.xml", "pdb": "structure.pdb"}, "temperature": 310.0}
    (tmp_path / "xml.json").write_text(json.dumps(config))
    m = load_molecule(tmp_path / "xml.json")
    assert m.name == "xml" and m.temperature == 310.0 and m.system.getNumForces() == reference.system.getNumForces()

    frame = mdtraj.load(str(molecule_dir / "md.dcd"), top=str(PDB)).xyz[5].astype(np.float64)
    assert _reference_energy(m.system, frame) == pytest.approx(_reference_energy(reference.system, frame), rel=1e-12)
    with pytest.raises(ValueError, match=r"xml2.json: key 'forcefield': not used with openmm input"):
        (tmp_path / "xml2.json").write_text(json.dumps({**config, "forcefield": ["amber14-all.xml"]}))
        load_molecule(tmp_path / "xml2.json")


AMBER_GROMACS = Path(__file__).resolve().parents[1] / "data" / "capped_alanine"  # written by make_files.py there


@pytest.mark.parametrize(
    "topology",
    [{"prmtop": "ala2.prmtop", "inpcrd": "ala2.inpcrd"}, {"top": "ala2.top", "gro": "ala2.gro"}],
    ids=["amber", "gromacs"],
)
def test_amber_and_gromacs_inputs_give_the_force_field_energy(molecule_dir, tmp_path, topology):
    """The same ACE-ALA-NME with amber14-all parameters, read from Amber / GROMACS files instead of PDB + ffxml:
    OpenMM energies agree at an MD frame, the TorchForceField target follows, and the trajectory order check
    and CVs work on the topology the files carry."""

    for name in topology.values():
        shutil.copy(AMBER_GROMACS / name, tmp_path / name)
    config = {"topology": topology, "temperature": 300.0}
    if "gro" in topology:  # a .gro always carries a box: the default method would be PME with a 1 nm cutoff
        (tmp_path / "periodic.json").write_text(json.dumps(config))
        with pytest.raises(ValueError, match=r"periodic.json: key 'nonbonded.cutoff_nm'.*half the periodic box"):
            load_molecule(tmp_path / "periodic.json")
        config["nonbonded"] = {"method": "NoCutoff"}
    (tmp_path / "amber_or_gromacs.json").write_text(json.dumps(config))
    m = load_molecule(tmp_path / "amber_or_gromacs.json")
    reference = load_molecule(molecule_dir / "config.json")
    assert m.n_atoms == N_ATOMS and m.system.getNumConstraints() == 0
    assert [a.name for a in m.topology.atoms()] == [a.name for a in reference.topology.atoms()]

    frame = mdtraj.load(str(molecule_dir / "md.dcd"), top=str(PDB)).xyz[5].astype(np.float64)
    assert _reference_energy(m.system, frame) == pytest.approx(
        _reference_energy(reference.system, frame), rel=1e-5, abs=1e-3
    )
    with pytest.raises(ValueError, match=r"amber_or_gromacs2.json: key 'forcefield': not used with"):
        (tmp_path / "amber_or_gromacs2.json").write_text(
            json.dumps({"topology": topology, "forcefield": ["amber14-all.xml"]})
        )
        load_molecule(tmp_path / "amber_or_gromacs2.json")


def test_yaml_and_toml_configs(molecule_dir):
    yaml = pytest.importorskip("yaml")
    config = {"topology": "peptide.pdb", "forcefield": ["amber14-all.xml"], "temperature": 280.0}
    (molecule_dir / "m.yaml").write_text(yaml.safe_dump(config))
    (molecule_dir / "m.toml").write_text(
        'topology = "peptide.pdb"\nforcefield = ["amber14-all.xml"]\ntemperature = 280.0\n'
    )
    for name in ("m.yaml", "m.toml"):
        assert is_molecule_config(molecule_dir / name) and load_molecule(molecule_dir / name).temperature == 280.0


# ---------------------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "changes, error, pattern",
    [
        ({"topology": "nowhere.pdb"}, FileNotFoundError, r"key 'topology': no file .*nowhere.pdb"),
        ({"forcefield": ["amber14-all.xml", "no_such_ff.xml"]}, ValueError, r"'forcefield'.*no_such_ff.xml"),
        ({"forcefield": ["amber14/tip3p.xml"]}, ValueError, r"'forcefield'.*peptide.pdb.*No template found"),
        ({"topolgy": "peptide.pdb"}, ValueError, r"unknown key\(s\) \['topolgy'\]; known keys: .*'topology'"),
        ({"temperature": "300"}, ValueError, r"key 'temperature': must be int or float, got str"),
        ({"temperature": -1}, ValueError, r"key 'temperature': must be positive"),
        ({"md": {"nanoseconds": 1}}, ValueError, r"key 'md': unknown setting.*'nanoseconds'.*known.*'ns'"),
        ({"topology": {"prmtop": "a.prmtop"}}, ValueError, r"key 'topology': must be a structure file path or"),
    ],
)
def test_bad_molecule_inputs_name_the_key_and_file(molecule_dir, changes, error, pattern):
    path = write_config(molecule_dir, **changes)
    with pytest.raises(error, match=pattern) as info:
        load_molecule(path)
    assert str(path) in str(info.value)


def test_missing_forcefield_key(molecule_dir):
    path = write_config(molecule_dir, drop=("forcefield",))
    with pytest.raises(ValueError, match=r"variant.json: key 'forcefield': missing"):
        load_molecule(path)


def test_trajectory_atom_count_and_order_are_checked(molecule_dir):
    traj = mdtraj.load(str(molecule_dir / "md.dcd"), top=str(PDB))
    traj.atom_slice(range(21)).save(str(molecule_dir / "short.dcd"))
    path = write_config(molecule_dir, trajectories="short.dcd")
    with pytest.raises(ValueError, match=r"key 'trajectories'.*short.dcd.* has 21 atoms but the topology .* has 22"):
        ConfigSystem(path).training_data(ConfigSystem(path).CONFIG)
    traj[:2].save(str(molecule_dir / "ordered.pdb"))
    lines = (molecule_dir / "ordered.pdb").read_text().splitlines()
    atoms = [i for i, line in enumerate(lines) if line.startswith(("ATOM", "HETATM"))]
    for model_start in range(0, len(atoms), N_ATOMS):  # C(ACE) and O(ACE), atoms 4 and 5, change places
        i, j = atoms[model_start + 4], atoms[model_start + 5]
        lines[i], lines[j] = lines[j], lines[i]
    (molecule_dir / "swapped.pdb").write_text("\n".join(lines) + "\n")
    path = write_config(molecule_dir, trajectories=[{"file": "md.dcd", "stride": 100}, {"file": "swapped.pdb"}])
    system = ConfigSystem(path)
    with pytest.raises(
        ValueError,
        match=r"'trajectories\[1\]': atom 4 of the trajectory .*swapped.pdb' is ACE1:O, but .* has ACE1:C there",
    ):
        system.training_data(system.CONFIG)
    path = write_config(
        molecule_dir, trajectories={"file": "md.dcd", "topology": "peptide.pdb", "selection": "resSeq 2"}
    )
    with pytest.raises(ValueError, match=r"has 10 atoms but the topology"):
        ConfigSystem(path).training_data({"trajectories": json.loads(path.read_text())["trajectories"]})
    path = write_config(molecule_dir, trajectories="nothing_*.dcd")
    with pytest.raises(FileNotFoundError, match=r"key 'trajectories.file': no trajectory file .*nothing_\*.dcd"):
        ConfigSystem(path).training_data(ConfigSystem(path).CONFIG)
    path = write_config(molecule_dir, trajectories={"file": "md.dcd", "every": 2})
    with pytest.raises(ValueError, match=r"unknown setting.*'every'.*'stride'"):
        ConfigSystem(path).training_data(ConfigSystem(path).CONFIG)


@pytest.mark.parametrize(
    "cvs, pattern",
    [
        ({"bad": ["2:CX", "2:CA"]}, r"'collective_variables.bad': no atom '2:CX': residue 2 \(ALA\) has atoms"),
        ({"bad": ["9:CA", "2:CA"]}, r"no residue numbered 9"),
        ({"bad": ["2:CA"]}, r"must list 2 \(distance\), 3 \(angle\) or 4 \(torsion\) atoms"),
        ({"bad": ["resSeq 2 and (name CA or name C)", "2:N"]}, r"selects 2 atoms, not one"),
    ],
)
def test_bad_collective_variables_name_the_key(molecule_dir, cvs, pattern):
    path = write_config(molecule_dir, collective_variables=cvs, drop=("free_energy_regions",))
    with pytest.raises(ValueError, match=pattern) as info:
        ConfigSystem(path)
    assert str(path) in str(info.value)


def test_bad_regions_name_the_key(molecule_dir):
    path = write_config(molecule_dir, free_energy_regions={"r": {"a": {"chi": [0, 1]}, "b": {"psi_2": [0, 1]}}})
    with pytest.raises(
        ValueError, match=r"'free_energy_regions.r.a': unknown CV 'chi'; the CVs are \['phi_2', 'psi_2'\]"
    ):
        ConfigSystem(path)


# ----------------------------------------------------------------------------------- hooks of the system


def test_collective_variables_by_atom_names(molecule_dir):
    spec = {
        "backbone": True,
        "phi_by_name": ["1:C", "2:N", "2:CA", "2:C"],
        "d_ca_o": ["2:CA", "resSeq 2 and name O"],
        "angle_n_ca_c": ["2:N", "2:CA", 14],
    }
    system = ConfigSystem(write_config(molecule_dir, collective_variables=spec, drop=("free_energy_regions",)))
    assert list(system.collective_variables(np.zeros((1, 66)))) == [
        "phi_2",
        "psi_2",
        "phi_by_name",
        "d_ca_o",
        "angle_n_ca_c",
    ]
    traj = mdtraj.load(str(molecule_dir / "md.dcd"), top=str(PDB))
    cvs = system.collective_variables(traj.xyz.reshape(len(traj), -1))
    np.testing.assert_allclose(cvs["phi_2"], mdtraj.compute_phi(traj)[1][:, 0], atol=1e-6)
    np.testing.assert_allclose(cvs["psi_2"], mdtraj.compute_psi(traj)[1][:, 0], atol=1e-6)
    np.testing.assert_allclose(cvs["phi_by_name"], cvs["phi_2"], atol=1e-6)
    ca, o, n, c = 8, 15, 6, 14
    np.testing.assert_allclose(cvs["d_ca_o"], np.linalg.norm(traj.xyz[:, ca] - traj.xyz[:, o], axis=1), rtol=1e-5)
    u, v = traj.xyz[:, n] - traj.xyz[:, ca], traj.xyz[:, c] - traj.xyz[:, ca]
    cos = (u * v).sum(1) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)
    np.testing.assert_allclose(cvs["angle_n_ca_c"], np.arccos(cos), atol=1e-4)
    assert system.collective_variable_kinds["d_ca_o"] == "distance"


def test_periodic_regions(molecule_dir):
    regions = {"wrap": {"a": {"phi_2": [2.5, -2.5]}, "b": [{"phi_2": [-1.0, 1.0]}, {"psi_2": [3.0, 3.1]}]}}
    system = ConfigSystem(write_config(molecule_dir, free_energy_regions=regions))
    phi = np.array([3.0, -3.0, 0.0, 2.0, -2.6])
    psi = np.array([0.0, 0.0, 0.0, 3.05, 0.0])
    in_a, in_b = system.free_energy_regions({"phi_2": phi, "psi_2": psi})["wrap"]
    assert in_a.tolist() == [True, True, False, False, True]
    assert in_b.tolist() == [False, False, True, True, False]


def test_reference_free_energies_from_the_md_frames(molecule_dir):
    system = load_system(molecule_dir / "config.json")
    assert isinstance(system, ConfigSystem) and system is load_system(molecule_dir)  # cached, folder or file
    ref = system.reference_free_energies()
    psi = mdtraj.compute_psi(mdtraj.load(str(molecule_dir / "md.dcd"), top=str(PDB)))[1][:, 0].astype(np.float64)
    split = json.loads((molecule_dir / "config.json").read_text())["free_energy_regions"]["psi_split"]["a"]["psi_2"][1]
    n_a, n_b = np.sum(psi <= split), np.sum(psi >= split)
    assert ref["delta_f"]["psi_split"]["value"] == pytest.approx(math.log(n_a / n_b), abs=1e-12)
    assert 0 < ref["delta_f"]["psi_split"]["error"] < 2
    counts, edges = np.histogram(psi, bins=36, range=(-math.pi, math.pi))
    with np.errstate(divide="ignore"):
        f = -np.log(counts / np.diff(edges))
    f -= f[np.isfinite(f)].min()
    profile = ref["profiles"]["psi_2"]
    np.testing.assert_allclose(profile["centers"], 0.5 * (edges[1:] + edges[:-1]), atol=1e-12)
    np.testing.assert_allclose(profile["free_energy"], f, atol=1e-9)
    populated = counts > 20
    assert np.isfinite(profile["error"][populated]).all() and (profile["error"][populated] > 0).all()


def test_target_falls_back_to_openmm_with_a_warning(molecule_dir, monkeypatch):
    from bgflow_sci.energies import OpenMMEnergy, TorchForceField

    def unsupported(*args, **kwargs):
        raise ValueError("unsupported force FancyForce (force index 3)")

    monkeypatch.setattr(TorchForceField, "from_openmm", unsupported)
    system = ConfigSystem(molecule_dir / "config.json")
    with pytest.warns(RuntimeWarning, match=r"config.json: TorchForceField does not support .*FancyForce"):
        target = system.target_energy("auto")
    assert isinstance(target, OpenMMEnergy)
    with pytest.raises(ValueError, match=r"key 'model.target': TorchForceField cannot take .*FancyForce"):
        system.target_energy("torch")
    with pytest.raises(ValueError, match=r"key 'model.target': must be 'auto', 'torch' or 'openmm'"):
        system.target_energy("fast")


def test_states_give_a_state_mixture(molecule_dir):
    system = ConfigSystem(molecule_dir / "config.json")
    data = torch.as_tensor(system.training_data(system.CONFIG), dtype=torch.float32)
    quartet = ["1:C", "2:N", "2:CA", "2:HA"]  # a Z-matrix torsion, φ + const (as in systems/alanine_dipeptide)
    p = data.reshape(len(data), N_ATOMS, 3)
    from bgflow_sci.flows.internal import dihedral

    t = dihedral(*(p[:, i] for i in (4, 6, 8, 9)))
    mid = float(torch.atan2(torch.sin(t).mean(), torch.cos(t).mean()))
    states = {"torsion": quartet, "boundaries": [mid - 1.0, mid + 0.0]}  # two arcs, both holding frames
    config = {**system.CONFIG, "states": states, "model": {**system.CONFIG["model"], "n_layers": 2, "hidden": [8]}}
    bg = system.make_boltzmann_generator(config, data)
    assert bg.n_states == 2 and torch.isfinite(bg.log_prob(data[:5])).all()
    config["states"] = {"torsion": ["1:C", "2:N", "2:CA", "2:C"], "boundaries": [0.0, 2.0]}
    with pytest.raises(ValueError, match=r"key 'states.torsion'.*\(4, 6, 8, 14\) is not a torsion of the Z-matrix"):
        system.make_boltzmann_generator(config, data)
    config["states"] = {"torsion": ["1:C", "2:N", "2:CA"], "boundaries": [0.0]}
    with pytest.raises(ValueError, match=r"'states.torsion': must list four atoms"):
        system.make_boltzmann_generator(config, data)


def test_discovery_and_references(molecule_dir, tmp_path):
    config = (molecule_dir / "config.json").resolve()
    assert find_system(config) == config and find_system(molecule_dir) == config
    ref = system_reference(config, relative_to=tmp_path)
    assert ref["absolute"] == str(config) and resolve_system_reference(ref, tmp_path) == config
    assert resolve_system_reference({"path": ref["path"]}, tmp_path) == config
    # a folder with a system.py keeps it (the alanine dipeptide module, unchanged)
    alanine = find_system("alanine_dipeptide")
    assert alanine.name == "system.py" and system_reference("alanine_dipeptide") == {"name": "alanine_dipeptide"}


# ------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def trained(molecule_dir) -> Path:
    out = molecule_dir / "run"
    cli("train", str(molecule_dir / "config.json"), "--out", str(out), "--no-progress", "--threads", "1")
    return out


def test_train_from_the_config_file_writes_results_and_plots(trained, molecule_dir):
    results = json.loads((trained / "train.json").read_text())
    assert results["steps"] == 170 and results["train_frames"] + results["heldout_frames"] == N_FRAMES
    assert np.isfinite(results["heldout_nll"])
    rw = json.loads((trained / "results.json").read_text())
    assert rw["samples"] == 400 and 0 < rw["ess"] <= 1
    entry = rw["delta_f"]["psi_split"]
    profile = rw["profiles"]["psi_2"]  # the reweighted profile beside the MD's, and how far apart they are
    assert len(profile["centers"]) == len(profile["reweighted"]) == len(profile["reference"]) == 36
    assert profile["vs_reference"]["bins"] > 3 and 0 <= profile["vs_reference"]["rms"] < 10
    assert math.isfinite(entry["reweighted"]) and abs(entry["reference"]) < 0.1  # the split is the MD's median
    for name in (
        "training.png",
        "free_energy_phi_2.png",
        "free_energy_psi_2.png",
        "map_phi_2_psi_2.png",
        "samples.dcd",
    ):
        assert (trained / name).stat().st_size > 1000, name
    run = json.loads((trained / "run.json").read_text())
    assert run["system"]["path"] == "../config.json" and run["config"]["topology"] == "peptide.pdb"


def test_sample_and_reweight_from_the_saved_model(trained, tmp_path, monkeypatch):
    from bgflow_sci.workflows.reweight import reweight
    from bgflow_sci.workflows.sample import sample

    moved = tmp_path / "moved"
    shutil.copytree(trained.parent, moved, ignore=shutil.ignore_patterns("*.png", "samples*"))
    system = load_system(moved / "config.json")
    monkeypatch.setattr(system, "training_data", lambda config: pytest.fail("load_model read the training data"))
    module, _, bg = load_model(moved / "run" / "model.pt")
    assert module is system  # found through the relative path of the moved folder
    path = sample(moved / "run" / "model.pt", 300, moved / "s" / "samples.npz")
    monkeypatch.undo()
    res = reweight(path, moved / "s", n_bootstrap=5)
    assert res["samples"] == 300 and 0 < res["ess"] <= 1 and "psi_split" in res["delta_f"]
    assert (moved / "s" / "free_energy_psi_2.png").is_file() and (moved / "s" / "samples.dcd").is_file()


def test_sigkill_then_resume_equals_the_uninterrupted_run(trained, molecule_dir):
    from bgflow_sci.io import load_checkpoint

    killed = molecule_dir / "killed"
    args = ["train", str(molecule_dir / "config.json"), "--out", str(killed), "--no-evaluate", "--no-progress"]
    step = kill_after_checkpoint(
        [sys.executable, "-m", "bgflow_sci.cli", *args, "--threads", "1"], killed / "checkpoint.pt", 50
    )
    assert 50 <= step < 170 and not (killed / "model.pt").exists()
    cli("train", "--resume", "--out", str(killed), "--no-evaluate", "--no-progress", "--threads", "1")
    a = load_checkpoint(trained / "model.pt", "boltzmann_generator")["state_dict"]
    b = load_checkpoint(killed / "model.pt", "boltzmann_generator")["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_enhanced_md_reports_the_config_regions(trained):
    from bgflow_sci.workflows.enhanced_md import enhanced_md

    report = enhanced_md(
        trained / "model.pt", trained / "emd", n_cycles=4, md_steps=20, proposals_per_cycle=3, progress=False
    )
    assert set(report["regions"]) == {"psi_split"} and set(report["collective_variables"]) == {"phi_2", "psi_2"}
    region = report["regions"]["psi_split"]
    assert 0 <= region["fraction_in_a"] + region["fraction_in_b"] <= 1 + 1e-12 and region["transitions"] >= 0
    with np.load(trained / "emd" / "cvs.npz") as f:
        assert f["cv_psi_2"].shape == f["region_psi_split"].shape == (report["frames"],)


def test_cli_errors_are_one_line(molecule_dir):
    path = write_config(molecule_dir, name="bad.json", forcefield=["no_such_ff.xml"])
    proc = cli("train", str(path), "--out", str(molecule_dir / "bad"), check=False)
    assert proc.returncode == 1 and "error:" in proc.stderr and "no_such_ff.xml" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_without_trajectories_the_md_of_the_config_is_generated_then_reused(tmp_path):
    md = pytest.importorskip("bgflow_sci.workflows.md")
    if not hasattr(md, "run_molecule_md"):
        pytest.skip("the MD runner is not there")
    shutil.copy(PDB, tmp_path / "peptide.pdb")
    config = {
        "topology": "peptide.pdb",
        "forcefield": ["amber14-all.xml"],
        "md": {"ns": 0.002, "frame_ps": 0.02, "replicas": 2, "equilibration_ps": 0.5, "platform": "Reference"},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    system = ConfigSystem(tmp_path / "config.json")
    system.md_progress = False
    frames = system.training_data(system.CONFIG)
    positions, chain = system.reference_frames()
    assert frames.shape == (200, 3 * N_ATOMS) and np.isfinite(frames).all()
    assert np.bincount(chain).tolist() == [100, 100]
    written = {p: p.stat().st_mtime_ns for p in (tmp_path / "md").rglob("*") if p.is_file()}
    again = ConfigSystem(tmp_path / "config.json")  # a fresh object: the MD on disk is reused, not rerun
    again.md_progress = False
    np.testing.assert_array_equal(again.training_data(again.CONFIG), frames)
    assert {p: p.stat().st_mtime_ns for p in written} == written
    assert set(again.reference_free_energies()["profiles"]) == {"phi_2", "psi_2"}


def test_a_shipped_config_folder_is_recorded_by_name(molecule_dir, tmp_path):
    root = tmp_path / "systems"
    (root / "my_peptide").mkdir(parents=True)
    shutil.copy(molecule_dir / "peptide.pdb", root / "my_peptide" / "peptide.pdb")
    config = {"topology": "peptide.pdb", "forcefield": ["amber14-all.xml"]}
    (root / "my_peptide" / "config.json").write_text(json.dumps(config))
    code = (
        "from bgflow_sci.workflows.systems import *; "
        "p = find_system('my_peptide'); ref = system_reference('my_peptide'); "
        "assert available_systems() == ['my_peptide'] and ref == {'name': 'my_peptide'}, (available_systems(), ref); "
        "assert resolve_system_reference(ref) == p and p.name == 'config.json'; "
        "print(type(load_system('my_peptide')).__name__)"
    )
    env = {**os.environ, "BGFLOW_SCI_SYSTEMS": str(root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ConfigSystem"
