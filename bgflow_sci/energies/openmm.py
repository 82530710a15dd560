"""Bridge to OpenMM: reduced energies ``u(x) = U(x) / kT`` and forces of an ``openmm.System`` for batches.

Each configuration is one ``Context.setPositions`` + ``getState`` call (OpenMM has no batched API), so batches are
cut into contiguous chunks and spread over a pool of worker processes (``spawn`` start method), each holding one
``Context`` built from the XML-serialised ``System``; one message per chunk, not per configuration.  With
``n_workers <= 1`` the same code runs in-process.  Forces come with the energies, so autograd needs no second call:
``du/dx = -F / kT``.  OpenMM is imported lazily: ``import bgflow_sci`` works without it.

Units: ``x`` flat ``(batch, n_atoms * 3)`` in nm; energies in kT, forces in kT/nm, ``kT = R T`` in kJ/mol.
"""

from __future__ import annotations

import inspect
import math
import multiprocessing as mp
import threading
import traceback
import weakref
from multiprocessing.connection import wait
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .._checks import check_batch, finite_rows
from .base import Energy

MOLAR_GAS_CONSTANT = 8.314462618e-3  # kJ / (mol K)


def _make_context(system_xml: str, platform: str, properties: dict[str, str]) -> Any:
    import openmm

    system = openmm.XmlSerializer.deserialize(system_xml)
    integrator = openmm.VerletIntegrator(0.001)
    return openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform), properties)


def _evaluate_chunk(context: Any, positions: np.ndarray, max_energy_kj: float) -> tuple[np.ndarray, np.ndarray]:
    """Energies ``(n,)`` in kJ/mol and forces ``(n, n_atoms, 3)`` in kJ/mol/nm of ``positions`` ``(n, n_atoms, 3)`` nm.

    A configuration whose evaluation raises, or whose energy or forces are not finite or whose energy exceeds
    ``max_energy_kj``, gets a NaN energy and zero force.  Forces are copied straight into the output array in
    OpenMM's native kJ/mol/nm (``State._getVectorAsNumpy``, what ``getForces(asNumpy=True)`` calls), which skips
    the unit wrapping that otherwise costs more than the evaluation itself for small molecules.
    """
    import openmm
    from openmm import unit

    kj, kj_nm = unit.kilojoule_per_mole, unit.kilojoule_per_mole / unit.nanometer
    fast = hasattr(openmm.State, "_getVectorAsNumpy")
    energies = np.full(len(positions), np.nan)
    forces = np.zeros_like(positions)
    for i, xyz in enumerate(positions):
        try:
            context.setPositions(xyz)
            state = context.getState(getEnergy=True, getForces=True)
            energy = state.getPotentialEnergy()
            e = energy._value if energy.unit is kj else energy.value_in_unit(kj)
            if fast:
                state._getVectorAsNumpy(openmm.State.Forces, forces[i])
            else:
                forces[i] = state.getForces(asNumpy=True).value_in_unit(kj_nm)
        except Exception:  # noqa: BLE001 - OpenMM raises per configuration (e.g. NaN coordinates): mark it invalid
            forces[i] = 0.0
            continue
        if math.isfinite(e) and e <= max_energy_kj and np.isfinite(forces[i]).all():
            energies[i] = e
        else:
            forces[i] = 0.0
    return energies, forces


def _worker_main(conn: Any, system_xml: str, platform: str, properties: dict[str, str], max_energy_kj: float) -> None:
    """Worker loop: build one Context, then answer ``(tag, positions)`` with ``(tag, energies, forces)``.

    Any exception that is not about one configuration is sent back as ``("error", traceback)``; ``None`` stops.
    """
    try:
        context = _make_context(system_xml, platform, properties)
    except BaseException:  # noqa: BLE001 - report everything to the caller
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the caller is gone
            return
        if message is None:
            return
        try:
            tag, positions = message
            energies, forces = _evaluate_chunk(context, positions, max_energy_kj)
            conn.send((tag, energies, forces))
        except BaseException:  # noqa: BLE001
            conn.send(("error", traceback.format_exc()))


def _worker_program() -> str:
    """Source of a worker: the three functions above, run by ``exec`` in the child.

    The child then imports only numpy and OpenMM (not torch, nor this package), which makes a worker start
    several times faster and smaller than unpickling ``_worker_main`` by reference would.
    """
    functions = "\n".join(inspect.getsource(f) for f in (_make_context, _evaluate_chunk, _worker_main))
    prelude = "import math\nimport traceback\nfrom typing import Any\n\nimport numpy as np\n\n"
    return prelude + functions + "\n_worker_main(*_worker_args)\n"


def _shutdown(processes: list, connections: list, timeout: float = 5.0) -> None:
    """Stop the workers: polite ``None``, then join with a timeout, then terminate and kill."""
    for conn in connections:
        try:
            conn.send(None)
        except (OSError, ValueError):
            pass
    for p in processes:
        p.join(timeout)
    for p in processes:
        if p.is_alive():
            p.terminate()
            p.join(1.0)
        if p.is_alive():
            p.kill()
            p.join(1.0)
    for conn in connections:
        conn.close()
    processes.clear()
    connections.clear()


