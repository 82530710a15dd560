"""Worker side of the OpenMM bridge (:mod:`bgflow_sci.energies.openmm`): one ``Context``, chunks of positions in,
energies and forces out, through OpenMM's public API.

This file imports only the standard library, numpy and OpenMM (never torch nor ``bgflow_sci``): a worker process of
the pool loads it by path as the top-level module ``_bgflow_sci_openmm_worker`` (see ``openmm._WorkerPool``), which
starts a worker several times faster and smaller than importing the package would (measured: 0.6 s and 40 MB
against 6 s and 240 MB; a script whose main module imports torch still loads it in every ``spawn`` child). In-process
evaluation (``n_workers=1``) imports this file as a normal submodule and calls :func:`make_context` and
:func:`evaluate_chunk`.
"""

from __future__ import annotations

import math
import os
import traceback
from typing import Any

import numpy as np

_context: Any = None  # this worker's Context (set by initialize)
_max_energy_kj = math.inf
_startup_error: str | None = None  # traceback of a failed initialize, reported by probe
_barrier: Any = None


def make_context(system_xml: str, platform: str, properties: dict[str, str]) -> Any:
    """A ``Context`` of the XML-serialised ``System`` on ``platform`` (a Verlet integrator that never steps)."""
    import openmm

    system = openmm.XmlSerializer.deserialize(system_xml)
    integrator = openmm.VerletIntegrator(0.001)
    return openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform), properties)


def evaluate_chunk(context: Any, positions: np.ndarray, max_energy_kj: float) -> tuple[np.ndarray, np.ndarray]:
    """Energies ``(n,)`` in kJ/mol and forces ``(n, n_atoms, 3)`` in kJ/mol/nm of ``positions`` ``(n, n_atoms, 3)`` nm.

    A configuration whose evaluation raises (OpenMM refuses NaN coordinates, an exploded state), or whose energy or
    forces are not finite or whose energy exceeds ``max_energy_kj``, gets a NaN energy and zero force. A chunk that
    does not fit the System (shape, atom count) raises ``ValueError``: that is a caller's error, not a configuration's.

    Virtual sites (TIP4P's M, ...) are recomputed from their parent atoms before each evaluation and get zero force
    (OpenMM has already moved their force onto the parents): the energy is a function of the real atoms only, and
    the forces are its exact negative gradient.
    """
    from openmm import unit

    n_atoms = context.getSystem().getNumParticles()
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 3 or positions.shape[1:] != (n_atoms, 3):
        raise ValueError(f"positions must be (n, {n_atoms}, 3) nm for this System, got shape {positions.shape}")
    kj, kj_nm = unit.kilojoule_per_mole, unit.kilojoule_per_mole / unit.nanometer
    system = context.getSystem()
    virtual = [i for i in range(n_atoms) if system.isVirtualSite(i)]
    energies = np.full(len(positions), np.nan)
    forces = np.zeros_like(positions)
    for i, xyz in enumerate(positions):
        try:
            context.setPositions(xyz)  # plain array: nm
            if virtual:
                context.computeVirtualSites()
            state = context.getState(getEnergy=True, getForces=True)
            e = state.getPotentialEnergy().value_in_unit(kj)
            f = state.getForces(asNumpy=True).value_in_unit(kj_nm)
        except Exception:  # noqa: BLE001 - OpenMM raises per configuration (e.g. NaN coordinates): mark it invalid
            continue
        if virtual:
            f[virtual] = 0.0
        if math.isfinite(e) and e <= max_energy_kj and np.isfinite(f).all():
            energies[i], forces[i] = e, f
    return energies, forces


def initialize(system_xml: str, platform: str, properties: dict[str, str], max_energy_kj: float, barrier: Any) -> None:
    """Pool initializer: build this worker's Context. A failure is kept (and reported by :func:`probe`) instead of
    raised, because an exception in an initializer only breaks the pool without saying why."""
    global _context, _max_energy_kj, _startup_error, _barrier
    _barrier, _max_energy_kj = barrier, max_energy_kj
    try:
        _context = make_context(system_xml, platform, properties)
    except BaseException:  # noqa: BLE001 - reported to the caller with the traceback
        _startup_error = traceback.format_exc()


def probe(timeout: float) -> tuple[int, str | None]:
    """``(pid, startup traceback or None)`` of this worker. Every worker waits at the pool's barrier, so that the
    ``n_workers`` probes submitted at start-up land on ``n_workers`` different processes."""
    _barrier.wait(timeout)
    return os.getpid(), _startup_error


def evaluate(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`evaluate_chunk` on this worker's Context; any error is re-raised with the worker's traceback."""
    if _context is None:
        raise RuntimeError(f"this worker has no Context; its start-up failed with:\n{_startup_error}")
    try:
        return evaluate_chunk(_context, positions, _max_energy_kj)
    except BaseException as error:  # noqa: BLE001 - keep the worker's traceback in the message
        raise RuntimeError(f"{type(error).__name__}: {error}; worker traceback:\n{traceback.format_exc()}") from None
