"""Reference MD runner (:mod:`bgflow_sci.workflows.md`): continuous frames, forces equal to OpenMM's at the written
positions, independent parallel replicas, reuse, extension and settings checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bgflow_sci.workflows.md import read_md, run_md

PDB = Path(__file__).resolve().parents[2] / "data" / "alanine_dipeptide" / "alanine_dipeptide.pdb"

FAST = {"frame_ps": 0.05, "platform": "Reference", "equilibration_ps": 0.2, "chunk_frames": 10, "progress": False}


def build_openmm_system(solvent: str):
    """``(topology, system, positions nm)`` of alanine dipeptide, amber99sbildn (+ OBC), NoCutoff, no constraints."""
    from openmm import app, unit

    pdb = app.PDBFile(str(PDB))
    ff = app.ForceField("amber99sbildn.xml", *(["amber99_obc.xml"] if solvent == "obc2" else []))
    system = ff.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False)
    return pdb.topology, system, np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer))


@pytest.fixture(scope="module")
def vacuum():
    return build_openmm_system("vacuum")


@pytest.fixture(scope="module")
def two_replicas(vacuum, tmp_path_factory):
    top, system, pos = vacuum
    out = tmp_path_factory.mktemp("md") / "run"
    run_md(system, pos, 300.0, out, ns=0.002, replicas=2, topology=top, **FAST)
    return out


def test_frames_continuous_and_forces_match_openmm(vacuum, two_replicas):
    import openmm
    from openmm import unit

    _, system, _ = vacuum
    data = read_md(two_replicas)
    assert data["positions"].shape == data["forces"].shape == (80, 22, 3)
    assert data["positions"].dtype == data["forces"].dtype == np.float32
    for k in (0, 1):
        t = data["time"][data["replica"] == k]
        np.testing.assert_allclose(t, 0.05 * np.arange(1, 41), rtol=0, atol=1e-9)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    for i in (0, 17, 39, 40, 79):
        ctx.setPositions(data["positions"][i].astype(np.float64))
        st = ctx.getState(getForces=True, getEnergy=True)
        f = st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        np.testing.assert_allclose(data["forces"][i], f, rtol=1e-4, atol=0.05)
        e = st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        assert abs(e - data["potential_energy"][i]) < 1e-3
    assert np.all(np.isfinite(data["temperature"])) and 100 < data["temperature"].mean() < 600


def test_replicas_differ_and_ran_in_processes(two_replicas):
    data = read_md(two_replicas)
    a, b = data["positions"][data["replica"] == 0], data["positions"][data["replica"] == 1]
    assert np.abs(a - b).max() > 1e-2
    seeds = {json.loads((two_replicas / f"replica{k}" / "state.json").read_text())["openmm_seed"] for k in (0, 1)}
    assert seeds == {1, 2}
    assert (two_replicas / "topology.pdb").is_file()


def test_reuse_extend_and_settings_mismatch(vacuum, tmp_path):
    top, system, pos = vacuum
    out = tmp_path / "run"
    run_md(system, pos, 300.0, out, ns=0.001, topology=top, **FAST)
    first = read_md(out)
    runs = len(json.loads((out / "md.json").read_text())["runs"])
    run_md(system, pos, 300.0, out, ns=0.001, topology=top, **FAST)  # complete: nothing recomputed
    assert len(json.loads((out / "md.json").read_text())["runs"]) == runs
    run_md(system, pos, 300.0, out, ns=0.002, topology=top, **FAST)
    ext = read_md(out)
    assert len(ext["time"]) == 40
    np.testing.assert_allclose(ext["time"], 0.05 * np.arange(1, 41), atol=1e-9)
    np.testing.assert_array_equal(ext["positions"][:20], first["positions"])
    with pytest.raises(ValueError, match="timestep_fs") as err:
        run_md(system, pos, 300.0, out, ns=0.003, timestep_fs=2.0, **FAST)
    assert str(out) in str(err.value)
    with pytest.raises(ValueError, match="temperature"):
        run_md(system, pos, 310.0, out, ns=0.003, **FAST)
    _, obc, _ = build_openmm_system("obc2")
    with pytest.raises(ValueError, match="system_sha256"):
        run_md(obc, pos, 300.0, out, ns=0.003, **FAST)


def test_read_md_names_an_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        read_md(tmp_path)