class _EnergyWithForce(torch.autograd.Function):
    """``u = E(x) / kT`` with ``du/dx = -F(x) / kT`` from the forces computed alongside (one OpenMM call)."""

    @staticmethod
    def forward(ctx, x: Tensor, bridge: OpenMMEnergy) -> Tensor:
        u, f = bridge._compute(x)
        ctx.save_for_backward(f)
        return u

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_u: Tensor) -> tuple[Tensor, None]:
        (f,) = ctx.saved_tensors
        return -f * grad_u[:, None], None


class OpenMMEnergy(Energy):
    """Reduced energy of an OpenMM ``System`` at ``temperature`` (kelvin): ``u(x) = U(x) / (R T)``.

    ``x``: ``(batch, 3 * n_atoms)`` in nm, any float dtype and device (moved to CPU float64 for OpenMM and the results
    back).  Configurations that are non-finite, make OpenMM raise, or have a NaN/infinite energy or an energy above
    ``max_energy`` (kT) get ``u = +inf`` and zero force and are counted in ``n_invalid``.

    ``n_workers > 1`` evaluates contiguous chunks of at most ``chunk_size`` configurations (default: the batch split
    evenly over the workers) in as many ``spawn``-ed processes, one ``Context`` on ``platform`` each; ``n_workers <=
    1`` evaluates in-process.  Errors inside a worker are re-raised here with the worker's traceback; a worker
    that dies or stays silent for ``timeout`` seconds raises ``RuntimeError``.  Use it as a context manager or call
    :meth:`close`; workers are also stopped when the object is garbage collected or at interpreter exit.  As with
    any ``spawn`` pool, a script that creates one at import time needs the ``if __name__ == "__main__":`` guard.
    """

    def __init__(
        self,
        system: Any,
        temperature: float,
        n_workers: int = 1,
        platform: str = "Reference",
        platform_properties: dict[str, str] | None = None,
        chunk_size: int | None = None,
        max_energy: float = 1e10,
        timeout: float = 300.0,
    ):
        import openmm
        from openmm import unit

        if isinstance(temperature, unit.Quantity):
            temperature = temperature.value_in_unit(unit.kelvin)
        if not temperature > 0:
            raise ValueError(f"temperature must be positive (kelvin), got {temperature}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be positive or None, got {chunk_size}")
        if isinstance(system, str):
            system_xml, n_atoms = system, openmm.XmlSerializer.deserialize(system).getNumParticles()
        else:
            system_xml, n_atoms = openmm.XmlSerializer.serialize(system), system.getNumParticles()
        super().__init__(3 * n_atoms)
        self.n_atoms = n_atoms
        self.temperature = float(temperature)
        self.kt = MOLAR_GAS_CONSTANT * self.temperature  # kJ/mol
        self.max_energy = float(max_energy)
        self.n_workers = max(int(n_workers), 1)
        self.chunk_size = chunk_size
        self.timeout = float(timeout)
        self._lock = threading.Lock()
        self._tag = 0
        self._processes: list = []
        self._connections: list = []
        args = (system_xml, platform, dict(platform_properties or {}), self.max_energy * self.kt)
        if self.n_workers == 1:
            self._context = _make_context(*args[:3])
        else:
            self._context = None
            self._start_pool(args)
        self._finalizer = weakref.finalize(self, _shutdown, self._processes, self._connections)

    # -- pool management ---------------------------------------------------------------------------------------
    def _start_pool(self, args: tuple) -> None:
        ctx = mp.get_context("spawn")
        program = _worker_program()
        for _ in range(self.n_workers):
            parent, child = ctx.Pipe(duplex=True)
            namespace = {"__name__": "bgflow_sci_openmm_worker", "_worker_args": (child, *args)}
            p = ctx.Process(target=exec, args=(program, namespace), daemon=True)
            p.start()
            child.close()
            self._processes.append(p)
            self._connections.append(parent)
        try:
            for i in range(self.n_workers):
                tag, payload = self._receive(i)[:2]
                if tag == "error":
                    raise RuntimeError(f"OpenMM worker {i} failed to start; worker traceback:\n{payload}")
        except BaseException:
            _shutdown(self._processes, self._connections)
            raise

    def _receive(self, i: int) -> tuple:
        """Next message of worker ``i``; ``RuntimeError`` if it dies or stays silent for ``timeout`` seconds."""
        conn, proc = self._connections[i], self._processes[i]
        ready = wait([conn, proc.sentinel], self.timeout)
        if conn in ready:
            try:
                return conn.recv()
            except EOFError:
                pass
        if not ready:
            raise RuntimeError(f"OpenMM worker {i} sent nothing for {self.timeout} s (timeout)")
        proc.join(1.0)
        raise RuntimeError(f"OpenMM worker {i} (pid {proc.pid}) died with exit code {proc.exitcode}")

    def _send(self, i: int, message: Any) -> None:
        """Send ``message`` to worker ``i``; ``RuntimeError`` if it is gone."""
        try:
            self._connections[i].send(message)
        except (BrokenPipeError, ConnectionError, EOFError, OSError) as error:
            proc = self._processes[i]
            proc.join(1.0)
            raise RuntimeError(f"OpenMM worker {i} (pid {proc.pid}) died with exit code {proc.exitcode}") from error

    @property
    def closed(self) -> bool:
        return self._context is None and not self._processes

    def close(self) -> None:
        """Stop the worker processes (idempotent); the energy cannot be evaluated afterwards."""
        self._finalizer()
        self._context = None

    def __enter__(self) -> OpenMMEnergy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- evaluation ----------------------------------------------------------------------------------------------
    def _evaluate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Energies (kJ/mol, NaN if invalid) and forces (kJ/mol/nm) of ``positions`` ``(n, n_atoms, 3)`` float64."""
        if self.closed:
            raise RuntimeError("this OpenMMEnergy is closed")
        max_kj = self.max_energy * self.kt
        if self._context is not None:
            return _evaluate_chunk(self._context, positions, max_kj)
        n = len(positions)
        energies, forces = np.full(n, np.nan), np.zeros_like(positions)
        if n == 0:
            return energies, forces
        size = self.chunk_size or -(-n // self.n_workers)
        pending = [(start, min(start + size, n)) for start in range(0, n, size)][::-1]
        with self._lock:
            self._tag += 1
            tag = self._tag
            busy: dict[int, tuple[int, int]] = {}
            try:
                for i in range(self.n_workers):
                    if pending:
                        busy[i] = pending.pop()
                        self._send(i, ((tag, busy[i][0]), positions[slice(*busy[i])]))
                while busy:
                    handles = [self._connections[i] for i in busy] + [self._processes[i].sentinel for i in busy]
                    ready = wait(handles, self.timeout)
                    if not ready:
                        raise RuntimeError(f"OpenMM workers {sorted(busy)} sent nothing for {self.timeout} s (timeout)")
                    for i in list(busy):
                        if self._connections[i] not in ready and self._processes[i].sentinel not in ready:
                            continue
                        message = self._receive(i)  # raises if the worker died
                        if message[0] == "error":
                            raise RuntimeError(f"OpenMM worker {i} raised; worker traceback:\n{message[1]}")
                        (t, start), e, f = message
                        if t != tag or start != busy[i][0]:
                            raise RuntimeError(f"OpenMM worker {i} answered out of order")
                        stop = busy.pop(i)[1]
                        energies[start:stop], forces[start:stop] = e, f
                        if pending:
                            busy[i] = pending.pop()
                            self._send(i, ((tag, busy[i][0]), positions[slice(*busy[i])]))
            except BaseException:
                # the pool state is unknown (a worker may still be busy on a chunk): drop it
                self.close()
                raise
        return energies, forces

    def _compute(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Reduced energies ``(batch,)`` (NaN if invalid) and forces ``(batch, dim)`` (zero if invalid), like ``x``."""
        positions = x.detach().to("cpu", torch.float64).numpy().reshape(len(x), self.n_atoms, 3)
        energies, forces = self._evaluate(positions)
        u = torch.as_tensor(energies / self.kt).to(x.device, x.dtype)
        f = torch.as_tensor(forces.reshape(len(x), self.dim) / self.kt).to(x.device, x.dtype)
        return u, f

    def _energy(self, x: Tensor) -> Tensor:
        return _EnergyWithForce.apply(x, self)

    def energy_and_force(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(u, F)``: reduced energies ``(batch,)`` (``+inf`` if invalid) and forces ``(batch, dim)`` in kT/nm
        (zero if invalid) from one OpenMM evaluation per configuration, without autograd."""
        check_batch(x, self.dim)
        valid = finite_rows(x)
        u = torch.full((len(x),), math.nan, dtype=x.dtype, device=x.device)
        f = torch.zeros_like(x)
        u[valid], f[valid] = self._compute(x[valid])
        ok = valid & ~torch.isnan(u)
        self.n_invalid += (~ok).sum().to(self.n_invalid.device)
        return torch.where(ok, u, torch.full_like(u, math.inf)), torch.where(ok[:, None], f, torch.zeros_like(f))

    def force(self, x: Tensor, create_graph: bool = False) -> Tensor:
        """``-du/dx`` ``(batch, dim)`` in kT/nm from OpenMM's forces; zero for invalid rows (no second derivatives)."""
        if create_graph:
            raise NotImplementedError("OpenMMEnergy has no second derivatives (create_graph=True)")
        return self.energy_and_force(x)[1]

    def extra_repr(self) -> str:
        return f"n_atoms={self.n_atoms}, temperature={self.temperature}, n_workers={self.n_workers}"
