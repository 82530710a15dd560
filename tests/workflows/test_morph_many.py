"""``apply_many``: a morphing model applied to many ROOT files (TTrees and an RNTuple) through a real 2-worker Dask
``LocalCluster``, a running scheduler and the in-process loop; every output equals ``apply_morphing`` of its file.
Runtime ≈ 30 s on 2 cores, most of it starting two clusters
whose worker processes import torch and uproot."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from tests.conftest import require

require("uproot")

import awkward as ak  # noqa: E402
import uproot  # noqa: E402

from bgflow_sci.hep.io import tree_format  # noqa: E402
from bgflow_sci.workflows.morph import apply_morphing, train_morphing  # noqa: E402
from bgflow_sci.workflows.morph_many import apply_many, expand_inputs, output_paths  # noqa: E402

VARS, CONTEXT = ["x", "iso"], ["pt"]
SIZES = {"a": 2500, "b": 3100, "c": 2000}  # c is the RNTuple
STEP = 1000  # several chunks per file: chunk i is morphed with seed + i
SEED = 5


def _sample(n: int, rng: np.random.Generator, shift: float = 0.0) -> dict[str, np.ndarray]:
    pt = rng.lognormal(3.5, 0.4, n)
    x = rng.normal(shift + 0.01 * (pt - 33.0), 1.0 + 0.2 * shift, n)
    iso = np.where(rng.random(n) < 0.4 - 0.1 * shift, 0.0, rng.exponential(1.0 + shift, n))  # a spike at 0
    return {"x": x, "iso": iso, "pt": pt, "evt": np.arange(n, dtype=np.int64)}


def _ttree(path, data: dict[str, np.ndarray], name: str = "events") -> None:
    with uproot.recreate(path) as f:
        f.mktree(name, {k: v.dtype for k, v in data.items()})
        f[name].extend(data)


def _read_all(path, tree: str = "events") -> ak.Array:
    with uproot.open(path) as f:
        return f[tree].arrays(library="ak")


def _assert_same_file(got, expected, tree: str = "events") -> None:
    a, b = _read_all(got, tree), _read_all(expected, tree)
    assert a.fields == b.fields and len(a) == len(b)
    for name in a.fields:
        assert np.array_equal(ak.to_numpy(a[name]), ak.to_numpy(b[name])), name  # exact, bit for bit
    assert tree_format(got, tree) == tree_format(expected, tree)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Three inputs (a, b: TTrees; c: RNTuple), a tiny model and the in-process ``apply_morphing`` of each input."""
    tmp = tmp_path_factory.mktemp("morph_many")
    rng = np.random.default_rng(0)
    train = tmp / "train.root"
    with uproot.recreate(train) as f:
        for kind, shift in (("mc", 0.0), ("data", 0.5)):
            sample = _sample(2000, rng, shift)
            f.mktree(kind, {k: v.dtype for k, v in sample.items()})
            f[kind].extend(sample)
    model = tmp / "model.pt"
    train_morphing(f"{train}:mc", f"{train}:data", VARS, CONTEXT, ["iso=spike", "pt=log"], model, steps=20,
                   batch_size=256, layers=2, eval_batches=2, progress=False, threads=1,
                   checkpoint_every=None)  # fmt: skip
    inputs = tmp / "inputs"
    inputs.mkdir()
    for stem, n in SIZES.items():
        data = _sample(n, rng)
        if stem == "c":
            with uproot.recreate(inputs / f"{stem}.root") as f:
                f["events"] = data  # an RNTuple (uproot >= 5.7)
        else:
            _ttree(inputs / f"{stem}.root", data)
    assert tree_format(inputs / "c.root", "events") == "rntuple"
    reference = tmp / "reference"
    for stem in SIZES:
        apply_morphing(model, f"{inputs / stem}.root:events", reference / f"{stem}.root", step_size=STEP, seed=SEED,
                       threads=1, progress=False)  # fmt: skip
    return tmp, model, inputs, reference


def _check_outputs(summary, out_dir, inputs, reference) -> None:
    assert summary["files"] == 3 and summary["events"] == sum(SIZES.values())
    assert [o["in"] for o in summary["outputs"]] == [f"{inputs / s}.root:events" for s in SIZES]  # input order
    assert [o["out"] for o in summary["outputs"]] == [str(out_dir / f"{s}_corr.root") for s in SIZES]
    assert [o["events"] for o in summary["outputs"]] == list(SIZES.values())
    for stem in SIZES:
        _assert_same_file(out_dir / f"{stem}_corr.root", reference / f"{stem}.root")
    assert tree_format(out_dir / "c_corr.root", "events") == "rntuple"
    assert tree_format(out_dir / "a_corr.root", "events") == "ttree"
    assert sorted(os.listdir(out_dir)) == [f"{s}_corr.root" for s in SIZES]  # no .tmp left behind


