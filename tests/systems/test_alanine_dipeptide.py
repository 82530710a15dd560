"""The alanine dipeptide system folder: loader, OpenMM systems, MD script and the shipped reference data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tests.conftest import in_ci, require, skip_or_fail

openmm = require("openmm")
from openmm import unit  # noqa: E402

from bgflow_sci.workflows.systems import SYSTEMS_DIR, available_systems, load_system  # noqa: E402

ad = load_system("alanine_dipeptide")


def test_loader_by_name_folder_module_and_config():
    assert "alanine_dipeptide" in available_systems()
    folder = SYSTEMS_DIR / "alanine_dipeptide"
    for key in (folder, folder / "system.py", folder / "config.json", str(folder)):
        assert load_system(key) is ad
    with pytest.raises(FileNotFoundError, match="available systems: .*alanine_dipeptide"):
        load_system("no_such_molecule")


@pytest.mark.parametrize("solvent", ["vacuum", "obc2"])
def test_build_openmm_system(solvent):
    top, system, positions = ad.build_openmm_system(solvent)
    assert top.getNumAtoms() == system.getNumParticles() == 22 and positions.shape == (22, 3)
    assert [r.name for r in top.residues()] == ["ACE", "ALA", "NME"]
    forces = {type(f).__name__: f for f in system.getForces()}
    expected = {"HarmonicBondForce", "HarmonicAngleForce", "PeriodicTorsionForce", "NonbondedForce", "CMMotionRemover"}
    assert set(forces) == expected | ({"GBSAOBCForce"} if solvent == "obc2" else set())
    assert forces["NonbondedForce"].getNonbondedMethod() == openmm.NonbondedForce.NoCutoff
    assert system.getNumConstraints() == 0
    if solvent == "obc2":
        gb = forces["GBSAOBCForce"]
        assert gb.getSoluteDielectric() == 1.0 and gb.getSolventDielectric() == pytest.approx(78.3)  # amber99_obc.xml
        assert gb.getNonbondedMethod() == gb.NoCutoff
    # bonds of the PDB structure sit near their force-field minima (independent check of the atom order)
    bonds = forces["HarmonicBondForce"]
    lengths = [bonds.getBondParameters(i) for i in range(bonds.getNumBonds())]
    r = [np.linalg.norm(positions[i] - positions[j]) for i, j, *_ in lengths]
    r0 = [b0.value_in_unit(unit.nanometer) for _, _, b0, _ in lengths]
    np.testing.assert_allclose(r, r0, atol=0.01)
    with pytest.raises(ValueError, match="solvent"):
        ad.build_openmm_system("water")


def test_backbone_dihedrals_against_numpy():
    rng = np.random.default_rng(0)
    _, _, pos = ad.build_openmm_system("vacuum")
    x = pos[None] + 0.02 * rng.standard_normal((5, 22, 3))

    def dihedral(p, idx):
        b0, b1, b2 = p[:, idx[0]] - p[:, idx[1]], p[:, idx[2]] - p[:, idx[1]], p[:, idx[3]] - p[:, idx[2]]
        b1n = b1 / np.linalg.norm(b1, axis=1, keepdims=True)
        v = b0 - (b0 * b1n).sum(1, keepdims=True) * b1n
        w = b2 - (b2 * b1n).sum(1, keepdims=True) * b1n
        return np.arctan2((np.cross(b1n, v) * w).sum(1), (v * w).sum(1))

    phi, psi = ad.backbone_dihedrals(x)
    np.testing.assert_allclose(phi, dihedral(x, ad.PHI_ATOMS), atol=1e-5)
    np.testing.assert_allclose(psi, dihedral(x, ad.PSI_ATOMS), atol=1e-5)


def test_missing_data_names_the_command(monkeypatch, tmp_path):
    monkeypatch.setattr(ad, "DATA_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"generate_md\.py --solvent obc2 --frames 50000"):
        ad.load_reference_data("obc2")
    with pytest.raises(FileNotFoundError, match=r"reference\.py --solvent vacuum"):
        ad.load_reference_free_energy("vacuum")
    with pytest.raises(FileNotFoundError, match=r"metadynamics\.py --solvent obc2 --walkers 2"):
        ad.metadynamics_frames("obc2")
    monkeypatch.setattr(ad, "load_reference_data", lambda solvent: {"positions": np.zeros((2, 22, 3), np.float32)})
    with pytest.raises(FileNotFoundError, match=r"generate_md\.py --solvent obc2 --start basin"):
        ad.training_data({"data": {"solvent": "obc2", "basin_md": True}})


def test_metadynamics_frozen_bias_is_the_stored_bias(tmp_path, monkeypatch):
    """A short run of ``metadynamics.py``: the bias V stored with each frame equals the energy of the saved bias
    grid (rebuilt as an OpenMM tabulated function) at that frame, so frame ``j`` is sample ``(j+1)·every − 1`` and
    the weights ``exp(V/kT)`` are those of the frozen bias; phase 1 did deposit Gaussians."""
    import importlib.util

    monkeypatch.syspath_prepend(str(ad.HERE))  # the script imports generate_md from its folder
    spec = importlib.util.spec_from_file_location("_metad", ad.HERE / "metadynamics.py")
    metad = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(metad)
    metad.main(
        ["--walkers", "1", "--build-ns", "0.01", "--production-ns", "0.004", "--frame-ps", "1"]
        + ["--grid", "36", "--height", "2", "--out-dir", str(tmp_path)]
    )
    with np.load(tmp_path / "metad_obc2.npz") as f:
        bias, grid, frames = f["bias"][0], f["bias_grid"][0], f["positions"][0]
        every = round(float(f["frame_ps"]) * 1000 / float(f["sample_fs"]))
        assert f["build_cv"].shape == (1, 20, 2)
    assert grid.shape == (36, 36) and grid.max() > 5.0  # 20 Gaussians of 2 kJ/mol deposited
    assert frames.shape == (4, 22, 3) and bias.shape == (20,)
    cv = openmm.CustomCVForce("table(cv0, cv1)")
    for i, atoms in enumerate((ad.PHI_ATOMS, ad.PSI_ATOMS)):
        torsion = openmm.CustomTorsionForce("theta")
        torsion.addTorsion(*atoms, [])
        cv.addCollectiveVariable(f"cv{i}", torsion)
    cv.addTabulatedFunction(
        "table", openmm.Continuous2DFunction(36, 36, grid.reshape(-1), -np.pi, np.pi, -np.pi, np.pi, True)
    )
    system = openmm.System()
    for _ in range(22):
        system.addParticle(1.0)
    system.addForce(cv)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    energies = []
    for x in frames:
        context.setPositions(x.astype(np.float64))
        energies.append(context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    np.testing.assert_allclose(energies, bias[every - 1 :: every], rtol=1e-4, atol=1e-4)


def test_generate_md_writes_positions_and_matching_forces(tmp_path):
    gen = load_system(SYSTEMS_DIR / "alanine_dipeptide" / "generate_md.py")
    gen.main(
        [
            "--solvent",
            "obc2",
            "--frames",
            "3",
            "--chains",
            "1",
            "--interval-ps",
            "0.02",
            "--equilibrate-ps",
            "0.01",
            "--chunk",
            "2",
            "--out-dir",
            str(tmp_path),
        ]
    )
    meta = json.loads((tmp_path / "md_obc2.json").read_text())
    assert meta["frames"] == 3 and meta["timestep_fs"] == 1.0 and meta["platform"] == "Reference"
    assert not list(tmp_path.glob("partial_*"))
    with np.load(tmp_path / "md_obc2.npz") as f:
        pos, frc, epot = f["positions"], f["forces"], f["potential_energy"]
    assert pos.shape == frc.shape == (3, 22, 3) and pos.dtype == np.float32
    _, system, _ = ad.build_openmm_system("obc2")
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    for p, f, e in zip(pos, frc, epot):
        context.setPositions(p.astype(np.float64))
        state = context.getState(getEnergy=True, getForces=True)
        f_ref = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        np.testing.assert_allclose(f, f_ref, rtol=2e-3, atol=2e-3 * np.abs(f_ref).max())
        assert e == pytest.approx(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole), abs=0.05)


@pytest.mark.skipif(not in_ci() and not (ad.DATA_DIR / "metad_obc2.npz").exists(), reason="no metadynamics data")
def test_generate_md_from_the_basin(tmp_path):
    """``--start basin``: chains start from the most probable αL/C7ax metadynamics frames (one each) and write
    ``md_<solvent>_basin.npz``; a few fs later they are still in the basin."""
    import subprocess
    import sys

    script = SYSTEMS_DIR / "alanine_dipeptide" / "generate_md.py"
    args = ["--start", "basin", "--frames", "4", "--chains", "2", "--interval-ps", "0.01", "--equilibrate-ps", "0.01"]
    proc = subprocess.run(
        [sys.executable, str(script), *args, "--out-dir", str(tmp_path)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((tmp_path / "md_obc2_basin.json").read_text())
    assert meta["frames"] == 4 and "αL/C7ax" in meta["start"] and "--start basin" in meta["command"]
    with np.load(tmp_path / "md_obc2_basin.npz") as f:
        pos, chain = f["positions"], f["chain"]
    phi, _ = ad.backbone_dihedrals(pos)
    assert ad.in_alpha_l_basin(phi).all() and ad.all_trans(pos).all() and set(chain.tolist()) == {0, 1}
    assert not np.allclose(pos[chain == 0][0], pos[chain == 1][0], atol=0.05)  # two different starting frames


@pytest.mark.skipif(not in_ci() and not ad.md_file("obc2").exists(), reason="no reference MD data")
def test_shipped_reference_data():
    meta = json.loads(ad.md_file("obc2").with_suffix(".json").read_text())
    data = ad.load_reference_data("obc2")
    n = len(data["positions"])
    assert data["positions"].shape == data["forces"].shape == (n, 22, 3) and n == meta["frames"]
    assert meta["interval_ps"] >= 1.0 and meta["temperature_K"] == 300.0 and meta["timestep_fs"] == 1.0
    assert np.isfinite(data["positions"]).all() and np.isfinite(data["forces"].astype(np.float32)).all()
    assert ad.md_file("obc2").stat().st_size < 20e6
    # equipartition: the mean potential energy is stationary between the two halves of the data (within 1 kT)
    e = data["potential_energy"].astype(np.float64)
    assert abs(e[: n // 2].mean() - e[n // 2 :].mean()) < 8.314e-3 * 300
    # the stored forces are OpenMM's forces at the stored positions (float16 storage: relative 1e-3)
    with ad.openmm_energy("obc2") as energy:
        idx = np.linspace(0, n - 1, 5).astype(int)
        f_ref = energy.force(torch.as_tensor(data["positions"][idx].reshape(5, -1), dtype=torch.float64)) * energy.kt
    f = data["forces"][idx].reshape(5, -1).astype(np.float64)
    np.testing.assert_allclose(f, f_ref.numpy(), rtol=2e-3, atol=2e-3 * float(f_ref.abs().max()))
    traj = ad.reference_trajectory("obc2")
    assert traj.n_frames == n and traj.n_atoms == 22
    if "status" in meta:
        skip_or_fail(f"partial data ({n} frames): {meta['status']}")
    assert n >= 50_000


@pytest.mark.skipif(not in_ci() and not (ad.DATA_DIR / "reference_obc2.json").exists(), reason="no reference")
def test_reference_free_energy_matches_data():
    ref = ad.load_reference_free_energy("obc2")
    phi, _ = ad.backbone_dihedrals(ad.load_reference_data("obc2")["positions"])
    n_pos, n_neg = (phi > 0).sum(), (phi <= 0).sum()
    if n_pos == 0:
        skip_or_fail("no phi > 0 frames in the (partial) data yet")
    plain = ref["delta_f_plain_md"]
    assert plain["value"] == pytest.approx(-math.log(n_pos / n_neg), abs=1e-9)
    assert plain["error"] > 0 and ref["md"]["frames"] == len(phi)
    prof = ref["profile"]
    assert prof["free_energy"].shape == prof["error"].shape == (len(prof["centers"]),)
    assert prof["md_free_energy"].shape == prof["free_energy"].shape


def test_umbrella_script_and_mbar_reference(tmp_path, monkeypatch):
    """A tiny 1D umbrella run (6 windows) through ``reference.umbrella_reference``: MBAR weights of the frames are
    normalised, ΔF is finite, each window's mean φ sits near its centre, and the cis check is recorded."""
    import importlib

    monkeypatch.syspath_prepend(str(ad.HERE))
    umbrella = importlib.import_module("umbrella")
    reference = importlib.import_module("reference")
    umbrella.main(
        ["--windows", "6", "--kappa", "500", "--equilibrate-ps", "0.5", "--production-ps", "2", "--sample-fs", "20"]
        + ["--frame-ps", "0.5", "--out-dir", str(tmp_path)]
    )
    with np.load(tmp_path / "umbrella_obc2.npz") as f:
        assert f["cis_fraction"].shape == (6,) and (f["cis_fraction"] == 0).all()
        phi, centers = f["phi"], f["centers"]
    mean = np.arctan2(np.sin(phi).mean(1), np.cos(phi).mean(1))
    assert np.abs(np.angle(np.exp(1j * (mean - centers)))).max() < 0.6
    fake = type(
        "AD",
        (),
        {"DATA_DIR": tmp_path, "BASIN_SPLIT": ad.BASIN_SPLIT, "in_alpha_l_basin": staticmethod(ad.in_alpha_l_basin)},
    )
    r = reference.umbrella_reference(fake, "obc2", 12, 0.5, 5, 0, two_d=False)
    assert np.isclose(np.exp(r["frame_log_weights"]).sum(), 1.0)
    assert r["frame_log_weights"].shape == (6, 4)
    assert np.isfinite(r["delta_f"]["sign"]["value"])


