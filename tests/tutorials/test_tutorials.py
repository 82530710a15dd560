"""The tutorials run end to end in quick mode and produce what they promise."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]


def test_tutorial_double_well_quick(tmp_path):
    module = runpy.run_path(str(ROOT / "tutorials" / "01_boltzmann_generator_double_well.py"))
    result = module["main"](quick=True, out=str(tmp_path))
    # quick mode measured: ESS 0.886, ΔF -1.699 ± 0.025 kT against the exact -1.691 kT
    assert result["ess"] > 0.3
    assert 0 < result["delta_f_error"] < 0.075
    assert abs(result["delta_f"] - result["exact"]) < max(0.3, 4 * result["delta_f_error"])
    for name in ("training.png", "free_energy_x1.png"):
        assert (tmp_path / name).stat().st_size > 10_000


def test_tutorial_sampling_double_well_quick(tmp_path):
    module = runpy.run_path(str(ROOT / "tutorials" / "03_sampling_double_well.py"))
    r = module["main"](quick=True, out=str(tmp_path))
    exact = r["exact"]
    value, error = r["stochastic flow"]
    # quick mode measured: stochastic flow ΔF -1.698 ± 0.104 kT against the exact -1.691 kT
    assert 0 < error < 0.3
    assert abs(value - exact) < 4 * error + 0.2
    # local MCMC started in one well stays biased; flow MCMC from the same start gets much closer
    assert abs(r["flow MCMC (IMH)"][0] - exact) < abs(r["MALA"][0] - exact) / 3
    assert (tmp_path / "sampling_double_well.png").stat().st_size > 10_000


def test_tutorial_hep_sim_to_data_quick(tmp_path):
    require("uproot")
    module = runpy.run_path(str(ROOT / "tutorials" / "04_hep_sim_to_data.py"))
    r = module["main"](quick=True, out=str(tmp_path))  # ≈ 20 s CPU on 1 thread
    auc, w1, corr = r["auc"], r["w1"], r["corr_diff"]
    # quick mode measured: AUC MC 0.68, quantile 0.57, MDMM 0.51; corr error MC 0.23, quantile 0.24, MDMM 0.14
    assert auc["MDMM morphing"] < min(auc["MC"] - 0.1, 0.56)
    assert auc["MDMM morphing"] < auc["quantile (per variable)"]
    assert corr["MDMM morphing"] < 0.8 * min(corr["MC"], corr["quantile (per variable)"])
    for v in ("r9", "sieie", "iso"):
        assert w1["MDMM morphing"][v] < 0.3 * w1["MC"][v]
    assert r["roundtrip_max_abs_diff"] < 1e-9 and r["final_lambda"] > 0
    # reweighting: fewer effective events, histograms much closer to data
    assert 0.05 < r["ess"] < 1.0
    for v in ("r9", "sieie", "iso"):
        assert r["chi2_ndf"]["reweighted MC"][v] < 0.5 * r["chi2_ndf"]["MC"][v]
    eff = r["efficiency"]
    assert abs(eff["MDMM morphing"] - eff["data"]) < 0.5 * abs(eff["MC"] - eff["data"])
    for name in ("hep_variables.png", "hep_correlations.png", "hep_mass.png", "hep_mdmm_history.png"):
        assert (tmp_path / name).stat().st_size > 10_000


def test_tutorial_alanine_dipeptide_quick(tmp_path):
    module = runpy.run_path(str(ROOT / "tutorials" / "05_alanine_dipeptide.py"))
    summary = module["main"](quick=True, out=str(tmp_path))
    # quick mode measured (CPU, 1 thread, ≈ 90 s): Kish ESS 0.0234 of 5000 samples, held-out NLL -215.6,
    # flow-enhanced MD acceptance 0.12 (24 of 200 proposals); bounds at about 1/3 of that
    assert summary["ess"] > 0.008, summary["ess"]
    assert summary["heldout_nll"] < -210, summary["heldout_nll"]
    # ΔF between the φ basins: 180 steps of a tiny flow do not resolve it (measured 8.15 ± 0.38 kT against the
    # reference 3.85 kT; at a 2 % ESS the bootstrap error underestimates the bias), so only finite and bounded:
    # positive (αL/C7ax is the less populated basin), below 12 kT (an empty basin gives +inf), error below 3x 0.38
    for name in ("phi_basin", "phi_sign"):
        df = summary["delta_f"][name]
        assert 1.0 < df["reweighted"] < 12.0 and 0 < df["error"] < 1.2, (name, df)
        assert df["reference"] == pytest.approx(3.85, abs=0.02) and 0 < df["reference_error"] < 0.1, (name, df)
    md = summary["enhanced_md"]
    assert md["cycles"] == 20 and md["n_md_steps"] == 400 and 0.03 < md["acceptance_rate"] <= 1, md
    for fig in summary["figures"]:
        assert Path(fig).stat().st_size > 10_000


def test_tutorial_your_own_molecule_quick(tmp_path):
    require("openmm")
    require("mdtraj")
    module = runpy.run_path(str(ROOT / "tutorials" / "06_your_own_molecule.py"))
    summary = module["main"](quick=True, out=str(tmp_path))
    # quick mode measured (CPU, 1 thread, ~30 s): 500 MD frames of a 20 ps run that stays in β and in the t
    # rotamer, ESS ~0.006 of 500; rms distance of the flow's F(φ), F(ψ), F(χ1) to the MD profiles 0.44, 0.17, 0.15 kT
    # over 14, 7, 6 bins (2026-12-03); the reweighted ones 1.6-1.8 kT in that run
    assert summary["n_atoms"] == 28 and summary["md_frames"] == 500
    assert summary["heldout_nll"] < -250 and 0 < summary["ess"] <= 1
    # the flow alone must reproduce the MD profiles; the reweighted ones rest on the handful of samples that carry
    # the weight at this ESS (seen from 1.5 to 3e5 kT rms between runs), so only their presence is checked
    for name in ("phi_2", "psi_2", "chi1_2"):
        diff = summary["flow_profiles_vs_md"][name]
        assert diff["bins"] >= 3 and 0 <= diff["rms"] < 2, (name, diff)
        assert set(summary["profiles_vs_md"][name]) >= {"rms", "max_abs", "bins"}
    md = summary["enhanced_md"]
    assert md["cycles"] == 10 and md["n_md_steps"] == 200 and "psi_2_beta_vs_alpha" in md["regions"]
    assert set(md["collective_variables"]) == {"phi_2", "psi_2", "chi1_2"}
    # the χ1 rotamer arcs cover the circle: fractions sum to one, for the MD frames and the enhanced-MD frames
    for rotamers in (summary["md_rotamers"], summary["enhanced_md_rotamers"]):
        assert set(rotamers) == {"g+", "t", "g-"} and abs(sum(rotamers.values()) - 1.0) < 1e-12, rotamers
    assert 0 <= summary["md_alpha_fraction"] <= 1 and summary["md_transitions"] >= 0
    for fig in summary["figures"]:
        assert Path(fig).stat().st_size > 10_000
    assert (tmp_path / "ace_val_nme.json").is_file() and (tmp_path / "md" / "md.json").is_file()


def test_tutorial_rigid_bodies_quick(tmp_path):
    require("openmm")
    module = runpy.run_path(str(ROOT / "tutorials" / "07_rigid_bodies.py"))
    r = module["main"](quick=True, out=str(tmp_path))  # ≈ 1 min CPU: 10 ps MD, 60 steps
    assert abs(r["orientations"]["integral"] - 1) < 4 * r["orientations"]["integral_error"] + 1e-3
    tet = r["tetrahedron"]
    assert abs(tet["log_z"] - tet["log_z_exact"]) < 4 * tet["log_z_error"] + 1e-3
    for name in ("plain FEP", "flow"):
        assert 0 < r["ice"][name]["ess"] <= 1 and r["ice"][name]["delta_f"] < -30  # a bound crystal, cooled
    assert (tmp_path / "ice_fep.png").stat().st_size > 10_000


def test_tutorial_hep_real_events_cli_quick(tmp_path):
    require("uproot")
    module = runpy.run_path(str(ROOT / "tutorials" / "08_hep_real_events_cli.py"))
    r = module["main"](quick=True, out=str(tmp_path))  # CLI subprocesses, 30 steps, 2 members
    report = r["report"]
    # the report uses exactly the held-out events and shows the floor row
    assert report["events"]["data"]["part"] == "holdout" and report["events"]["corrected"]["part"] == "holdout"
    assert set(report["metrics"]) == {"MC", "corrected MC", "data vs data (floor)"} and report["ensemble"] == 2
    assert report["mass"]["w1"]["MC"] > 2 * report["mass"]["w1"]["data vs data (floor)"]  # the distortion shows
    assert all(0.0 <= c <= 1.0 for c in r["coverage"].values())
    for name in ("hep_cli_mass.png", "hep_cli_variables.png"):
        assert (tmp_path / name).stat().st_size > 10_000