# ------------------------------------------------------------------------------------------- inputs, outputs
def test_expand_inputs(tmp_path):
    for name in ("b.root", "a.root", "c.root", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.root").write_bytes(b"")
    got = expand_inputs([f"{tmp_path}/*.root:events", f"{tmp_path}/sub/d.root"], tree="t")
    assert got == [(f"{tmp_path}/{n}.root", "events") for n in "abc"] + [(f"{tmp_path}/sub/d.root", "t")]
    assert expand_inputs([f"{tmp_path}/**/*.root"], tree="t")[-1] == (f"{tmp_path}/sub/d.root", "t")  # recursive
    with pytest.raises(FileNotFoundError, match=r"input '.*/\*\.nope:events'.*matches no file"):
        expand_inputs([f"{tmp_path}/*.root", f"{tmp_path}/*.nope:events"], tree="t")
    with pytest.raises(FileNotFoundError, match=r"input '.*missing\.root:t'.*does not exist"):
        expand_inputs([f"{tmp_path}/missing.root:t"], tree=None)
    with pytest.raises(FileNotFoundError, match=r"input '.*sub'.*is a folder"):
        expand_inputs([f"{tmp_path}/sub"], tree="t")
    with pytest.raises(ValueError, match=r"names no tree"):
        expand_inputs([f"{tmp_path}/a.root"], tree=None)
    with pytest.raises(ValueError, match=r"a\.root.*given twice"):  # a differently spelled path and a glob
        expand_inputs([f"{tmp_path}/a.root", f"{tmp_path}/./*.root"], tree="t")
    assert len(expand_inputs([f"{tmp_path}/a.root:t1", f"{tmp_path}/a.root:t2"], tree=None)) == 2  # two trees
    with pytest.raises(ValueError, match="no input files"):
        expand_inputs([], tree="t")
    with pytest.raises(ValueError, match="list of FILE"):
        expand_inputs(f"{tmp_path}/a.root", tree="t")


def test_output_paths(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "x.root").write_bytes(b"")
    (tmp_path / "a" / "y.root").write_bytes(b"")
    a, b, y = str(tmp_path / "a" / "x.root"), str(tmp_path / "b" / "x.root"), str(tmp_path / "a" / "y.root")
    out = tmp_path / "out"
    assert output_paths([(a, "t"), (y, "t")], out) == [out / "x_corr.root", out / "y_corr.root"]
    assert output_paths([(a, "t")], out, suffix="_v2") == [out / "x_v2.root"]
    with pytest.raises(ValueError, match=r"inputs '.*a/x\.root:t' and '.*b/x\.root:t' would both be written to"):
        output_paths([(a, "t"), (y, "t"), (b, "t")], out)
    with pytest.raises(ValueError, match="would both be written"):  # two trees of one file
        output_paths([(a, "t1"), (a, "t2")], out)
    with pytest.raises(ValueError, match=r"refusing to write .*a/x\.root.*input file"):  # out == input
        output_paths([(a, "t")], tmp_path / "a", suffix="")
    (tmp_path / "a" / "x_corr.root").write_bytes(b"")  # an input named like another input's output
    with pytest.raises(ValueError, match=r"refusing to write .*x_corr\.root.*input file"):
        output_paths([(a, "t"), (str(tmp_path / "a" / "x_corr.root"), "t")], tmp_path / "a")
    with pytest.raises(ValueError, match="path separator"):
        output_paths([(a, "t")], out, suffix="/x")


def test_output_paths_hard_link(tmp_path):
    """An existing output that is a hard link to an input is refused too (it would be replaced, not the input)."""
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    src = tmp_path / "in" / "x.root"
    src.write_bytes(b"")
    os.link(src, tmp_path / "out" / "x_corr.root")
    with pytest.raises(ValueError, match="input file"):
        output_paths([(str(src), "t")], tmp_path / "out")


# ---------------------------------------------------------------------------------------------------- apply
def test_apply_many_local_cluster_equals_apply_morphing(setup, tmp_path):
    pytest.importorskip("distributed")
    _, model, inputs, reference = setup
    out = tmp_path / "out"
    summary = apply_many(model, [f"{inputs}/*.root:events"], out, step_size=STEP, seed=SEED, workers=2,
                         progress=False)  # fmt: skip
    assert summary["scheduler"] == "local" and summary["workers"] == 2
    _check_outputs(summary, out, inputs, reference)


def test_apply_many_in_process_equals_apply_morphing(setup, tmp_path, monkeypatch):
    _, model, inputs, reference = setup
    monkeypatch.setitem(sys.modules, "distributed", None)  # workers=0 needs no Dask
    out = tmp_path / "out"
    specs = [f"{inputs}/b.root", f"{inputs}/a.root:events", f"{inputs}/c.root"]
    summary = apply_many(model, specs, out, tree="events", step_size=STEP, seed=SEED, workers=0, progress=True)
    assert summary["scheduler"] == "in-process" and summary["workers"] == 0
    assert [o["in"].rsplit("/", 1)[1] for o in summary["outputs"]] == [
        "b.root:events",
        "a.root:events",
        "c.root:events",
    ]
    order = {s: summary["outputs"][i] for i, s in enumerate("bac")}
    _check_outputs({**summary, "outputs": [order[s] for s in SIZES]}, out, inputs, reference)


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """A running 1-worker cluster (as if started elsewhere) whose worker process has another cwd."""
    distributed = pytest.importorskip("distributed")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(elsewhere)  # the worker process starts here
        cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster:
        yield cluster.scheduler_address, elsewhere


def test_apply_many_running_scheduler_relative_paths(setup, running, tmp_path, monkeypatch):
    """Relative paths work on a worker with another cwd (they are made absolute first); only the client is closed."""
    import distributed

    tmp, model, inputs, reference = setup
    address, elsewhere = running
    monkeypatch.chdir(tmp)
    summary = apply_many("model.pt", ["inputs/*.root:events"], os.path.relpath(tmp_path / "out", tmp),
                         step_size=STEP, seed=SEED, scheduler=address, progress=False)  # fmt: skip
    assert summary["scheduler"] == address and summary["workers"] == 1
    _check_outputs(summary, tmp_path / "out", inputs, reference)
    assert not os.listdir(elsewhere)
    with distributed.Client(address) as client:  # the cluster is still up
        assert len(client.nthreads()) == 1


def test_existing_outputs_refused_before_any_work(setup, tmp_path):
    _, model, inputs, reference = setup
    out = tmp_path / "out"
    out.mkdir()
    (out / "b_corr.root").write_bytes(b"old")
    (out / "c_corr.root").write_bytes(b"old")
    with pytest.raises(FileExistsError, match=r"2 output file\(s\) exist: .*b_corr\.root.*c_corr\.root.*overwrite"):
        apply_many(model, [f"{inputs}/*.root:events"], out, workers=2, progress=False)
    assert sorted(os.listdir(out)) == ["b_corr.root", "c_corr.root"] and (out / "b_corr.root").read_bytes() == b"old"
    summary = apply_many(model, [f"{inputs}/*.root:events"], out, overwrite=True, step_size=STEP, seed=SEED,
                         workers=0, progress=False)  # fmt: skip
    _check_outputs(summary, out, inputs, reference)


def test_bad_model_or_vars_refused_before_any_work(setup, tmp_path):
    _, model, inputs, _ = setup
    with pytest.raises(FileNotFoundError, match=r"model file .*nope\.pt"):
        apply_many(tmp_path / "nope.pt", [f"{inputs}/a.root:events"], tmp_path / "out", workers=0)
    with pytest.raises(ValueError, match=r"mismatched variables.*iso"):
        apply_many(model, [f"{inputs}/a.root:events"], tmp_path / "out", vars=["x"], workers=0)
    with pytest.raises(ValueError, match="workers must be"):
        apply_many(model, [f"{inputs}/a.root:events"], tmp_path / "out", workers=-1)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["dask", "in-process"])
