"""ROOT I/O: read with cuts/aliases/weights, chunked iteration, jagged flatten round trip, corrected-file round trip."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from tests.conftest import require

ak = require("awkward")
uproot = require("uproot")

from bgflow_sci.hep.io import flatten_objects, iterate_tree, read_tree, unflatten_objects, write_corrected  # noqa: E402


@pytest.fixture()
def root_file(tmp_path):
    """Tree "events": jagged photons (pt, r9) counted by nPhoton, flat met, weights with negative entries."""
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 4, 500)
    n_obj = int(counts.sum())
    photons = ak.zip(
        {
            "pt": ak.unflatten(rng.exponential(30, n_obj) + 20, counts),
            "r9": ak.unflatten(rng.uniform(0.5, 1, n_obj), counts),
        }
    )
    weight = np.where(rng.random(500) < 0.1, -1.0, 1.0) * rng.uniform(0.5, 1.5, 500)
    path = tmp_path / "in.root"
    with uproot.recreate(path) as f:
        f.mktree("events", {"Photon": photons.type, "met": np.float64, "genWeight": np.float64})  # a TTree
        f["events"].extend({"Photon": photons, "met": rng.exponential(20, 500), "genWeight": weight})
        f.mktree("other", {"x": np.float64})
        f["other"].extend({"x": np.arange(3.0)})
    return path, photons, weight


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_read_tree_libraries_cut_alias_weights(root_file):
    path, photons, weight = root_file
    arrays, w = read_tree(path, "events", ["Photon_pt", "met"], weight_branch="genWeight")
    assert len(arrays) == 500 and ak.all(arrays.Photon_pt == photons.pt)
    np.testing.assert_array_equal(np.asarray(w), weight)
    assert (np.asarray(w) < 0).any()  # negative weights kept

    flat, w = read_tree(path, "events", ["met2"], aliases={"met2": "2 * met"}, cut="met > 20", library="np",
                        weight_branch="genWeight")  # fmt: skip
    ref = uproot.open(path)["events"].arrays(["met", "genWeight"], library="np")
    sel = ref["met"] > 20
    np.testing.assert_allclose(flat["met2"], 2 * ref["met"][sel])
    np.testing.assert_array_equal(w, ref["genWeight"][sel])
    torch_arrays, tw = read_tree(path, "events", ["met"], library="torch")
    assert torch_arrays["met"].shape == (500,) and tw.dtype.is_floating_point
    with pytest.raises(ValueError, match="jagged.*library='ak'"):
        read_tree(path, "events", ["Photon_pt"], library="np")


def test_read_errors_name_file_tree_branch(root_file, tmp_path):
    path, _, _ = root_file
    with pytest.raises(FileNotFoundError, match="nope.root"):
        read_tree(tmp_path / "nope.root", "events", ["met"])
    with pytest.raises(ValueError, match=r"tree 'evnts' not found in file .*in\.root.*events"):
        read_tree(path, "evnts", ["met"])
    with pytest.raises(ValueError, match=r"branch 'mett' not found in tree 'events' of file .*in\.root"):
        read_tree(path, "events", ["met", "mett"])
    with pytest.raises(ValueError, match=r"branch 'w' not found in tree 'events'"):
        read_tree(path, "events", ["met"], weight_branch="w")
    with pytest.raises(ValueError, match=r"empty selection.*'events'.*in\.root.*met > 1e9"):
        read_tree(path, "events", ["met"], cut="met > 1e9")
    nan_path = tmp_path / "nan.root"
    with uproot.recreate(nan_path) as f:
        f.mktree("t", {"a": np.float64, "b": np.float64})
        f["t"].extend({"a": np.full(4, np.nan), "b": np.ones(4)})
    with pytest.raises(ValueError, match=r"branch 'a' of tree 't' in file .*nan\.root.* all NaN"):
        read_tree(nan_path, "t", ["b", "a"])


def test_iterate_tree_chunks_match_full_read(root_file):
    path, _, weight = root_file
    chunks = list(iterate_tree(path, "events", ["Photon_r9", "met"], step_size=128, weight_branch="genWeight",
                               progress=False))  # fmt: skip
    assert len(chunks) == 4
    full, _ = read_tree(path, "events", ["Photon_r9", "met"])
    joined = ak.concatenate([c for c, _ in chunks])
    assert ak.all(ak.flatten(joined.Photon_r9) == ak.flatten(full.Photon_r9)) and ak.all(joined.met == full.met)
    np.testing.assert_array_equal(np.concatenate([np.asarray(w) for _, w in chunks]), weight)
    with pytest.raises(ValueError, match="empty selection"):
        list(iterate_tree(path, "events", ["met"], step_size=100, cut="met < 0", progress=False))


def test_flatten_unflatten_round_trip(root_file):
    path, photons, _ = root_file
    arrays, _ = read_tree(path, "events", ["Photon_pt", "Photon_r9"])
    table, counts = flatten_objects(arrays, ["Photon_pt", "Photon_r9"])
    assert table.shape == (int(ak.sum(ak.num(photons))), 2)
    np.testing.assert_array_equal(counts, ak.to_numpy(ak.num(photons)))
    np.testing.assert_allclose(table[:, 1], ak.to_numpy(ak.flatten(photons.r9)), rtol=1e-6)
    back = unflatten_objects(table, counts, ["Photon_pt", "Photon_r9"])
    assert ak.all(ak.num(back.Photon_pt) == ak.num(arrays.Photon_pt)) and ak.all(back.Photon_r9 == arrays.Photon_r9)
    assert ak.all(unflatten_objects(table[:, 0], counts) == arrays.Photon_pt)
    with pytest.raises(ValueError, match="rows but counts sum"):
        unflatten_objects(table[:-1], counts)
    bad = ak.zip({"a": ak.Array([[1.0], [2.0, 3.0]]), "b": ak.Array([[1.0, 2.0], [3.0]])}, depth_limit=1)
    with pytest.raises(ValueError, match="field 'b' has a different multiplicity"):
        flatten_objects(bad, ["a", "b"])


def test_write_corrected_round_trip(root_file, tmp_path):
    path, photons, weight = root_file
    before = digest(path)
    arrays, _ = read_tree(path, "events", ["Photon_pt", "Photon_r9", "met"])
    table, counts = flatten_objects(arrays, ["Photon_pt", "Photon_r9"])
    corr_r9 = unflatten_objects(np.clip(table[:, 1] * 1.05, 0, 1), counts)
    corr_met = np.asarray(arrays.met) * 0.9
    new_w = -np.linspace(0.5, 1.5, 500)
    out = write_corrected(path, tmp_path / "out" / "corr.root", "events", {"Photon_r9": corr_r9, "met": corr_met},
                          weight=new_w, step_size=150)  # fmt: skip
    assert digest(path) == before  # input untouched
    tree = uproot.open(out)["events"]
    keys = set(tree.keys())
    assert {"Photon_pt", "Photon_r9", "Photon_r9_corr", "met", "met_corr", "genWeight", "weight_corr"} <= keys
    back = tree.arrays()
    orig = uproot.open(path)["events"].arrays()
    for name in ("Photon_pt", "Photon_r9", "met", "genWeight"):
        assert ak.all(back[name] == orig[name]), name
    assert ak.all(back.Photon_r9_corr == corr_r9)  # jagged structure and values preserved
    assert ak.all(ak.num(back.Photon_r9_corr) == ak.num(photons.pt))
    np.testing.assert_array_equal(ak.to_numpy(back.met_corr), corr_met)
    np.testing.assert_array_equal(ak.to_numpy(back.weight_corr), new_w)
    assert tree["Photon_r9_corr"].count_branch.name == tree["Photon_r9"].count_branch.name  # one shared counter


def test_write_corrected_refuses_bad_output_and_input(root_file, tmp_path):
    path, _, _ = root_file
    before = digest(path)
    met = np.zeros(500)
    with pytest.raises(ValueError, match="refusing to write.*input"):
        write_corrected(path, path, "events", {"met": met})
    link = tmp_path / "link.root"
    os.symlink(path, link)
    with pytest.raises(ValueError, match="refusing to write.*input"):
        write_corrected(path, link, "events", {"met": met}, overwrite=True)
    sub = tmp_path / "sub"
    sub.mkdir()
    with pytest.raises(ValueError, match="refusing to write"):
        write_corrected(path, sub / ".." / "in.root", "events", {"met": met}, overwrite=True)
    assert digest(path) == before
    existing = tmp_path / "exists.root"
    existing.write_bytes(b"x")
    with pytest.raises(FileExistsError, match="exists"):
        write_corrected(path, existing, "events", {"met": met})
    assert existing.read_bytes() == b"x"
    with pytest.raises(
        ValueError, match=r"corrected branch 'mett' is not a branch of tree 'events' in file .*in\.root"
    ):
        write_corrected(path, tmp_path / "o.root", "events", {"mett": met})
    with pytest.raises(ValueError, match=r"'met' has 499 entries but tree 'events'.*has 500"):
        write_corrected(path, tmp_path / "o.root", "events", {"met": met[:-1]})
    wrong = ak.Array([[0.5]] * 500)
    with pytest.raises(ValueError, match="same objects per event"):
        write_corrected(path, tmp_path / "o.root", "events", {"Photon_r9": wrong})
    assert not (tmp_path / "o.root").exists() and not (tmp_path / "o.root.tmp").exists()
