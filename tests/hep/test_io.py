"""ROOT I/O: read with cuts/aliases/weights, chunked iteration, jagged flatten round trip, corrected-file round trip."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from tests.conftest import require

ak = require("awkward")
uproot = require("uproot")
torch = require("torch")

from bgflow_sci.hep.io import (  # noqa: E402
    flatten_objects,
    iterate_tree,
    num_entries,
    read_tree,
    tree_format,
    unflatten_objects,
    write_corrected,
)


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


# ------------------------------------------------------------------------------------------------ RNTuple
@pytest.fixture()
def rntuple_pair(tmp_path):
    """The same events as an RNTuple (written by assignment) and as a TTree: jagged Photon_pt, flat met, weights."""
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 4, 400)
    data = {
        "Photon_pt": ak.unflatten(rng.exponential(30, int(counts.sum())) + 20, counts),
        "met": rng.exponential(20, 400),
        "genWeight": np.where(rng.random(400) < 0.1, -1.0, 1.0) * rng.uniform(0.5, 1.5, 400),
        "run": np.arange(400, dtype=np.int32),
    }
    rn, tt = tmp_path / "rn.root", tmp_path / "tt.root"
    with uproot.recreate(rn) as f:
        f["events"] = data  # an RNTuple (uproot >= 5.7)
        f["hist"] = np.histogram(data["met"], bins=5)
    with uproot.recreate(tt) as f:
        f.mktree("events", {k: (v.type if isinstance(v, ak.Array) else v.dtype) for k, v in data.items()})
        f["events"].extend(data)
    return rn, tt, data


def assert_same(a, b, fields):
    for name in fields:
        assert ak.all(ak.num(a[name], axis=-1) == ak.num(b[name], axis=-1)) if a[name].ndim > 1 else True, name
        assert ak.all(ak.ravel(a[name]) == ak.ravel(b[name])), name


def test_rntuple_format_entries_and_listing(rntuple_pair, root_file):
    rn, tt, _ = rntuple_pair
    assert uproot.open(rn).classnames()["events;1"] == "ROOT::RNTuple"
    assert tree_format(rn, "events") == "rntuple" and tree_format(tt, "events") == "ttree"
    assert tree_format(root_file[0], "other") == "ttree"
    assert num_entries(rn, "events") == num_entries(tt, "events") == 400 and num_entries(root_file[0], "other") == 3
    with pytest.raises(ValueError, match=r"tree 'evnts' not found in file .*rn\.root.*\['events'\]"):
        read_tree(rn, "evnts", ["met"])  # the RNTuple is listed among the trees
    with pytest.raises(ValueError, match=r"'hist' in file .*rn\.root.* is a TH1D, not a TTree or an RNTuple"):
        num_entries(rn, "hist")


def test_rntuple_read_equals_ttree(rntuple_pair):
    rn, tt, data = rntuple_pair
    fields = ["Photon_pt", "met", "run"]
    for kwargs in ({}, {"cut": "(met > 15) & (run % 3 != 0)"}, {"entry_start": 50, "entry_stop": 120}):
        a, wa = read_tree(rn, "events", fields, weight_branch="genWeight", **kwargs)
        b, wb = read_tree(tt, "events", fields, weight_branch="genWeight", **kwargs)
        assert a.fields == b.fields == fields and len(a) == len(b) > 0
        assert str(a.type) == str(b.type)
        assert_same(a, b, fields)
        np.testing.assert_array_equal(np.asarray(wa), np.asarray(wb))
    sel = data["met"] > 15
    a, w = read_tree(rn, "events", ["met"], cut="met > 15", weight_branch="genWeight")
    np.testing.assert_array_equal(ak.to_numpy(a.met), data["met"][sel])
    np.testing.assert_array_equal(np.asarray(w), data["genWeight"][sel])
    assert (np.asarray(w) < 0).any()
    aliases = {"met2": "2 * met", "met4": "2 * met2", "lead": "where(met > 30, sqrt(met), -1)"}
    for lib in ("np", "torch"):
        a, wa = read_tree(rn, "events", ["met4", "lead"], aliases=aliases, cut="met2 > 40", library=lib)
        b, wb = read_tree(tt, "events", ["met4", "lead"], aliases=aliases, cut="met2 > 40", library=lib)
        for name in ("met4", "lead"):
            np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]))
        np.testing.assert_array_equal(np.asarray(wa), np.asarray(wb))
    with pytest.raises(ValueError, match="jagged.*library='ak'"):
        read_tree(rn, "events", ["Photon_pt"], library="np")


def test_rntuple_iterate_equals_ttree(rntuple_pair):
    rn, tt, _ = rntuple_pair
    kwargs = {"step_size": 128, "cut": "met > 25", "weight_branch": "genWeight", "progress": False}
    a = list(iterate_tree(rn, "events", ["Photon_pt", "met"], **kwargs))
    b = list(iterate_tree(tt, "events", ["Photon_pt", "met"], **kwargs))
    assert len(a) == len(b) == 4
    for (ca, wa), (cb, wb) in zip(a, b):
        assert_same(ca, cb, ["Photon_pt", "met"])
        np.testing.assert_array_equal(np.asarray(wa), np.asarray(wb))
    full, _ = read_tree(rn, "events", ["met"], cut="met > 25")
    joined = list(iterate_tree(rn, "events", ["met"], step_size="10 MB", cut="met > 25", progress=False))
    assert len(joined) == 1 and ak.all(joined[0][0].met == full.met)
    with pytest.raises(ValueError, match=r"empty selection: no entries of tree 'events' in file .*rn\.root"):
        list(iterate_tree(rn, "events", ["met"], step_size=100, cut="met < 0", progress=False))


def test_rntuple_read_errors_name_file_tree_field(rntuple_pair, tmp_path):
    rn, _, _ = rntuple_pair
    with pytest.raises(ValueError, match=r"branch 'mett' not found in tree 'events' of file .*rn\.root.*similar"):
        read_tree(rn, "events", ["met", "mett"])
    with pytest.raises(ValueError, match=r"branch 'w' not found in tree 'events'"):
        read_tree(rn, "events", ["met"], weight_branch="w")
    with pytest.raises(ValueError, match=r"tree 'events' of file .*rn\.root.*cut='mett > 1'.*'mett' not found"):
        read_tree(rn, "events", ["met"], cut="mett > 1")
    with pytest.raises(ValueError, match=r"'ptx' not found in tree 'events'.*pt2"):
        read_tree(rn, "events", ["pt2"], aliases={"pt2": "ptx ** 2"})
    with pytest.raises(ValueError, match=r"cut='mett > 1'.*'mett' not found"):
        list(iterate_tree(rn, "events", ["met"], cut="mett > 1", progress=False))
    with pytest.raises(ValueError, match=r"empty selection.*'events'.*rn\.root.*met > 1e9"):
        read_tree(rn, "events", ["met"], cut="met > 1e9")
    nan_path = tmp_path / "nan.root"
    with uproot.recreate(nan_path) as f:
        f["t"] = {"a": np.full(4, np.nan), "b": np.ones(4)}
    with pytest.raises(ValueError, match=r"branch 'a' of tree 't' in file .*nan\.root.* all NaN"):
        read_tree(nan_path, "t", ["b", "a"])


def test_rntuple_nested_fields(tmp_path):
    photons = ak.Array([[{"pt": 30.0, "r9": 0.9}], [], [{"pt": 50.0, "r9": 0.8}, {"pt": 25.0, "r9": 0.95}]])
    path = tmp_path / "nested.root"
    with uproot.recreate(path) as f:
        f["events"] = {"Photon": photons, "met": np.array([10.0, 20.0, 30.0])}
    arrays, _ = read_tree(path, "events", ["Photon.pt"], cut="met > 15")
    assert arrays["Photon.pt"].tolist() == [[], [50.0, 25.0]]
    arrays, _ = read_tree(path, "events", ["pt2"], aliases={"pt2": "2 * Photon.pt"})
    assert arrays.pt2.tolist() == [[60.0], [], [100.0, 50.0]]


def test_write_corrected_rntuple_round_trip(rntuple_pair, tmp_path):
    rn, _, data = rntuple_pair
    before = digest(rn)
    corr_pt = data["Photon_pt"] * 1.02
    corr_met = data["met"] * 0.9
    new_w = -np.linspace(0.5, 1.5, 400)
    extra = {"mass_corr": torch.linspace(0, 1, 400, dtype=torch.float64), "met_corr_unc": ak.Array(0.05 * corr_met)}
    out = write_corrected(rn, tmp_path / "out" / "c.root", "events", {"Photon_pt": corr_pt, "met": corr_met},
                          weight=new_w, extra=extra, step_size=150)  # fmt: skip
    assert digest(rn) == before
    assert tree_format(out, "events") == "rntuple" and num_entries(out, "events") == 400
    back = uproot.open(out)["events"].arrays()
    assert set(back.fields) == {*data, "Photon_pt_corr", "met_corr", "weight_corr", "mass_corr", "met_corr_unc"}
    for name in data:
        assert_same(back, ak.Array(data), [name])
    assert str(back.Photon_pt_corr.type) == "400 * var * float64"  # jagged structure kept natively
    assert_same(back, ak.Array({"Photon_pt_corr": corr_pt}), ["Photon_pt_corr"])
    np.testing.assert_array_equal(ak.to_numpy(back.met_corr), corr_met)
    np.testing.assert_array_equal(ak.to_numpy(back.weight_corr), new_w)
    np.testing.assert_array_equal(ak.to_numpy(back.mass_corr), extra["mass_corr"].numpy())
    arrays, w = read_tree(out, "events", ["Photon_pt_corr", "met_unc"], aliases={"met_unc": "met_corr_unc"},
                          weight_branch="weight_corr", cut="met_corr > 10")  # fmt: skip
    sel = corr_met > 10
    np.testing.assert_array_equal(np.asarray(w), new_w[sel])
    np.testing.assert_array_equal(ak.to_numpy(arrays.met_unc), 0.05 * corr_met[sel])
    only = write_corrected(rn, tmp_path / "only.root", "events", {}, extra={"x": np.ones(400)}, branches=["met"])
    assert set(uproot.open(only)["events"].keys()) == {"met", "x"}


def test_write_corrected_format_conversion(rntuple_pair, root_file, tmp_path):
    rn, tt, data = rntuple_pair
    corr_pt = data["Photon_pt"] + 1.0
    out = write_corrected(rn, tmp_path / "as_tt.root", "events", {"Photon_pt": corr_pt}, format="ttree",
                          extra={"mass_corr": np.arange(400.0)}, step_size=128)  # fmt: skip
    assert tree_format(out, "events") == "ttree"
    tree = uproot.open(out)["events"]
    assert tree["Photon_pt_corr"].count_branch.name == tree["Photon_pt"].count_branch.name == "nPhoton_pt"
    a, _ = read_tree(out, "events", ["Photon_pt", "Photon_pt_corr", "met", "run", "mass_corr"])
    assert_same(a, ak.Array({**data, "Photon_pt_corr": corr_pt, "mass_corr": np.arange(400.0)}), a.fields)

    path, photons, weight = root_file  # a TTree with Photon_pt/Photon_r9 counted by nPhoton
    corr_r9 = photons.r9 * 0.99
    out = write_corrected(path, tmp_path / "as_rn.root", "events", {"Photon_r9": corr_r9}, weight=-weight,
                          format="rntuple", extra={"pt_unc": np.full(500, 0.1)}, step_size=200)  # fmt: skip
    assert tree_format(out, "events") == "rntuple"
    back = uproot.open(out)["events"].arrays()
    assert {"Photon_pt", "Photon_r9", "Photon_r9_corr", "nPhoton", "met", "genWeight", "weight_corr", "pt_unc"} == set(
        back.fields
    )
    assert ak.all(back.Photon_r9_corr == corr_r9) and ak.all(back.Photon_pt == photons.pt)
    assert ak.all(back.nPhoton == ak.num(photons))  # the TTree counter is kept as an ordinary field
    np.testing.assert_array_equal(ak.to_numpy(back.weight_corr), -weight)
    same = write_corrected(path, tmp_path / "same.root", "events", {"met": np.zeros(500)}, format="ttree")
    assert tree_format(same, "events") == "ttree"
    with pytest.raises(ValueError, match=r"format must be.*'ttree', 'rntuple'.*'parquet'"):
        write_corrected(path, tmp_path / "bad.root", "events", {"met": np.zeros(500)}, format="parquet")


def test_write_corrected_extra_errors(rntuple_pair, tmp_path):
    rn, tt, _ = rntuple_pair
    ones = np.ones(400)
    for path in (rn, tt):
        out = tmp_path / "o.root"
        name = path.name.replace(".", r"\.")
        with pytest.raises(
            ValueError, match=rf"extra branch 'met' clashes with an existing branch of tree 'events' of .*{name}"
        ):  # noqa: E501
            write_corrected(path, out, "events", {"met": ones}, extra={"met": ones})
        with pytest.raises(ValueError, match=rf"extra branch 'met_corr' clashes with the corrected branch.*{name}"):
            write_corrected(path, out, "events", {"met": ones}, extra={"met_corr": ones})
        with pytest.raises(ValueError, match=r"extra branch 'weight_corr' clashes with the weight branch"):
            write_corrected(path, out, "events", {"met": ones}, weight=ones, extra={"weight_corr": ones})
        with pytest.raises(ValueError, match=rf"extra branch 'm' has 399 entries but tree 'events' of .*{name}.* 400"):
            write_corrected(path, out, "events", {"met": ones}, extra={"m": ones[:-1]})
        with pytest.raises(ValueError, match=rf"extra branch 'j' for tree 'events' of .*{name}.* must be flat"):
            write_corrected(path, out, "events", {"met": ones}, extra={"j": ak.Array([[1.0]] * 400)})
        with pytest.raises(ValueError, match=r"extra branch 'm2' .* must be flat"):
            write_corrected(path, out, "events", {"met": ones}, extra={"m2": np.ones((400, 2))})
        with pytest.raises(ValueError, match="refusing to write.*input"):
            write_corrected(path, path, "events", {"met": ones}, format="rntuple")
        assert not out.exists() and not (tmp_path / "o.root.tmp").exists()