@pytest.mark.skipif(not in_ci() and not (ad.DATA_DIR / "metad_obc2.npz").exists(), reason="no metadynamics data")
def test_metadynamics_reference_is_the_shipped_reference():
    """The frozen-bias metadynamics reference: its walkers (independent biases and chains) agree within their
    errors, each crosses between the φ basins many times, and ΔF equals -log of the profile's mass ratio."""
    ref = ad.load_reference_free_energy("obc2")
    assert "metadynamics" in ref["delta_f"]["method"]
    m = ref["metadynamics"]
    assert min(m["transitions_per_walker"]) >= 50
    err = ref["delta_f_basin"]["error"]
    assert 0 < err < 0.12  # shipped reference: 0.038 kT (walkers 3.883 and 3.827 kT)
    walkers = [w["basin"] for w in m["per_walker"]]
    assert max(walkers) - min(walkers) < 4 * err * math.sqrt(len(walkers))
    prof = ref["profile"]
    p = np.exp(-prof["free_energy"]) * np.diff(prof["edges"])
    c = prof["centers"]
    assert ref["delta_f"]["value"] == pytest.approx(-math.log(p[c > 0].sum() / p[c < 0].sum()), abs=0.05)
    # inside the main basin, where 50 ns of plain MD is converged, the two agree
    f_md = prof["md_free_energy"]
    core = f_md < 2.0
    shift = np.average(prof["free_energy"][core] - f_md[core], weights=np.exp(-f_md[core]))
    assert np.abs(prof["free_energy"][core] - f_md[core] - shift).max() < 0.5