def test_task_error_names_the_file(setup, tmp_path, where, request):
    """A file lacking a model branch fails in its task; the error names it, the other files are written."""
    where = {"scheduler": request.getfixturevalue("running")[0]} if where == "dask" else {"workers": 0}
    _, model, inputs, reference = setup
    lacking = tmp_path / "in" / "b.root"  # sorts between a and c; has no 'iso' branch
    lacking.parent.mkdir()
    _ttree(lacking, {k: v for k, v in _sample(300, np.random.default_rng(1)).items() if k != "iso"})
    out = tmp_path / "out"
    specs = [f"{inputs}/a.root:events", f"{lacking}:events", f"{inputs}/c.root:events"]
    with pytest.raises(ValueError, match=r"morphing input '.*in/b\.root:events' failed: .*branch 'iso' not found.*"
                       r"\[2 of 3 files were morphed\]"):  # fmt: skip
        apply_many(model, specs, out, step_size=STEP, seed=SEED, progress=False, **where)
    assert sorted(os.listdir(out)) == ["a_corr.root", "c_corr.root"]  # the others finished and stay, nothing partial
    for stem in "ac":
        _assert_same_file(out / f"{stem}_corr.root", reference / f"{stem}.root")


def test_missing_dask_names_the_extra(setup, tmp_path, monkeypatch):
    _, model, inputs, _ = setup
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r'pip install "bgflow_sci\[dask\]"'):
        apply_many(model, [f"{inputs}/a.root:events"], tmp_path / "out", workers=2)
    assert not (tmp_path / "out").exists()
