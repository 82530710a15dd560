"""Flow-enhanced MD of a system with a trained model as the proposal (``bgflow-sci enhanced-md``).

The transition report uses the system's own collective variables and free-energy regions (hooks
``collective_variables`` / ``free_energy_regions``): for alanine dipeptide its φ regions, for a config system
(:mod:`~bgflow_sci.workflows.config_system`) the ``collective_variables`` and ``free_energy_regions`` of its config.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .models import load_model

__all__ = ["enhanced_md"]


def enhanced_md(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    n_cycles: int,
    md_steps: int = 100,
    proposals_per_cycle: int = 10,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Flow-enhanced MD (:class:`~bgflow_sci.samplers.FlowEnhancedMD`) of a system with a trained model as proposal.

    Needs the system hook ``openmm_system(config) -> (topology, system, positions)`` and ``TEMPERATURE``; starts
    from those positions (an ``(n_atoms, 3)`` array in nm). A system with an ``md`` dict (a config system) sets the
    Langevin ``timestep_fs``, ``friction_per_ps`` and ``platform`` from it. Writes ``trajectory`` (system format,
    e.g. DCD), ``cvs.npz`` (per frame: every collective variable and, per region, the label 0 = A, 1 = B, -1 =
    neither) and ``enhanced_md.json`` with the acceptance, the energy evaluations, the range of each collective
    variable visited and, per region of ``free_energy_regions``, the fractions of frames in regions A and B and
    the transitions between A and B (changes of the last region visited), also per energy evaluation.
    """
    from ..samplers import FlowEnhancedMD, count_transitions

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    module, config, bg = load_model(checkpoint)
    if not hasattr(module, "openmm_system"):
        raise AttributeError(f"system module {module.__file__} lacks openmm_system(config); see systems/README.md")
    _, system, positions = module.openmm_system(config)
    x0 = np.asarray(positions, dtype=np.float64).reshape(-1)  # (n_atoms, 3) nm from the hook
    md = getattr(getattr(module, "molecule", None), "md", None) or {}
    langevin = {k: md[k] for k in ("timestep_fs", "friction_per_ps") if md.get(k) is not None}
    if md.get("platform"):
        langevin["platform"] = md["platform"]
    with FlowEnhancedMD(
        system,
        module.TEMPERATURE,
        bg,
        md_steps=md_steps,
        proposals_per_cycle=proposals_per_cycle,
        seed=seed,
        **langevin,
    ) as sampler:
        result = sampler.run(n_cycles, x0=x0, progress=progress)
    frames = result.positions.reshape(len(result.positions), -1)
    report: dict[str, Any] = {"checkpoint": str(Path(checkpoint).resolve()), **result.summary()}
    cvs = module.collective_variables(frames) if hasattr(module, "collective_variables") else {}
    series = {f"cv_{name}": np.asarray(v) for name, v in cvs.items()}
    if cvs:
        report["collective_variables"] = {
            name: {"min": float(np.min(v)), "max": float(np.max(v))} for name, v in cvs.items()
        }
    if cvs and hasattr(module, "free_energy_regions"):
        report["regions"] = {}
        for name, (in_a, in_b) in module.free_energy_regions(cvs).items():
            labels = np.where(np.asarray(in_b), 1, np.where(np.asarray(in_a), 0, -1))
            series[f"region_{name}"] = labels
            n_tr = count_transitions(labels)
            report["regions"][name] = {
                "fraction_in_a": float(np.mean(labels == 0)),
                "fraction_in_b": float(np.mean(labels == 1)),
                "transitions": n_tr,
                "transitions_per_evaluation": n_tr / max(result.n_evaluations, 1),
            }
    if series:
        np.savez_compressed(out / "cvs.npz", **series)
        report["cvs"] = str(out / "cvs.npz")
    if hasattr(module, "write_trajectory"):
        report["trajectory"] = str(module.write_trajectory(frames, out / "trajectory"))
    (out / "enhanced_md.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    return report