@pytest.mark.skipif(not in_ci() and not (ad.DATA_DIR / "metad_obc2.npz").exists(), reason="no metadynamics data")
def test_metadynamics_frames_reproduce_the_reference():
    """The shipped frames: every one trans-trans (the 1D umbrella's φ > 0 walk was cis, see umbrella.py) and
    L-alanine, and their weights reproduce the reference ΔF."""
    frames, log_w = ad.metadynamics_frames("obc2")
    assert frames.shape == (len(log_w), 22, 3) and np.isclose(np.exp(log_w).sum(), 1.0)
    assert ad.all_trans(frames).all()
    md_frames = ad.load_reference_data("obc2")["positions"][:100]
    assert ad.all_trans(md_frames).all()
    # chirality at CA: sign of the improper N-C-CA-CB, as in the MD data
    import mdtraj

    def improper(x):
        return mdtraj.compute_dihedrals(mdtraj.Trajectory(x, ad.topology()), np.array([[6, 14, 8, 10]]))[:, 0]

    assert (np.sign(improper(frames)) == np.sign(improper(md_frames)[0])).all()
    phi, _ = ad.backbone_dihedrals(frames)
    basin = ad.in_alpha_l_basin(phi)
    ref = ad.load_reference_free_energy("obc2")["delta_f_basin"]
    df = -math.log(np.exp(log_w[basin]).sum() / np.exp(log_w[~basin]).sum())
    assert df == pytest.approx(ref["value"], abs=max(3 * ref["error"], 0.1))  # frames are a subsample


