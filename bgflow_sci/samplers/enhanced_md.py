"""Flow-enhanced molecular dynamics: OpenMM Langevin segments alternating with flow-proposal Metropolis moves.

Each cycle runs ``md_steps`` steps of OpenMM's ``LangevinMiddleIntegrator`` (one ``Context``), then
``proposals_per_cycle`` independent Metropolis–Hastings moves (Tierney 1994) with proposals ``x' ~ q`` from a flow
(or any normalised density) and the exact OpenMM energy: accept with ``min(1, w(x') / w(x))``,
``log w = -u - log q``, ``u = U / kT`` with ``kT = R T``. On acceptance the velocities are redrawn from
Maxwell–Boltzmann; since velocities are independent of positions in the canonical ensemble, both the MD segment and
the flow move leave ``exp(-u(x)) N(v; 0, kT/m)`` invariant and the trajectory is unbiased — the flow only decides
how often the chain jumps between metastable states (flow-enhanced sampling as in Noé et al., Science 2019, and the
global–local samplers of Gabrié, Rotskoff & Vanden-Eijnden, PNAS 2022). Positions are flat ``(batch, 3 n_atoms)``
in nm at the proposal boundary; frames are ``(n_atoms, 3)`` nm.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..energies.openmm import MOLAR_GAS_CONSTANT, OpenMMEnergy

__all__ = ["EnhancedMDResult", "FlowEnhancedMD", "count_transitions", "write_trajectory"]


@dataclass
class EnhancedMDResult:
    """Frames and statistics of one :meth:`FlowEnhancedMD.run`.

    Per frame: ``positions`` ``(frames, n_atoms, 3)`` nm, ``energies`` ``(frames,)`` kT, ``time_ps`` (MD time since the
    run started), ``cycle`` (index of the cycle the frame belongs to) and ``evaluations`` (running count of
    energy/force evaluations, MD steps plus Metropolis energies, when the frame was taken). Per cycle:
    ``accepted`` ``(n_cycles,)`` accepted flow proposals. Counters: ``n_md_steps`` (force evaluations of the
    integrator), ``n_proposal_energies`` (single-point energies for the Metropolis test: every proposal plus the
    current state once per cycle), ``n_log_q`` (densities ``log q`` of MD states), ``n_proposals`` (draws from
    the proposal, each with its ``log q``), ``n_invalid`` (rejected because ``x'``, ``u(x')`` or ``log q(x')`` is
    not finite) and ``n_undefined`` (cycles whose current state has no finite ``log q``: all proposals rejected).
    """

    positions: np.ndarray
    energies: np.ndarray
    time_ps: np.ndarray
    cycle: np.ndarray
    evaluations: np.ndarray
    accepted: np.ndarray
    n_md_steps: int
    n_proposal_energies: int
    n_log_q: int
    n_proposals: int
    n_invalid: int
    n_undefined: int
    wall_time: float
    temperature: float
    timestep_fs: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_evaluations(self) -> int:
        """Energy/force evaluations: MD steps plus Metropolis energies (``log q`` evaluations not included)."""
        return self.n_md_steps + self.n_proposal_energies

    @property
    def acceptance_rate(self) -> float:
        """Accepted over drawn proposals (``nan`` without proposals)."""
        return float(self.accepted.sum() / self.n_proposals) if self.n_proposals else math.nan

    def summary(self) -> dict[str, Any]:
        """The scalar statistics as a JSON-ready dict."""
        return {
            "frames": len(self.positions),
            "cycles": len(self.accepted),
            "accepted": int(self.accepted.sum()),
            "acceptance_rate": self.acceptance_rate,
            "n_md_steps": self.n_md_steps,
            "n_proposal_energies": self.n_proposal_energies,
            "n_evaluations": self.n_evaluations,
            "n_log_q": self.n_log_q,
            "n_proposals": self.n_proposals,
            "n_invalid": self.n_invalid,
            "n_undefined": self.n_undefined,
            "wall_time_s": self.wall_time,
            "temperature_K": self.temperature,
            "timestep_fs": self.timestep_fs,
        }


def _positive_int(value: Any, name: str, allow_zero: bool = False) -> int:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < (0 if allow_zero else 1):
        kind = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"{name} must be {kind} integer, got {value!r}")
    return int(value)


def _kelvin(temperature: Any) -> float:
    try:
        from openmm import unit

        if isinstance(temperature, unit.Quantity):
            temperature = temperature.value_in_unit(unit.kelvin)
    except ImportError:  # pragma: no cover - OpenMM is needed below anyway
        pass
    t = float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be positive (kelvin), got {temperature}")
    return t


class FlowEnhancedMD:
    """Langevin MD of an OpenMM ``system`` at ``temperature`` (K) with flow-proposal Metropolis moves in between.

    One cycle: ``md_steps`` steps of ``LangevinMiddleIntegrator(temperature, friction_per_ps, timestep_fs)``, then
    ``proposals_per_cycle`` proposals ``x' ~ q`` drawn at once and tested one after the other against the current
    state ``x``: accept with probability ``min(1, exp(log w(x') - log w(x)))``, ``log w = -u - log q``. ``u`` comes
    from :class:`~bgflow_sci.energies.OpenMMEnergy` (same system and platform, in-process) for proposals and for the
    current state; ``log q(x)`` of the current state from ``proposal.log_prob``. An accepted ``x'`` becomes the
    context's positions with fresh Maxwell–Boltzmann velocities. Proposals whose coordinates, energy or ``log q``
    are not finite are rejected and counted. ``proposals_per_cycle=0`` is plain MD (``proposal`` may be ``None``).

    ``proposal``: anything with ``sample_with_log_prob(n)`` and ``log_prob(x)`` on flat ``(batch, 3 n_atoms)`` nm
    tensors (a :class:`~bgflow_sci.BoltzmannGenerator`, a :class:`~bgflow_sci.distributions.Distribution`). Its
    draws use the global torch RNG with a private state seeded from ``seed`` (swapped in for the draw and out again,
    so the caller's RNG is untouched); the Langevin noise, acceptance tests and velocities also follow ``seed``.
    ``frame_every``: also record a frame every that many MD steps inside a segment (default: one frame per cycle,
    taken after the Metropolis moves). Holonomic constraints are refused: proposals would not satisfy them.
    """

    def __init__(
        self,
        system: Any,
        temperature: Any,
        proposal: Any = None,
        *,
        md_steps: int = 1000,
        proposals_per_cycle: int = 10,
        timestep_fs: float = 1.0,
        friction_per_ps: float = 1.0,
        platform: str = "Reference",
        platform_properties: dict[str, str] | None = None,
        frame_every: int | None = None,
        seed: int = 0,
    ):
        import openmm

        if isinstance(system, str):
            system = openmm.XmlSerializer.deserialize(system)
        if not isinstance(system, openmm.System):
            raise ValueError(f"system must be an openmm.System (or its XML), got {type(system).__name__}")
        self.temperature = _kelvin(temperature)
        self.md_steps = _positive_int(md_steps, "md_steps")
        self.proposals_per_cycle = _positive_int(proposals_per_cycle, "proposals_per_cycle", allow_zero=True)
        self.frame_every = None if frame_every is None else _positive_int(frame_every, "frame_every")
        if not (math.isfinite(timestep_fs) and timestep_fs > 0):
            raise ValueError(f"timestep_fs must be positive, got {timestep_fs}")
        if not (math.isfinite(friction_per_ps) and friction_per_ps >= 0):
            raise ValueError(f"friction_per_ps must be non-negative, got {friction_per_ps}")
        if system.getNumConstraints() > 0:
            raise ValueError(
                f"the system has {system.getNumConstraints()} holonomic constraints; flow proposals do not satisfy "
                "them (build it with constraints=None)"
            )
        self.n_atoms = system.getNumParticles()
        self.dim = 3 * self.n_atoms
        self.timestep_fs, self.friction_per_ps = float(timestep_fs), float(friction_per_ps)
        self.kt = MOLAR_GAS_CONSTANT * self.temperature  # kJ/mol
        if self.proposals_per_cycle > 0 and proposal is None:
            raise ValueError("proposals_per_cycle > 0 needs a proposal (or set proposals_per_cycle=0 for plain MD)")
        if proposal is not None:
            for name in ("sample_with_log_prob", "log_prob"):
                if not callable(getattr(proposal, name, None)):
                    raise ValueError(f"the proposal needs {name}(), got {type(proposal).__name__}")
            pdim = getattr(proposal, "dim", self.dim)
            if pdim != self.dim:
                raise ValueError(
                    f"the proposal has dim {pdim} but the system has {self.n_atoms} atoms: expected dim "
                    f"3 * n_atoms = {self.dim}"
                )
        self.proposal = proposal
        self._like = self._proposal_tensor()
        self.rng = np.random.default_rng(seed)
        torch_seed = int(self.rng.integers(2**62))
        self._rng_states = [torch.Generator(g.device).manual_seed(torch_seed).get_state() for g in self._generators()]
        properties = dict(platform_properties or {})
        self.integrator = openmm.LangevinMiddleIntegrator(
            self.temperature, self.friction_per_ps, self.timestep_fs * 1e-3
        )
        self.integrator.setRandomNumberSeed(self._openmm_seed())
        self.context = openmm.Context(system, self.integrator, openmm.Platform.getPlatformByName(platform), properties)
        self.energy = OpenMMEnergy(
            system, self.temperature, n_workers=1, platform=platform, platform_properties=properties
        )
        self._x: np.ndarray | None = None  # current positions (n_atoms, 3) nm, float64

    # -- helpers -----------------------------------------------------------------------------------------------
    def _proposal_tensor(self) -> Tensor:
        """An empty tensor with the dtype and device of the proposal's first floating tensor (else float64, CPU)."""
        if isinstance(self.proposal, torch.nn.Module):
            for t in list(self.proposal.parameters()) + list(self.proposal.buffers()):
                if t.is_floating_point():
                    return t.new_zeros(0)
        return torch.zeros(0, dtype=torch.float64)

    def _openmm_seed(self) -> int:
        return int(self.rng.integers(1, 2**31 - 1))  # 0 would ask OpenMM for a random seed

    def _generators(self) -> list[torch.Generator]:
        """The global generators a draw on the proposal's device uses: CPU, plus that CUDA device's."""
        gens = [torch.default_generator]
        if self._like.device.type == "cuda":
            gens.append(torch.cuda.default_generators[self._like.device.index or torch.cuda.current_device()])
        return gens

    def _draw(self, n: int) -> tuple[Tensor, Tensor]:
        """``n`` proposals ``(n, dim)`` float64 CPU and their ``log q`` ``(n,)``, without a graph; shape checked.

        The global RNG state is swapped for this sampler's own around the draw (cheaper than reseeding, which is
        slow in recent torch, and reproducible from ``seed`` alone).
        """
        gens = self._generators()
        saved = [g.get_state() for g in gens]
        try:
            for g, state in zip(gens, self._rng_states):
                g.set_state(state)
            with torch.no_grad():
                x, log_q = self.proposal.sample_with_log_prob(n)
        finally:
            self._rng_states = [g.get_state() for g in gens]
            for g, state in zip(gens, saved):
                g.set_state(state)
        if x.shape != (n, self.dim) or log_q.shape != (n,):
            raise ValueError(
                f"the proposal returned x {tuple(x.shape)} and log q {tuple(log_q.shape)}; expected ({n}, {self.dim}) "
                f"and ({n},)"
            )
        return x.detach().to("cpu", torch.float64), log_q.detach().to("cpu", torch.float64)

    def _log_q(self, x: np.ndarray) -> float:
        """``log q`` of one configuration ``(n_atoms, 3)`` nm."""
        xt = torch.as_tensor(x.reshape(1, self.dim), dtype=self._like.dtype, device=self._like.device)
        with torch.no_grad():
            return float(self.proposal.log_prob(xt).reshape(-1)[0])

    def _reduced_energy(self, x: Tensor) -> Tensor:
        """Exact reduced energies ``(batch,)`` (``+inf`` when invalid) of flat float64 configurations."""
        with torch.no_grad():
            return self.energy.energy(x)

    def _set_state(self, x: np.ndarray) -> None:
        """Positions ``x`` ``(n_atoms, 3)`` nm into the context with Maxwell–Boltzmann velocities."""
        self.context.setPositions(x)
        self.context.setVelocitiesToTemperature(self.temperature, self._openmm_seed())
        self._x = np.array(x, dtype=np.float64)

    def _md(self, steps: int, cycle: int) -> np.ndarray:
        import openmm

        try:
            self.integrator.step(steps)
        except openmm.OpenMMException as error:
            raise RuntimeError(
                f"the MD segment of cycle {cycle} failed ({error}); try a smaller timestep_fs (now {self.timestep_fs})"
            ) from error
        from openmm import unit

        positions = self.context.getState(getPositions=True).getPositions(asNumpy=True)
        self._x = np.asarray(positions.value_in_unit(unit.nanometer), dtype=np.float64)
        return self._x

    def _context_energy(self) -> float:
        """Reduced potential energy of the context's state (diagnostic frames; not counted as an evaluation)."""
        from openmm import unit

        energy = self.context.getState(getEnergy=True).getPotentialEnergy()
        return energy.value_in_unit(unit.kilojoule_per_mole) / self.kt

    def _initial_positions(self, x0: Any) -> np.ndarray:
        if x0 is None:
            if self._x is not None:
                return self._x
            if self.proposal is None:
                raise ValueError("x0 is needed for plain MD (no proposal to draw a starting point from)")
            for _ in range(100):
                x, log_q = self._draw(16)
                ok = torch.isfinite(self._reduced_energy(x)) & torch.isfinite(log_q)
                if ok.any():
                    return x[ok][0].numpy().reshape(self.n_atoms, 3)
            raise RuntimeError("no proposal with a finite energy in 1600 draws: give x0")
        x0 = np.asarray(x0.detach().cpu() if isinstance(x0, Tensor) else x0, dtype=np.float64)
        if x0.size != self.dim or x0.ndim > 2 or (x0.ndim == 2 and x0.shape not in ((self.n_atoms, 3), (1, self.dim))):
            raise ValueError(f"x0 must have shape ({self.n_atoms}, 3) or ({self.dim},) (nm), got {x0.shape}")
        if not np.isfinite(x0).all():
            raise ValueError("x0 has non-finite coordinates")
        return x0.reshape(self.n_atoms, 3)

    # -- the sampler ---------------------------------------------------------------------------------------------
    def _metropolis(self, x: np.ndarray, counters: dict[str, int]) -> tuple[np.ndarray, float, int]:
        """Sequential independent MH moves from ``x``; returns the new positions, their ``u`` and the accepted count."""
        p = self.proposals_per_cycle
        xs, log_q = self._draw(p)
        log_q_cur = self._log_q(x)
        u_all = self._reduced_energy(torch.cat([torch.as_tensor(x.reshape(1, self.dim)), xs]))  # one OpenMM call
        u_cur, u = float(u_all[0]), u_all[1:]
        counters["n_proposals"] += p
        counters["n_proposal_energies"] += p + 1
        counters["n_log_q"] += 1
        valid = torch.isfinite(xs).all(1) & torch.isfinite(log_q) & torch.isfinite(u)
        counters["n_invalid"] += int((~valid).sum())
        log_w = torch.where(valid, -u - log_q, torch.full_like(u, -math.inf)).tolist()
        log_uniform = np.log(self.rng.random(p))
        if not math.isfinite(log_q_cur):  # the MH ratio is undefined: stay
            counters["n_undefined"] += 1
            return x, u_cur, 0
        log_w_cur = -u_cur - log_q_cur  # -inf for an invalid current state: then any valid proposal is accepted
        chosen, accepted = -1, 0
        for i in range(p):
            if log_w[i] > -math.inf and log_uniform[i] < log_w[i] - log_w_cur:
                chosen, log_w_cur, accepted = i, log_w[i], accepted + 1
        if chosen < 0:
            return x, u_cur, 0
        self._set_state(xs[chosen].numpy().reshape(self.n_atoms, 3))
        return self._x, float(u[chosen]), accepted

    def run(self, n_cycles: int, x0: Any = None, progress: bool = True) -> EnhancedMDResult:
        """Run ``n_cycles`` cycles from ``x0`` (``(n_atoms, 3)`` or flat, nm; fresh Maxwell–Boltzmann velocities).

        ``x0=None`` continues from the last state of a previous run (with its velocities), or starts from a proposal
        draw with a finite energy.
        """
        n_cycles = _positive_int(n_cycles, "n_cycles", allow_zero=True)
        if x0 is not None or self._x is None:
            self._set_state(self._initial_positions(x0))
        counters = dict.fromkeys(
            ("n_md_steps", "n_proposal_energies", "n_log_q", "n_proposals", "n_invalid", "n_undefined"), 0
        )
        every = self.frame_every or self.md_steps
        chunks = [every] * (self.md_steps // every)
        if sum(chunks) < self.md_steps:
            chunks.append(self.md_steps - sum(chunks))
        positions, energies, times, cycles, evaluations = [], [], [], [], []
        accepted = np.zeros(n_cycles, dtype=np.int64)

        def record(x: np.ndarray, u: float, cycle: int) -> None:
            positions.append(np.array(x, dtype=np.float32))
            energies.append(u)
            times.append(counters["n_md_steps"] * self.timestep_fs * 1e-3)
            cycles.append(cycle)
            evaluations.append(counters["n_md_steps"] + counters["n_proposal_energies"])

        start = time.perf_counter()
        bar = tqdm(range(n_cycles), disable=not progress, desc="flow-enhanced MD", unit="cycle")
        for cycle in bar:
            for k, steps in enumerate(chunks):
                x = self._md(steps, cycle)
                counters["n_md_steps"] += steps
                if k < len(chunks) - 1:
                    record(x, self._context_energy(), cycle)
            if self.proposals_per_cycle > 0:
                x, u, accepted[cycle] = self._metropolis(x, counters)
            else:
                u = self._context_energy()
            record(x, u, cycle)
            if progress and self.proposals_per_cycle > 0:
                bar.set_postfix(acceptance=f"{accepted[: cycle + 1].sum() / counters['n_proposals']:.3f}")
        bar.close()
        return EnhancedMDResult(
            positions=np.asarray(positions, dtype=np.float32).reshape(-1, self.n_atoms, 3),
            energies=np.asarray(energies, dtype=np.float64),
            time_ps=np.asarray(times, dtype=np.float64),
            cycle=np.asarray(cycles, dtype=np.int64),
            evaluations=np.asarray(evaluations, dtype=np.int64),
            accepted=accepted,
            wall_time=time.perf_counter() - start,
            temperature=self.temperature,
            timestep_fs=self.timestep_fs,
            **counters,
        )

    def close(self) -> None:
        """Release the energy evaluator (the context goes with the object)."""
        self.energy.close()

    def __enter__(self) -> FlowEnhancedMD:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def count_transitions(labels: Any, chain: Any = None) -> int:
    """Transitions between metastable states along a labelled trajectory.

    ``labels``: ``(frames,)`` integer state of each frame, negative (``-1``) for frames in between states. A
    transition is a change of the last visited state (core-to-core counting): ``0, -1, 1`` is one transition,
    ``0, -1, 0`` none. ``chain`` ``(frames,)``: index of the independent trajectory each frame belongs to; no
    transition is counted across chains (frames must be contiguous per chain).
    """
    labels = np.asarray(labels).reshape(-1)
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers (negative: between states), got dtype {labels.dtype}")
    if chain is None:
        chain = np.zeros(labels.shape, dtype=np.int64)
    chain = np.asarray(chain).reshape(-1)
    if chain.shape != labels.shape:
        raise ValueError(f"chain must have the shape of labels {labels.shape}, got {chain.shape}")
    keep = labels >= 0
    states, owner = labels[keep], chain[keep]
    return int(((states[1:] != states[:-1]) & (owner[1:] == owner[:-1])).sum())


def write_trajectory(result: EnhancedMDResult, topology: Any, path: str | Path) -> Path:
    """Write the frames of ``result`` (:func:`bgflow_sci.io.write_trajectory`; the format follows the suffix,
    ``.dcd``, ``.h5``, ``.xtc``, ...). ``topology``: an ``mdtraj.Topology``, an ``openmm.app.Topology`` or a structure
    file mdtraj reads (PDB). Frame times are the MD times in ps."""
    from ..io import write_trajectory as write

    return write(result.positions, topology, path, time_ps=result.time_ps)
