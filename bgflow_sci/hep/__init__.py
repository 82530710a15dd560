"""High-energy physics: ROOT I/O, a synthetic H→γγ-like sample, real test files, preprocessing, quantile-mapping
baselines, sim-to-data metrics and plots.

The ROOT-facing parts (:mod:`.io`, :mod:`.datasets`) need ``uproot`` and ``awkward`` (``pip install bgflow_sci[hep]``)
and are imported on first use, so the rest of this package works without them.
"""

from __future__ import annotations

import importlib
from typing import Any

from .expressions import Expression, parse_derived
from .metrics import (
    classifier_auc,
    compare,
    correlation_difference,
    format_table,
    mmd_test,
    wasserstein_1d,
    weighted_auc,
    weighted_correlation,
)
from .preprocessing import PhysicsPreprocessor
from .quantile import ChainedQuantileMapper, QuantileMapper
from .synthetic import CORRECTED, KINEMATICS, from_photon_table, generate, photon_table, true_correction, write_root

_LAZY = {
    "read_tree": "io",
    "iterate_tree": "io",
    "flatten_objects": "io",
    "unflatten_objects": "io",
    "write_corrected": "io",
    "load_hzz_muons": "datasets",
    "load_zmumu": "datasets",
    "dimuon_mass": "datasets",
    "plot_variables": "plots",
    "plot_correlations": "plots",
    "plot_mass": "plots",
    "FeatureFn": "morphing",
    "MorphingFlow": "morphing",
    "MorphingObjective": "morphing",
    "fit_morphing": "morphing",
    "MorphingValidation": "morphing",
    "MorphingEnsemble": "ensemble",
    "load_morphing": "ensemble",
    "held_out": "splits",
    "holdout_mask": "splits",
    "write_example": "examples",
    "closure_distortion": "examples",
    "ConditionalDensityFlow": "quantile_flow",
    "FlowQuantileMorpher": "quantile_flow",
    "ClassifierReweighter": "event_weights",
    "density_ratio_log_weights": "event_weights",
    "clip_weights": "event_weights",
    "fit_ratio_flows": "event_weights",
    "histogram_chi2": "event_weights",
}

__all__ = [
    "CORRECTED",
    "Expression",
    "parse_derived",
    "ClassifierReweighter",
    "ConditionalDensityFlow",
    "FeatureFn",
    "FlowQuantileMorpher",
    "MorphingEnsemble",
    "MorphingFlow",
    "MorphingObjective",
    "MorphingValidation",
    "closure_distortion",
    "held_out",
    "holdout_mask",
    "load_morphing",
    "write_example",
    "clip_weights",
    "density_ratio_log_weights",
    "fit_morphing",
    "fit_ratio_flows",
    "histogram_chi2",
    "KINEMATICS",
    "ChainedQuantileMapper",
    "PhysicsPreprocessor",
    "QuantileMapper",
    "classifier_auc",
    "compare",
    "correlation_difference",
    "dimuon_mass",
    "flatten_objects",
    "format_table",
    "from_photon_table",
    "generate",
    "iterate_tree",
    "load_hzz_muons",
    "load_zmumu",
    "mmd_test",
    "photon_table",
    "plot_correlations",
    "plot_mass",
    "plot_variables",
    "read_tree",
    "true_correction",
    "unflatten_objects",
    "wasserstein_1d",
    "weighted_auc",
    "weighted_correlation",
    "write_corrected",
    "write_root",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