@pytest.mark.skipif(not in_ci() and not (ad.DATA_DIR / "metad_obc2.npz").exists(), reason="no metadynamics data")
def test_training_data_adds_boltzmann_weighted_basin_frames():
    """``data.basin_frames`` appends that many αL/C7ax frames drawn from the enhanced-sampling frames by their
    Boltzmann weights: all inside the basin, and their ψ statistics follow the weighted ones."""
    md = ad.load_reference_data("obc2")["positions"].reshape(-1, 66)
    x = ad.training_data({"data": {"solvent": "obc2", "basin_frames": 4000}})
    assert x.shape == (len(md) + 4000, 66)
    np.testing.assert_array_equal(x[: len(md)], md)
    extra = x[len(md) :].reshape(-1, 22, 3)
    phi, psi = ad.backbone_dihedrals(extra)
    assert ad.in_alpha_l_basin(phi).all()
    frames, log_w = ad.metadynamics_frames("obc2")
    assert np.isclose(np.exp(log_w).sum(), 1.0)
    uphi, upsi = ad.backbone_dihedrals(frames)
    basin = ad.in_alpha_l_basin(uphi)
    w = np.exp(log_w[basin]) / np.exp(log_w[basin]).sum()
    # the weighted ψ mean of the basin frames, reproduced by the draw within its sampling error
    weighted = float((w * np.cos(upsi[basin])).sum())
    drawn = float(np.cos(psi).mean())
    assert drawn == pytest.approx(weighted, abs=float(4 * np.cos(psi).std() / math.sqrt(4000 / 4)))
    # the Boltzmann weights put the basin at the reference population
    ref = ad.load_reference_free_energy("obc2")["delta_f_basin"]
    df = -math.log(np.exp(log_w[basin]).sum() / np.exp(log_w[~basin]).sum())
    assert df == pytest.approx(ref["value"], abs=max(3 * ref["error"], 0.1))


