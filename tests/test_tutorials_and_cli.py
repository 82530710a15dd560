"""The tutorials and the CLI run end to end in quick mode and produce what they promise."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_tutorial_double_well_quick(tmp_path):
    module = runpy.run_path(str(ROOT / "tutorials" / "01_boltzmann_generator_double_well.py"))
    result = module["main"](quick=True, out=str(tmp_path))
    assert result["ess"] > 0.3
    assert abs(result["delta_f"] - result["exact"]) < max(0.3, 4 * result["delta_f_error"])
    for name in ("training.png", "free_energy_x1.png"):
        assert (tmp_path / name).stat().st_size > 10_000


def test_cli_demo_quick(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "bgflow_sci.cli", "demo", "--quick", "--no-progress", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ESS" in proc.stdout and "±" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["abs_error"] < 0.2
    assert 0.0 < results["ess"] <= 1.0
    for name in ("densities.png", "free_energy_x1.png", "training.png"):
        assert (out / name).stat().st_size > 10_000


def test_cli_help_explains_options():
    proc = subprocess.run([sys.executable, "-m", "bgflow_sci.cli", "demo", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for option in ("--quick", "--seed", "--device", "--out"):
        assert option in proc.stdout


def test_cli_rejects_unavailable_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    proc = subprocess.run(
        [sys.executable, "-m", "bgflow_sci.cli", "demo", "--quick", "--device", "cuda", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "CUDA is not available" in proc.stderr


def test_tutorial_sampling_double_well_quick(tmp_path):
    module = runpy.run_path(str(ROOT / "tutorials" / "03_sampling_double_well.py"))
    r = module["main"](quick=True, out=str(tmp_path))
    exact = r["exact"]
    value, error = r["stochastic flow"]
    assert abs(value - exact) < 4 * error + 0.2
    # local MCMC started in one well stays biased; flow MCMC from the same start gets much closer
    assert abs(r["flow MCMC (IMH)"][0] - exact) < abs(r["MALA"][0] - exact) / 3
    assert (tmp_path / "sampling_double_well.png").stat().st_size > 10_000


def test_tutorial_hep_sim_to_data_quick(tmp_path):
    pytest.importorskip("uproot")
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
