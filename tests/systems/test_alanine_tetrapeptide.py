"""The config-only alanine tetrapeptide ACE-(ALA)3-NME: no ``system.py``, only ``config.json`` through the generic
path; its reference MD shipped as ``bgflow-sci md`` wrote it, the batched force field against OpenMM on its frames,
and the quick version of its ``bgflow-sci train`` run (BENCHMARKS.md has the full one)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import require

openmm = require("openmm")
require("mdtraj")

from bgflow_sci.workflows import ConfigSystem, load_molecule, load_system, read_md  # noqa: E402
from bgflow_sci.workflows.systems import SYSTEMS_DIR  # noqa: E402

FOLDER = SYSTEMS_DIR / "alanine_tetrapeptide"
CONFIG = FOLDER / "config.json"
N_ATOMS = 42
TORSIONS = ["phi_2", "phi_3", "phi_4", "psi_2", "psi_3", "psi_4"]


@pytest.fixture(scope="module")
def system() -> ConfigSystem:
    return load_system("alanine_tetrapeptide")


@pytest.fixture(scope="module")
def md(system) -> dict[str, np.ndarray]:
    return read_md(system.molecule.resolve(system.molecule.config["md"]["out"]))


def test_the_system_is_the_config_alone(system):
    assert not (FOLDER / "system.py").exists() and isinstance(system, ConfigSystem)
    m = load_molecule(CONFIG)
    assert m.n_atoms == N_ATOMS and m.temperature == 300.0 and m.system.getNumConstraints() == 0
    assert [r.name for r in m.topology.residues()] == ["ACE", "ALA", "ALA", "ALA", "NME"]
    kinds = {type(f).__name__ for f in m.system.getForces()}
    assert "CustomGBForce" in kinds  # implicit/obc2.xml with amber14-all
    assert sorted(system.collective_variable_kinds) == TORSIONS


def test_shipped_md_is_complete_and_continuous(system, md):
    settings = system.molecule.md
    replicas, frames = int(settings["replicas"]), round(settings["ns"] * 1000 / settings["frame_ps"])
    assert md["positions"].shape == (replicas * frames, N_ATOMS, 3) and md["forces"].shape == md["positions"].shape
    for k in range(replicas):
        time = md["time"][md["replica"] == k]
        np.testing.assert_allclose(np.diff(time), settings["frame_ps"], rtol=1e-6)  # no missing or repeated frame
    assert np.all(np.isfinite(md["potential_energy"])) and np.all(np.isfinite(md["forces"]))
    dof = 3 * N_ATOMS - 3  # CMMotionRemover, no constraints
    kinetic_t = (
        2
        * md["kinetic_energy"].mean()
        / (dof * openmm.unit.MOLAR_GAS_CONSTANT_R.value_in_unit_system(openmm.unit.md_unit_system))
    )
    assert kinetic_t == pytest.approx(300.0, rel=0.02)
    recorded = json.loads((system.molecule.resolve(settings["out"]) / "md.json").read_text())
    assert recorded["settings"]["n_atoms"] == N_ATOMS


def test_torch_target_is_openmm_on_md_frames(system, md):
    from openmm import unit

    target = system.target_energy("torch")
    frames = md["positions"][:: len(md["positions"]) // 4][:4].astype(np.float64)
    x = torch.as_tensor(frames.reshape(len(frames), -1), dtype=torch.float64)
    u, f = target.to(torch.float64).energy_and_force(x)
    context = openmm.Context(
        system.molecule.system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    kt = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin) * 300.0
    for i, frame in enumerate(frames):
        context.setPositions(frame)
        state = context.getState(getEnergy=True, getForces=True)
        ref_u = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / kt
        ref_f = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer) / kt
        assert u[i].item() == pytest.approx(ref_u, rel=1e-6, abs=1e-6)
        np.testing.assert_allclose(f[i].numpy(), ref_f.reshape(-1), rtol=1e-5, atol=1e-5 * np.abs(ref_f).max())


def test_quick_train_reweights_against_the_md(tmp_path, md):
    out = tmp_path / "run"
    quick = [
        "model.n_layers=2",
        "model.hidden=[32]",
        "train.ml_steps=150",
        "train.kl_steps=20",
        "train.kl_batch_size=64",
        "train.max_frames=2000",
        "evaluate.samples=500",
        "evaluate.batch_size=500",
        "evaluate.n_bootstrap=10",
    ]
    cmd = [sys.executable, "-m", "bgflow_sci.cli", "train", "alanine_tetrapeptide", "--out", str(out)]
    cmd += ["--no-progress", "--threads", "1", *[a for s in quick for a in ("--set", s)]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["samples"] == 500 and 0 < results["ess"] <= 1
    for name in ("phi_2", "phi_3", "phi_4"):
        assert (out / f"free_energy_{name}.png").stat().st_size > 1000
    train = json.loads((out / "train.json").read_text())
    assert math.isfinite(train["heldout_nll"]) and train["train_frames"] + train["heldout_frames"] == 2000