@pytest.mark.skipif(not in_ci() and not (ad.DATA_DIR / "metad_obc2.npz").exists(), reason="no metadynamics data")
def test_kl_target_lifts_only_the_alpha_l_basin():
    """``kl_target``: u − h on αL/C7ax frames (0 <= φ < 2.2), u elsewhere, with φ computed as mdtraj does."""
    from bgflow_sci.energies import Energy

    class Zero(Energy):
        def _energy(self, x):
            return torch.zeros(len(x), dtype=x.dtype)

    bg = type("BG", (), {"target": Zero(66)})()
    target = ad.kl_target({"train": {"kl_bias": 3.0}}, bg)
    md = ad.load_reference_data("obc2")["positions"][:200]
    phi, _ = ad.backbone_dihedrals(md)
    frames, _ = ad.metadynamics_frames("obc2")
    uphi, _ = ad.backbone_dihedrals(frames)
    alpha_l = frames[(uphi > 0.5) & (uphi < 1.5)][:50]
    x = torch.as_tensor(np.concatenate([md, alpha_l]).reshape(-1, 66), dtype=torch.float64)
    u = target.energy(x).numpy()
    far = (np.abs(phi) > 0.5) & (np.abs(phi - ad.BASIN_SPLIT) > 0.5)  # MD frames away from the basin's edges
    np.testing.assert_allclose(u[:200][far], 0.0, atol=5e-3)  # sigmoid tails: 3 e^{-5} at 0.5 rad
    np.testing.assert_allclose(u[200:], -3.0, atol=0.03)


