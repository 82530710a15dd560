"""``bgflow-sci morph train|apply|report`` end to end on small synthetic ROOT files.  Runtime ≈ 10 s (1 thread)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require

require("uproot")

from bgflow_sci.cli import main  # noqa: E402
from bgflow_sci.hep.io import read_tree  # noqa: E402
from bgflow_sci.hep.morphing import MorphingFlow  # noqa: E402
from bgflow_sci.hep.synthetic import write_root  # noqa: E402

VARS, CONTEXT = ["r9_1", "sieie_1", "iso_1"], ["pt_1", "eta_1"]


def _run(argv: list[str]) -> int:
    return main(["morph", *argv])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained for a few steps on ``train.root`` and a separate ``test.root`` to apply it to."""
    tmp = tmp_path_factory.mktemp("morph_cli")
    train = write_root(tmp / "train.root", 800, 800, seed=0)
    test = write_root(tmp / "test.root", 700, 700, seed=1)
    model = tmp / "model.pt"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = _run(
        ["train", "--mc", f"{train}:mc", "--data", f"{train}:data", "--vars", *VARS, "--context", *CONTEXT,
         "--kinds", "r9_1=logit", "sieie_1=log", "iso_1=spike", "pt_1=log", "--steps", "40", "--batch-size", "128",
         "--layers", "2", "--eval-batches", "3", "--out", str(model), "--log", str(tmp / "log.jsonl"),
         "--no-progress", "--threads", "1"]
        )  # fmt: skip
    assert code == 0
    return tmp, train, test, model, json.loads(stdout.getvalue())


