"""The one checkpoint format: plain types round trip, RNG states restore exactly, bad files name themselves."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from bgflow_sci.io import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state


def test_round_trip_of_plain_types_and_tensors(tmp_path, device):
    payload = {
        "w": torch.arange(6.0, device=device).reshape(2, 3),
        "nested": {"list": [1, 2.5, "a", None, True], "tuple": (1, (2, 3))},
        "dtype": torch.float64,
        "array": np.arange(4),
        "path": tmp_path / "x",
    }
    path = save_checkpoint(tmp_path / "c.pt", "thing", payload)
    blob = load_checkpoint(path, "thing")
    assert blob["kind"] == "thing" and blob["format"] == "bgflow_sci" and blob["version"] == 1
    assert torch.equal(blob["w"], payload["w"].cpu()) and blob["w"].device.type == "cpu"
    assert blob["nested"] == payload["nested"] and blob["dtype"] is torch.float64
    assert torch.equal(blob["array"], torch.arange(4)) and blob["path"] == str(tmp_path / "x")
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed away


def test_unstorable_objects_are_refused_before_writing(tmp_path):
    with pytest.raises(CheckpointError, match=r"payload\['model'\] of type Linear"):
        save_checkpoint(tmp_path / "c.pt", "thing", {"model": torch.nn.Linear(2, 2)})
    assert not (tmp_path / "c.pt").exists()


def test_rng_states_restore_every_generator():
    state = rng_state()
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    set_rng_state(state)
    got = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_rng_state_survives_a_weights_only_file(tmp_path):
    save_checkpoint(tmp_path / "r.pt", "rng", {"rng": rng_state()})
    expected = (torch.randn(4), np.random.standard_normal(4))
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    assert torch.equal(torch.randn(4), expected[0]) and np.array_equal(np.random.standard_normal(4), expected[1])


def test_missing_corrupt_foreign_and_wrong_kind_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    good = save_checkpoint(tmp_path / "good.pt", "trainer", {"step": 3})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="truncated.pt.*not a readable bgflow_sci checkpoint"):
        load_checkpoint(truncated)
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="text.pt"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")  # a torch file, but not ours
    with pytest.raises(CheckpointError, match="plain.pt.*no format tag"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="'trainer' checkpoint, expected 'boltzmann_generator'"):
        load_checkpoint(good, "boltzmann_generator")
    assert load_checkpoint(good, ("boltzmann_generator", "trainer"))["step"] == 3


def test_code_in_a_foreign_pickle_never_runs(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"format": "bgflow_sci", "x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_no_unsafe_loading_anywhere_in_the_package():
    from pathlib import Path

    import bgflow_sci

    root = Path(bgflow_sci.__file__).parent
    offenders = [str(p) for p in root.rglob("*.py") if "weights_only=False" in p.read_text()]
    assert not offenders
    loads = [str(p.relative_to(root)) for p in root.rglob("*.py") if "torch.load(" in p.read_text()]
    assert loads == ["io/checkpoints.py"], loads  # every checkpoint goes through the one loader
