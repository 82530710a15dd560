"""Trajectories through mdtraj: flat or (frames, atoms, 3) positions in nm round trip in DCD and XTC."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import require

mdtraj = require("mdtraj")

from bgflow_sci.io import read_trajectory, write_trajectory  # noqa: E402


@pytest.fixture
def topology():
    from bgflow_sci.workflows import load_system

    return load_system("alanine_dipeptide").topology()


@pytest.mark.parametrize("suffix, atol", [(".dcd", 2e-4), (".xtc", 1e-3), (".pdb", 1e-3)])
def test_round_trip(tmp_path, topology, suffix, atol):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 66)).astype(np.float32)
    path = write_trajectory(x, topology, tmp_path / "t", suffix=suffix, time_ps=np.arange(5.0))
    assert path.suffix == suffix
    back = read_trajectory(path, topology)
    np.testing.assert_allclose(back.reshape(5, -1), x, atol=atol)
    np.testing.assert_allclose(read_trajectory(write_trajectory(x.reshape(5, 22, 3), topology, path), topology), back)


def test_wrong_atom_count_and_missing_file_are_named(tmp_path, topology):
    with pytest.raises(ValueError, match="22 atoms but the frames have 63 coordinates"):
        write_trajectory(np.zeros((2, 63)), topology, tmp_path / "t.dcd")
    with pytest.raises(FileNotFoundError, match="none.dcd"):
        read_trajectory(tmp_path / "none.dcd", topology)