def test_train_apply_report_end_to_end(trained, capsys):
    tmp, _, test, model_path, summary = trained
    assert summary["variables"] == VARS and summary["context"] == CONTEXT and summary["steps"] == 40
    assert "final_lambda" in summary and "mmd2" in summary
    assert "mmd/lambda" in json.loads((tmp / "log.jsonl").read_text().splitlines()[-1])  # multiplier history logged

    out = tmp / "corrected.root"
    assert (
        _run(["apply", str(model_path), "--in", f"{test}:mc", "--out", str(out), "--seed", "3", "--no-progress"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["branches"] == [v + "_corr" for v in VARS]

    # the written <var>_corr branches equal the in-memory model applied to the same events
    model = MorphingFlow.load(model_path)
    assert model.names == VARS and model.context_names == CONTEXT
    original, _ = read_tree(test, "mc", VARS + CONTEXT + ["mass"], library="np")
    got, _ = read_tree(out, "mc", VARS + CONTEXT + ["mass"] + [v + "_corr" for v in VARS], library="np")
    expected = model.morph({k: original[k] for k in VARS + CONTEXT}, seed=3)
    for v in VARS:
        np.testing.assert_allclose(got[v + "_corr"], expected[v], rtol=1e-6, atol=1e-12)
        assert not np.allclose(got[v + "_corr"], original[v])  # the model did move the events
    for k in VARS + CONTEXT + ["mass"]:
        np.testing.assert_array_equal(got[k], original[k])  # originals copied untouched
    np.testing.assert_array_equal(got["iso_1_corr"][original["iso_1"] == 0] >= 0, True)  # spike kept in-domain

    report = tmp / "report"
    code = _run(
        ["report", "--data", f"{test}:data", "--corrected", f"{out}:mc", "--model", str(model_path), "--out",
         str(report), "--mass", "mass", "--permutations", "20", "--mmd-events", "400", "--no-progress"]
    )  # fmt: skip
    assert code == 0 and "corrected MC" in capsys.readouterr().out
    result = json.loads((report / "report.json").read_text())
    assert result["features"] == VARS + CONTEXT and result["events_mc"] == 700 and result["events_data"] == 700
    for label in ("MC", "corrected MC"):
        m = result["metrics"][label]
        assert set(m["w1"]) == set(VARS + CONTEXT)
        assert 0.0 <= m["auc"] <= 1.0 and 0.0 <= m["mmd_p"] <= 1.0 and m["mmd2"] > -1e-3 and m["corr_diff"] >= 0
    # the context is not corrected: its W1 distances are identical for MC and corrected MC
    for c in CONTEXT:
        assert result["metrics"]["MC"]["w1"][c] == pytest.approx(result["metrics"]["corrected MC"]["w1"][c])
    assert result["metrics"]["MC"]["auc"] > 0.6  # the uncorrected difference is visible to the classifier
    for name in ("variables.png", "correlations.png", "mass.png"):
        assert (report / name).stat().st_size > 10_000


def test_apply_refuses_mismatched_inputs(trained, tmp_path):
    _, train, test, model, _ = trained
    # output == input (also through a differently spelled path)
    with pytest.raises(SystemExit, match="input file"):
        _run(["apply", str(model), "--in", f"{test}:mc", "--out", str(test), "--no-progress"])
    with pytest.raises(SystemExit, match="input file"):
        _run(["apply", str(model), "--in", f"{test}:mc", "--out", f"{test.parent}/./{test.name}", "--no-progress"])
    # a --vars list differing from the model's: the message names the branch
    with pytest.raises(SystemExit, match="mismatched variables.*iso_1"):
        _run(
            ["apply", str(model), "--in", f"{test}:mc", "--vars", "r9_1", "sieie_1", "--out", str(tmp_path / "a.root")]
        )
    with pytest.raises(SystemExit, match="mismatched variables.*eta_2"):
        _run(
            ["apply", str(model), "--in", f"{test}:mc", "--context", "pt_1", "eta_2", "--out", str(tmp_path / "b.root")]
        )
    # an input tree that lacks a model branch: file, tree and branch named
    other = write_root(tmp_path / "other.root", 20, 20, seed=2)
    import uproot

    lacking = tmp_path / "lacking.root"
    sample, _ = read_tree(other, "mc", ["r9_1", "sieie_1", "pt_1", "eta_1"], library="np")
    with uproot.recreate(lacking) as f:
        f.mktree("events", {k: v.dtype for k, v in sample.items()})
        f["events"].extend(sample)
    with pytest.raises(SystemExit, match=r"branch 'iso_1' not found in tree 'events' of file .*lacking\.root"):
        _run(["apply", str(model), "--in", f"{lacking}:events", "--out", str(tmp_path / "c.root"), "--no-progress"])
    with pytest.raises(SystemExit, match=r"tree 'nope' not found in file"):
        _run(["apply", str(model), "--in", f"{test}:nope", "--out", str(tmp_path / "d.root"), "--no-progress"])
    assert not any((tmp_path / n).exists() for n in ("a.root", "b.root", "c.root", "d.root"))
    # not a model file
    with pytest.raises(SystemExit, match="MorphingFlow"):
        _run(["apply", str(train), "--in", f"{test}:mc", "--out", str(tmp_path / "e.root")])


def test_train_and_report_bad_input(trained, tmp_path):
    _, train, test, model, _ = trained
    with pytest.raises(SystemExit, match="nope"):
        _run(["train", "--mc", str(train), "--data", str(train), "--tree", "mc", "--vars", "r9_1", "--kinds",
              "nope=log", "--out", str(tmp_path / "m.pt")])  # fmt: skip
    with pytest.raises(SystemExit, match="names no tree"):
        _run(["train", "--mc", str(train), "--data", str(train), "--vars", "r9_1", "--out", str(tmp_path / "m.pt")])
    with pytest.raises(SystemExit, match="missing_branch"):
        _run(["train", "--mc", str(train), "--data", str(train), "--tree", "mc", "--vars", "missing_branch",
              "--out", str(tmp_path / "m.pt")])  # fmt: skip
    with pytest.raises(SystemExit, match="empty selection.*pt_1 > 1e6"):
        _run(["train", "--mc", f"{train}:mc", "--data", f"{train}:data", "--vars", "r9_1", "--cut", "pt_1 > 1e6",
              "--out", str(tmp_path / "m.pt")])  # fmt: skip
    with pytest.raises(SystemExit, match="morph apply"):  # the old one-shot usage: --out was the ROOT output
        _run(["train", "--mc", f"{train}:mc", "--data", f"{train}:data", "--vars", "r9_1", "--out", "x.root"])
    with pytest.raises(SystemExit, match="input file"):
        _run(["train", "--mc", f"{train}:mc", "--data", f"{train}:data", "--vars", "r9_1", "--out", str(train)])
    # report on a file without the _corr branches
    with pytest.raises(SystemExit, match="r9_1_corr.*morph apply"):
        _run(["report", "--data", f"{test}:data", "--corrected", f"{test}:mc", "--model", str(model), "--out",
              str(tmp_path / "r")])  # fmt: skip


@pytest.mark.parametrize(
    "steps,extra",
    [(200, ["--validation", "0.3", "--validate-every", "30", "--derive", "m=r9_1 * pt_1"])],
    ids=["validation"],
)
def test_morph_train_resumes_after_sigkill(tmp_path, steps, extra):
    """``morph train`` killed mid-run and ``--resume``d ends with the parameters of an uninterrupted run, with
    validation-based model selection and a derived constraint (the best step and its parameters survive the kill;
    the plain run without them resumes through the same trainer checkpoint)."""
    import subprocess
    import sys

    import torch

    from bgflow_sci.io import load_checkpoint

    from .._killing import kill_after_checkpoint

    data = write_root(tmp_path / "train.root", 600, 600, seed=0)

    def args(out):
        return ["morph", "train", "--mc", f"{data}:mc", "--data", f"{data}:data", "--vars", *VARS, "--context",
                *CONTEXT, "--kinds", "r9_1=logit", "sieie_1=log", "iso_1=spike", "pt_1=log", "--steps", str(steps),
                "--batch-size", "128", "--layers", "2", "--eval-batches", "2", "--checkpoint-every", "20",
                "--out", str(out), "--no-progress", "--threads", "1", *extra]  # fmt: skip

    assert _run(args(tmp_path / "full.pt")[1:]) == 0
    cmd = [sys.executable, "-m", "bgflow_sci.cli", *args(tmp_path / "killed.pt")]
    step = kill_after_checkpoint(cmd, tmp_path / "killed.pt.ckpt", 40)
    assert 40 <= step < steps and not (tmp_path / "killed.pt").exists()
    proc = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    resumed = json.loads(proc.stdout)
    assert resumed["resumed"] is True
    if extra:
        assert resumed["best_step"][0] is not None and resumed["best_step"][0] % 30 in (0, steps % 30)
    a = load_checkpoint(tmp_path / "full.pt", "variable_model")["state_dict"]
    b = load_checkpoint(tmp_path / "killed.pt", "variable_model")["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(SystemExit, match="no checkpoint"):
        _run([*args(tmp_path / "other.pt")[1:], "--resume"])


def test_derived_observable_is_constrained_written_and_reported(tmp_path, capsys):
    """``--derive`` reaches the model file, ``apply`` writes ``NAME_corr`` equal to the expression of the corrected
    variables, and ``report --mass NAME`` recomputes it for all three samples; bad expressions are refused."""
    train = write_root(tmp_path / "train.root", 600, 600, seed=0)
    model = tmp_path / "model.pt"
    expr = "r9_1 * pt_1 + sqrt(sieie_1) / cosh(eta_1)"
    base = ["train", "--mc", f"{train}:mc", "--data", f"{train}:data", "--vars", *VARS, "--context", *CONTEXT,
            "--steps", "10", "--batch-size", "128", "--layers", "2", "--eval-batches", "2", "--no-progress",
            "--threads", "1"]  # fmt: skip
    for bad, match in [("m=r9_1 + nope", "'nope'"), ("m=__import__('os')", "__import__"), ("r9_1=pt_1", "already")]:
        with pytest.raises(SystemExit, match=match):  # the CLI turns the ValueError into "error: ..."
            _run([*base, "--derive", bad, "--out", str(tmp_path / "bad.pt")])
    assert _run([*base, "--derive", f"m={expr}", "--out", str(model)]) == 0
    assert json.loads(capsys.readouterr().out)["derived"] == {"m": expr}
    flow = MorphingFlow.load(model)
    assert list(flow.derived) == ["m"] and flow.feature_fn() is not None

    out = tmp_path / "corrected.root"
    assert _run(["apply", str(model), "--in", f"{train}:mc", "--out", str(out), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["branches"] == [v + "_corr" for v in VARS] + ["m_corr"]
    arrays, _ = read_tree(out, "mc", [v + "_corr" for v in VARS] + CONTEXT + ["m_corr"], library="np")
    r9, sieie, pt, eta = arrays["r9_1_corr"], arrays["sieie_1_corr"], arrays["pt_1"], arrays["eta_1"]
    np.testing.assert_allclose(arrays["m_corr"], r9 * pt + np.sqrt(sieie) / np.cosh(eta), rtol=1e-6)

    report = tmp_path / "report"
    argv = ["report", "--data", f"{train}:data", "--corrected", f"{out}:mc", "--model", str(model), "--mass", "m"]
    code = _run(
        [*argv, "--no-auc", "--mmd-events", "200", "--permutations", "10", "--out", str(report), "--no-progress"]
    )
    assert code == 0 and (report / "mass.png").stat().st_size > 0


def test_holdout_ensemble_floor_and_uncertainties(tmp_path, capsys):
    """``--holdout`` keeps entries out of training and the report uses exactly them; ``--ensemble`` writes the member
    mean as ``_corr`` and the spread as ``_corr_unc`` (derived observables included); the data-vs-data floor row is
    reported and a sample already within it is warned about."""
    from bgflow_sci.hep.ensemble import MorphingEnsemble, load_morphing
    from bgflow_sci.hep.splits import holdout_mask

    train = write_root(tmp_path / "train.root", 900, 1000, seed=0)
    model = tmp_path / "ens.pt"
    expr = "r9_1 * pt_1"
    code = _run(
        ["train", "--mc", f"{train}:mc", "--data", f"{train}:data", "--vars", *VARS, "--context", *CONTEXT,
         "--derive", f"m={expr}", "--holdout", "0.3", "--ensemble", "2", "--steps", "10", "--batch-size", "128",
         "--layers", "2", "--eval-batches", "2", "--out", str(model), "--no-progress", "--threads", "1"]
    )  # fmt: skip
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    held_mc, held_data = holdout_mask(0, 900, 0.3, 0), holdout_mask(0, 1000, 0.3, 0)
    assert summary["ensemble"] == 2 and summary["events_mc"] == int((~held_mc).sum())
    assert summary["events_data"] == int((~held_data).sum())
    assert summary["holdout"]["mc"]["entries"] == 900 and summary["holdout"]["data"]["entries"] == 1000
    assert not any(tmp_path.glob("ens.pt.member*"))  # partial members are cleaned up
    ens = load_morphing(model)
    assert isinstance(ens, MorphingEnsemble) and len(ens) == 2 and ens.holdout["fraction"] == 0.3
    a, b = ens.members[0].state_dict(), ens.members[1].state_dict()
    assert any(not torch_equal(a[k], b[k]) for k in a)  # different seeds and resamples

    out = tmp_path / "corrected.root"
    assert _run(["apply", str(model), "--in", f"{train}:mc", "--out", str(out), "--seed", "2", "--no-progress"]) == 0
    branches = json.loads(capsys.readouterr().out)["branches"]
    assert set(branches) == {*(v + "_corr" for v in VARS), "m_corr", *(v + "_corr_unc" for v in VARS), "m_corr_unc"}
    got, _ = read_tree(out, "mc", VARS + CONTEXT + branches, library="np")
    members = ens.morph_members({k: got[k] for k in VARS + CONTEXT}, seed=2)
    for v in VARS:
        stack = np.stack([m[v] for m in members])
        np.testing.assert_allclose(got[v + "_corr"], stack.mean(0), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(got[v + "_corr_unc"], stack.std(0, ddof=1), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(got["m_corr"], got["r9_1_corr"] * got["pt_1"], rtol=1e-6)
    m_members = np.stack([m["r9_1"] * got["pt_1"] for m in members])
    np.testing.assert_allclose(got["m_corr_unc"], m_members.std(0, ddof=1), rtol=1e-5, atol=1e-9)

    report = tmp_path / "report"
    argv = ["report", "--data", f"{train}:data", "--corrected", f"{out}:mc", "--model", str(model), "--mass", "m",
            "--no-auc", "--mmd-events", "200", "--permutations", "10", "--no-progress"]  # fmt: skip
    assert _run([*argv, "--out", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "data vs data (floor)" in printed and "m: W1 to data" in printed
    result = json.loads((report / "report.json").read_text())
    assert result["events"]["data"]["part"] == "holdout" and result["events"]["corrected"]["part"] == "holdout"
    assert result["events_data"] == int(held_data.sum()) and result["events_mc"] == int(held_mc.sum())
    assert set(result["metrics"]) == {"MC", "corrected MC", "data vs data (floor)"} and result["ensemble"] == 2
    assert set(result["uncorrected_within_floor"]["w1"]) == set(VARS + CONTEXT)
    assert set(result["mass"]["w1"]) == {"MC", "corrected MC", "data vs data (floor)"}
    # an independent file is used whole; --events holdout on it is refused
    other = write_root(tmp_path / "other.root", 500, 400, seed=4)
    assert _run([*argv[:2], f"{other}:data", *argv[3:], "--out", str(tmp_path / "r2")]) == 0
    capsys.readouterr()
    result = json.loads((tmp_path / "r2" / "report.json").read_text())
    assert result["events"]["data"]["part"] == "all" and result["events_data"] == 400
    with pytest.raises(SystemExit, match="has 400 entries.*had 1000"):
        _run([*argv[:2], f"{other}:data", *argv[3:], "--events", "holdout", "--out", str(tmp_path / "r3")])

    # data against itself is within the floor on every metric: the report says the correction is not supported
    same = tmp_path / "data_corr.root"
    assert _run(["apply", str(model), "--in", f"{train}:data", "--out", str(same), "--no-progress"]) == 0
    capsys.readouterr()
    with pytest.warns(UserWarning, match="within the data-vs-data floor"):
        assert _run(["report", "--data", f"{train}:data", "--corrected", f"{same}:data", "--vars", *VARS,
                     "--context", *CONTEXT, "--no-auc", "--mmd-events", "200", "--permutations", "10",
                     "--out", str(tmp_path / "r4"), "--no-progress"]) == 0  # fmt: skip
    assert "warning: uncorrected MC is already within" in capsys.readouterr().out


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_real_example_files_event_key_split_and_many_inputs(tmp_path, capsys):
    """``morph example`` writes the CMS-data closure pair (truth kept, distortion as documented); ``--holdout-key``
    keeps every row of one physical event on one side; ``morph apply`` over a glob gives one output per input,
    equal to the single-file command."""
    from bgflow_sci.hep.examples import closure_distortion
    from bgflow_sci.hep.splits import held_out

    ex = tmp_path / "closure"
    assert _run(["example", "zmumu-closure", "--out", str(ex)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["events_mc"] + info["events_data"] == 2004  # CMS Z->mumu rows in the fiducial region
    mc, _ = read_tree(ex / "mc.root", "events", ["pt1", "eta1", "pt2", "eta2", "pt1_true", "pt2_true", "event_id"],
                      library="np")  # fmt: skip
    data, _ = read_tree(ex / "data.root", "events", ["event_id"], library="np")
    assert not set(mc["event_id"]) & set(data["event_id"])  # halves split by physical event
    p1, p2 = closure_distortion(mc["pt1_true"], mc["eta1"], mc["pt2_true"], mc["eta2"])
    np.testing.assert_allclose(mc["pt1"], p1) and np.testing.assert_allclose(mc["pt2"], p2)
    with pytest.raises(SystemExit, match="exist"):
        _run(["example", "zmumu-closure", "--out", str(ex)])

    model = tmp_path / "m.pt"
    assert _run(["train", "--mc", f"{ex}/mc.root:events", "--data", f"{ex}/data.root:events", "--vars", "pt1",
                 "pt2", "--context", "eta1", "eta2", "--holdout", "0.4", "--holdout-key", "event_id", "--validation",
                 "0.25", "--steps", "20", "--batch-size", "128", "--layers", "2", "--eval-batches", "2",
                 "--out", str(model), "--no-progress", "--threads", "1"]) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    held = held_out(mc["event_id"], 0.4, 0)
    assert summary["events_mc"] + summary["events_validation"]["mc"] == int((~held).sum())
    assert summary["holdout"]["key"] == "event_id" and summary["best_step"][0] in range(0, 21)
    with pytest.raises(SystemExit, match="holdout keys must be integers"):
        _run(["train", "--mc", f"{ex}/mc.root:events", "--data", f"{ex}/data.root:events", "--vars", "pt1",
              "--holdout", "0.4", "--holdout-key", "eta1", "--out", str(tmp_path / "x.pt")])  # fmt: skip

    # several inputs (a glob): one output each, equal to the single-file path; workers=0 runs without Dask
    single = tmp_path / "single.root"
    assert _run(["apply", str(model), "--in", f"{ex}/mc.root:events", "--out", str(single), "--no-progress"]) == 0
    capsys.readouterr()
    outdir = tmp_path / "many"
    code = _run(["apply", str(model), "--in", f"{ex}/*.root:events", "--out", f"{outdir}/", "--workers", "0",
                 "--no-progress"])  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert [Path(o["out"]).name for o in result["outputs"]] == ["data_corr.root", "mc_corr.root"]
    a, _ = read_tree(single, "events", ["pt1_corr", "pt2_corr"], library="np")
    b, _ = read_tree(outdir / "mc_corr.root", "events", ["pt1_corr", "pt2_corr"], library="np")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_report_statistics_over_several_files(trained, tmp_path, capsys):
    """``morph report`` over several corrected files (a glob) equals the report over their concatenation."""
    import uproot

    _, _, test, model, _ = trained
    out = tmp_path / "c.root"
    assert _run(["apply", str(model), "--in", f"{test}:mc", "--out", str(out), "--no-progress"]) == 0
    arrays, _ = read_tree(out, "mc", [*VARS, *CONTEXT, *(v + "_corr" for v in VARS)], library="np")
    (tmp_path / "parts").mkdir()
    for i, rows in enumerate((slice(0, 300), slice(300, None))):  # the same events in two files
        with uproot.recreate(tmp_path / "parts" / f"p{i}.root") as f:
            f.mktree("mc", {k: v.dtype for k, v in arrays.items()})
            f["mc"].extend({k: v[rows] for k, v in arrays.items()})
    capsys.readouterr()
    common = ["--data", f"{test}:data", "--vars", *VARS, "--context", *CONTEXT, "--no-auc", "--mmd-events", "200",
              "--permutations", "10", "--no-progress"]  # fmt: skip
    assert _run(["report", *common, "--corrected", f"{out}:mc", "--out", str(tmp_path / "one")]) == 0
    assert _run(["report", *common, "--corrected", f"{tmp_path}/parts/*.root:mc", "--out", str(tmp_path / "two")]) == 0
    one = json.loads((tmp_path / "one" / "report.json").read_text())
    two = json.loads((tmp_path / "two" / "report.json").read_text())
    assert two["events_mc"] == one["events_mc"] == 700 and len(two["events"]["corrected"]["files"]) == 2
    for label in ("MC", "corrected MC"):
        for v in VARS:
            assert two["metrics"][label]["w1"][v] == pytest.approx(one["metrics"][label]["w1"][v], rel=1e-12)
