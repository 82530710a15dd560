"""``bgflow-sci morph`` via argparse on a small synthetic ROOT file.  Runtime ≈ 5 s (1 thread)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

pytest.importorskip("uproot")

from bgflow_sci.hep.cli import add_morph_parser  # noqa: E402
from bgflow_sci.hep.io import read_tree  # noqa: E402
from bgflow_sci.hep.morphing import MorphingFlow  # noqa: E402
from bgflow_sci.hep.synthetic import write_root  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bgflow-sci")
    add_morph_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def test_morph_cli_writes_corrected_branches(tmp_path, capsys):
    src = write_root(tmp_path / "sample.root", 600, 600, seed=0)
    out, model_path = tmp_path / "corrected.root", tmp_path / "model.pt"
    args = _parser().parse_args(
        ["morph", "--mc", f"{src}:mc", "--data", f"{src}:data", "--vars", "r9_1", "sieie_1", "--context", "pt_1",
         "eta_1", "--kinds", "r9_1=logit", "sieie_1=log", "pt_1=log", "--steps", "30", "--batch-size", "128",
         "--layers", "2", "--eval-batches", "3", "--out", str(out), "--save-model", str(model_path), "--no-progress"]
    )  # fmt: skip
    assert args.func(args) == 0
    assert '"constraint_satisfied"' in capsys.readouterr().out
    got, _ = read_tree(out, "mc", ["r9_1", "r9_1_corr", "sieie_1_corr", "pt_1", "eta_1", "sieie_1"], library="np")
    model = MorphingFlow.load(model_path)
    assert model.names == ["r9_1", "sieie_1"] and model.context_names == ["pt_1", "eta_1"]
    expected = model.morph({k: got[k] for k in ("r9_1", "sieie_1", "pt_1", "eta_1")})
    np.testing.assert_allclose(got["r9_1_corr"], expected["r9_1"], rtol=1e-6)
    np.testing.assert_allclose(got["sieie_1_corr"], expected["sieie_1"], rtol=1e-6)
    original, _ = read_tree(src, "mc", ["r9_1"], library="np")
    np.testing.assert_array_equal(got["r9_1"], original["r9_1"])  # originals copied untouched


def test_morph_cli_bad_input(tmp_path):
    src = write_root(tmp_path / "sample.root", 50, 50, seed=0)
    parser = _parser()
    args = parser.parse_args(
        ["morph", "--mc", str(src), "--data", str(src), "--tree", "mc", "--vars", "r9_1", "--kinds", "nope=log",
         "--out", str(tmp_path / "o.root")]
    )  # fmt: skip
    with pytest.raises(SystemExit, match="nope"):
        args.func(args)
    args = parser.parse_args(["morph", "--mc", str(src), "--data", str(src), "--vars", "r9_1", "--out", "o.root"])
    with pytest.raises(SystemExit, match="tree"):
        args.func(args)
    args = parser.parse_args(
        ["morph", "--mc", str(src), "--data", str(src), "--tree", "mc", "--vars", "missing_branch", "--out",
         str(tmp_path / "o.root")]
    )  # fmt: skip
    with pytest.raises(ValueError, match="missing_branch"):
        args.func(args)