def test_state_mixture_of_the_shipped_config_covers_each_basin_exactly():
    """The shipped config's generator: one flow per arc of C(ACE)-N-CA-CB (φ + 2.06 rad), cut on the barriers at
    φ ≈ 0 and φ ≈ BASIN_SPLIT. Each component's samples stay in its state, the density is consistent, and the
    states separate the αL/C7ax basin from the rest for every training frame."""
    from bgflow_sci.state_mixture import StateMixture

    config = json.loads(json.dumps(ad.CONFIG))
    config["model"].update(n_layers=2, hidden=[16])
    data = torch.as_tensor(ad.training_data(config)[::10], dtype=torch.float64)
    bg = ad.make_boltzmann_generator(config, data).double()
    assert isinstance(bg, StateMixture) and bg.n_states == 2
    state = bg.assign(data).numpy()
    phi, _ = ad.backbone_dihedrals(data.numpy())
    np.testing.assert_array_equal(state == 1, ad.in_alpha_l_basin(phi))
    torch.manual_seed(0)
    with torch.no_grad():
        for k, component in enumerate(bg.components):
            x, log_q = component.sample_with_log_prob(2000)
            assert (bg.assign(x) == k).all()
            torch.testing.assert_close(bg.log_prob(x), log_q + bg.log_pi[k], atol=1e-8, rtol=1e-10)
        assert torch.isfinite(bg.log_prob(data)).all()


def test_torsion_arc_and_state_mixture_errors():
    from bgflow_sci.molecular import TorsionArcs, molecular_boltzmann_generator, molecular_state_mixture

    data = torch.as_tensor(ad.load_reference_data("obc2")["positions"][:200].reshape(200, -1), dtype=torch.float64)
    with pytest.raises(ValueError, match="not a torsion of the Z-matrix"):
        molecular_boltzmann_generator(ad.topology(), None, data, torsion_arc=((4, 6, 8, 14), 0.0, 1.0))
    with pytest.raises(ValueError, match="length"):
        molecular_boltzmann_generator(ad.topology(), None, data, torsion_arc=((4, 6, 8, 9), 0.0, 7.0))
    with pytest.raises(ValueError, match="state 1 .* holds 0 of 200 frames"):
        molecular_state_mixture(ad.topology(), None, data, (4, 6, 8, 9), [-2.02, 2.06], n_layers=2, hidden=(8,))
    with pytest.raises(ValueError, match="increasing boundaries"):
        TorsionArcs((4, 6, 8, 9), [1.0, 0.5])
    # states of known torsions, wrapping included: arcs [-2, 1) and [1, 4.28)
    arcs = TorsionArcs((0, 1, 2, 3), [-2.0, 1.0])
    t = torch.tensor([0.5, -0.5, 1.5, -1.5, 2.5, -2.5, -1.99, -2.01, 3.1, -3.1], dtype=torch.float64)
    p = torch.zeros(len(t), 4, 3, dtype=torch.float64)
    p[:, 0, 0], p[:, 2, 1] = 1.0, 1.0  # atom 0 on x, atom 1 at the origin, atom 2 on y, atom 3 turned by t about y
    p[:, 3, 0], p[:, 3, 1], p[:, 3, 2] = torch.cos(t), 1.0, -torch.sin(t)
    torch.testing.assert_close(arcs.torsion(p.reshape(len(t), -1)), t)
    assert arcs(p.reshape(len(t), -1)).tolist() == [0, 0, 1, 0, 1, 1, 0, 1, 1, 1]
