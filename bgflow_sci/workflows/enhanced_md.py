"""Flow-enhanced MD of a system with a trained model as the proposal (``bgflow-sci enhanced-md``)."""

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
    from those positions (an ``(n_atoms, 3)`` array in nm). Writes ``trajectory`` (system format, e.g. DCD),
    ``enhanced_md.json`` with the acceptance, the energy evaluations and, per region of ``free_energy_regions``,
    the fraction of frames in region B and the transitions between A and B (changes of the last region visited)
    per evaluation.
    """
    from ..samplers import FlowEnhancedMD, count_transitions

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    module, config, bg = load_model(checkpoint)
    if not hasattr(module, "openmm_system"):
        raise AttributeError(f"system module {module.__file__} lacks openmm_system(config); see systems/README.md")
    _, system, positions = module.openmm_system(config)
    x0 = np.asarray(positions, dtype=np.float64).reshape(-1)  # (n_atoms, 3) nm from the hook
    with FlowEnhancedMD(
        system, module.TEMPERATURE, bg, md_steps=md_steps, proposals_per_cycle=proposals_per_cycle, seed=seed
    ) as sampler:
        result = sampler.run(n_cycles, x0=x0, progress=progress)
    frames = result.positions.reshape(len(result.positions), -1)
    report: dict[str, Any] = {"checkpoint": str(Path(checkpoint).resolve()), **result.summary()}
    if hasattr(module, "collective_variables") and hasattr(module, "free_energy_regions"):
        report["regions"] = {}
        for name, (in_a, in_b) in module.free_energy_regions(module.collective_variables(frames)).items():
            labels = np.where(np.asarray(in_b), 1, np.where(np.asarray(in_a), 0, -1))
            n_tr = count_transitions(labels)
            report["regions"][name] = {
                "fraction_in_b": float(np.mean(labels == 1)),
                "transitions": n_tr,
                "transitions_per_evaluation": n_tr / max(result.n_evaluations, 1),
            }
    if hasattr(module, "write_trajectory"):
        report["trajectory"] = str(module.write_trajectory(frames, out / "trajectory"))
    (out / "enhanced_md.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    return report
