"""Plots are written as PNG files."""

from __future__ import annotations

import numpy as np

from bgflow_sci.hep.plots import plot_correlations, plot_mass, plot_variables
from bgflow_sci.hep.synthetic import CORRECTED, generate, photon_table


def is_png(path) -> bool:
    return path.stat().st_size > 5000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots(tmp_path):
    mc, data = generate(2000, "mc", 0), generate(2000, "data", 1)
    xm, xd = photon_table(mc, CORRECTED), photon_table(data, CORRECTED)
    samples = {"data": xd, "MC": xm, "MC (weighted)": (xm, np.full(len(xm), 2.0))}
    assert is_png(plot_variables(samples, tmp_path / "vars.png", names=list(CORRECTED), log_y=["iso"]))
    assert is_png(plot_correlations(samples, tmp_path / "sub" / "corr.png", names=list(CORRECTED)))
    assert is_png(plot_mass({"data": data["mass"], "MC": (mc["mass"], mc["weight"])}, tmp_path / "mgg.png"))
