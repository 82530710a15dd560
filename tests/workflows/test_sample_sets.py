"""Sample sets in chunks on a 2-worker Dask LocalCluster: the chunks and the reweighting equal the in-memory path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bgflow_sci.workflows.reweight import reweight
from bgflow_sci.workflows.sample_sets import expand_sample_files, reweight_files, sample_chunks
from bgflow_sci.workflows.train import train

from .test_resume import TOY, cli


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    train(TOY, out, overrides={"train": {"ml_steps": 30, "kl_steps": 10}}, progress=False, evaluate=False)
    return out / "model.pt"


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        yield c.scheduler_address


def _concatenate(files, path):
    parts = [np.load(f) for f in files]
    x, lw = np.concatenate([p["x"] for p in parts]), np.concatenate([p["log_w"] for p in parts])
    system = json.loads(str(parts[0]["system"]))
    np.savez_compressed(path, x=x, log_w=lw, system=json.dumps({"absolute": system["absolute"]}),
                        config=str(parts[0]["config"]))  # fmt: skip
    return path


def test_chunks_on_dask_match_in_memory(model, cluster, tmp_path):
    on_dask = sample_chunks(model, 2500, tmp_path / "dask", chunk_size=1000, scheduler=cluster, progress=False)
    here = sample_chunks(model, 2500, tmp_path / "here", chunk_size=1000, workers=0, progress=False)
    assert on_dask["workers"] == 2 and here["scheduler"] == "in-process" and len(on_dask["files"]) == 3
    for a, b in zip(on_dask["files"], here["files"]):  # a chunk depends on its number only, not on the worker
        with np.load(a) as fa, np.load(b) as fb:
            assert np.array_equal(fa["x"], fb["x"]) and np.array_equal(fa["log_w"], fb["log_w"])
    with pytest.raises(FileExistsError, match="samples file"):
        sample_chunks(model, 10, tmp_path / "here", workers=0, progress=False)

    chunked = reweight_files([tmp_path / "dask"], tmp_path / "rw", scheduler=cluster, n_bootstrap=50, progress=False)
    single = _concatenate(on_dask["files"], tmp_path / "all.npz")
    memory = reweight(single, tmp_path / "rw_memory", n_bootstrap=50)
    assert chunked["workers"] == 2 and chunked["samples"] == memory["samples"] == 2500
    assert chunked["ess"] == pytest.approx(memory["ess"], rel=1e-10)
    assert chunked["log_z"]["value"] == pytest.approx(memory["log_z"]["value"], abs=1e-10)
    df, df_memory = chunked["delta_f"]["wells"], memory["delta_f"]["wells"]
    assert df["reweighted"] == pytest.approx(df_memory["reweighted"], abs=1e-10)
    assert df["flow_only"] == pytest.approx(df_memory["flow_only"], abs=1e-10)
    assert df["error"] == pytest.approx(df_memory["error"], rel=0.5)
    for cv in ("x1", "x2"):
        a = np.array(chunked["profiles"][cv]["reweighted"], dtype=float)
        b = np.array(memory["profiles"][cv]["reweighted"], dtype=float)
        np.testing.assert_allclose(a, b, atol=1e-9, equal_nan=True)
        assert (tmp_path / "rw" / f"free_energy_{cv}.png").is_file()
    # the bootstrap does not depend on how the samples are split into files
    whole = reweight_files([single], tmp_path / "rw_whole", workers=0, n_bootstrap=50, progress=False)
    assert whole["delta_f"]["wells"]["error"] == pytest.approx(df["error"], rel=1e-9)


def test_cli_sample_and_reweight_in_chunks(model, tmp_path):
    cli("sample", str(model), "-n", "600", "--chunk-size", "200", "--workers", "0", "--out", str(tmp_path / "c"))
    assert len(expand_sample_files([tmp_path / "c"])) == 3
    proc = cli("reweight", str(tmp_path / "c" / "samples_0000*.npz"), "--out", str(tmp_path / "rw"))
    assert json.loads(proc.stdout)["samples"] == 600
    bad = cli("reweight", str(tmp_path / "nothing_*.npz"), check=False)
    assert bad.returncode != 0 and "no samples file matches" in bad.stderr
