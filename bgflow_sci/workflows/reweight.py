"""Importance reweighting of a samples file (``bgflow-sci reweight``) with the system's collective variables.

Optional system hooks read here: ``collective_variables(x) -> {name: (n,) array}`` for profiles (the first two also
give a 2D map); ``free_energy_regions(cvs) -> {name: (in_a, in_b)}`` boolean masks for ``ΔF = F_B - F_A``;
``reference_free_energies() -> {"delta_f": {name: {"value", "error"}}, "profiles": {cv: {"centers",
"free_energy", "error"}}}`` to compare against. All estimates come from :mod:`bgflow_sci.reweighting`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from .. import reweighting as rw
from .config import EVALUATE_DEFAULTS, merge_config
from .sample import read_samples
from .systems import load_system, resolve_system_reference

__all__ = ["delta_f_entry", "profile_edges", "profile_entry", "reweight"]


def _finite_or_none(values) -> list[float | None]:
    """A 1D array as a JSON-safe list: ``inf``/``nan`` become ``None``."""
    return [float(v) if math.isfinite(float(v)) else None for v in np.asarray(values, dtype=float).reshape(-1)]


def delta_f_entry(est: rw.Estimate, flow_only: float, reference: dict | None, name: str) -> dict[str, Any]:
    """The ``results.json`` entry of one region pair: reweighted ΔF with error, the flow-only value, the reference."""
    entry = {"reweighted": est.value, "error": est.error, "flow_only": flow_only}
    ref = (reference or {}).get("delta_f", {}).get(name)
    if ref is not None:
        entry.update(reference=ref["value"], reference_error=ref["error"])
        entry["abs_error"] = abs(est.value - ref["value"])
    return entry


def profile_edges(lo: float, hi: float, bins: int) -> torch.Tensor:
    """``bins + 1`` edges on ``[-π, π]`` (angles), or on ``[lo, hi]`` when the collective variable leaves it."""
    if lo < -math.pi - 1e-6 or hi > math.pi + 1e-6:
        return torch.linspace(float(lo), float(hi), bins + 1, dtype=torch.float64)
    return torch.linspace(-math.pi, math.pi, bins + 1, dtype=torch.float64)


def profile_entry(reweighted, flow, reference: dict | None, name: str, out: Path) -> dict[str, Any]:
    """The ``results.json`` entry of one collective variable's profile (kT; ``null`` in empty bins), compared with
    the system's reference on the same bins; the plot ``free_energy_<name>.png`` (flow, reweighted, reference)."""
    from ..plotting import plot_free_energy_profiles

    profiles = {
        "flow": SimpleNamespace(centers=flow.centers, free_energy=flow.free_energy),
        "reweighted flow": reweighted,
    }
    ref = (reference or {}).get("profiles", {}).get(name)
    if ref is not None:
        profiles["reference"] = SimpleNamespace(**ref)
    entry = {
        "centers": _finite_or_none(reweighted.centers),
        "reweighted": _finite_or_none(reweighted.free_energy),
        "error": _finite_or_none(reweighted.error),
        "flow_only": _finite_or_none(flow.free_energy),
    }
    same_bins = ref is not None and np.shape(ref["centers"]) == tuple(reweighted.centers.shape)
    if same_bins and np.allclose(np.asarray(ref["centers"], dtype=float), reweighted.centers.numpy(), atol=1e-9):
        ref_f = torch.as_tensor(np.asarray(ref["free_energy"], dtype=float))
        entry["reference"] = _finite_or_none(ref_f)
        diff = rw.profile_difference(reweighted.free_energy, ref_f, edges=reweighted.edges)
        entry["vs_reference"] = {"rms": diff.rms, "max_abs": diff.max_abs, "bins": diff.bins, "below_kt": 5.0}
    values = [np.asarray(p.free_energy)[np.isfinite(np.asarray(p.free_energy))] for p in profiles.values()]
    top = max((float(v.max()) for v in values if v.size), default=10.0)
    plot_free_energy_profiles(profiles, out / f"free_energy_{name}.png", xlabel=name, ylim=(-1.0, min(top, 30.0) + 2))
    return entry


def reweight(samples: str | os.PathLike, out: str | os.PathLike, n_bootstrap: int | None = None) -> dict[str, Any]:
    """Importance-reweight samples written by :func:`~bgflow_sci.workflows.sample.sample`: ESS, log Z, ΔF of the
    system's regions and profiles of its collective variables (flow, reweighted flow, reference), with bootstrap
    errors; ``results.json`` and plots into ``out``. Needs only the samples file and the system (no checkpoint).
    Sample sets in many files (or larger than memory): :func:`~bgflow_sci.workflows.sample_sets.reweight_files`."""
    from ..plotting import plot_2d_histograms

    samples = Path(samples)
    stored = read_samples(samples)
    x, log_w, config = stored["x"], stored["log_w"], stored["config"]
    module = load_system(resolve_system_reference(stored["system"], samples.parent))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ev = merge_config(EVALUATE_DEFAULTS, config.get("evaluate", {}))
    n_boot = n_bootstrap if n_bootstrap is not None else ev["n_bootstrap"]
    gen = torch.Generator().manual_seed(0)
    finite = torch.isfinite(log_w)
    results: dict[str, Any] = {
        "samples": len(log_w),
        "invalid": int((~finite).sum()),
        "ess": rw.ess(log_w),
        "log_z": rw.log_z(log_w, n_bootstrap=n_boot, generator=gen)._asdict(),
    }
    reference = module.reference_free_energies() if hasattr(module, "reference_free_energies") else None
    cvs = module.collective_variables(x) if hasattr(module, "collective_variables") else {}
    cvs_t = {k: torch.as_tensor(np.asarray(v), dtype=torch.float64) for k, v in cvs.items()}
    if hasattr(module, "free_energy_regions") and cvs:
        results["delta_f"] = {}
        for name, (in_a, in_b) in module.free_energy_regions(cvs).items():
            a, b = torch.as_tensor(in_a), torch.as_tensor(in_b)
            est = rw.free_energy_difference(log_w, a, b, n_bootstrap=n_boot, generator=gen)
            flow = rw.free_energy_difference(None, a[finite], b[finite], n_bootstrap=0)
            results["delta_f"][name] = delta_f_entry(est, flow.value, reference, name)
    for name, cv in cvs_t.items():
        edges = profile_edges(float(cv.min()), float(cv.max()), ev["bins"])
        flow = rw.free_energy_profile(cv[finite], None, edges, n_bootstrap=0)
        reweighted = rw.free_energy_profile(cv, log_w, edges, n_bootstrap=n_boot, generator=gen)
        results.setdefault("profiles", {})[name] = profile_entry(reweighted, flow, reference, name, out)
    if len(cvs) >= 2:
        (n1, c1), (n2, c2) = list(cvs.items())[:2]
        panels = {"flow": (c1[finite.numpy()], c2[finite.numpy()], None)}
        panels["reweighted flow"] = (c1, c2, rw.normalized_weights(log_w).numpy())
        if hasattr(module, "training_data"):
            ref_cv = module.collective_variables(np.asarray(module.training_data(config)))
            panels = {"reference data": (ref_cv[n1], ref_cv[n2], None), **panels}
        plot_2d_histograms(panels, out / f"map_{n1}_{n2}.png", xlabel=n1, ylabel=n2)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    return results
