"""Bridge to OpenMM: reduced energies ``u(x) = U(x) / kT`` and forces of an ``openmm.System`` for batches.

Each configuration is one ``Context.setPositions`` + ``getState`` call (OpenMM has no batched API), so batches are
cut into contiguous chunks and spread over a :class:`concurrent.futures.ProcessPoolExecutor` (``spawn`` start
method) whose initializer builds one ``Context`` per worker process from the XML-serialised ``System``; one task per
chunk, not per configuration. The workers run ``_openmm_worker.py`` (numpy and OpenMM's public API only, no torch).
With ``n_workers <= 1`` the same code runs in-process. Forces come with the energies, so autograd needs no second
call: ``du/dx = -F / kT``. OpenMM is imported lazily: ``import bgflow_sci`` works without it.

Units: ``x`` flat ``(batch, n_atoms * 3)`` in nm; energies in kT, forces in kT/nm, ``kT = R T`` in kJ/mol.
"""

from __future__ import annotations

import importlib.util
import math
import multiprocessing as mp
import sys
import time
import weakref
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from concurrent.futures.process import BrokenProcessPool
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .._checks import check_batch, finite_rows
from . import _openmm_worker
from .base import Energy

MOLAR_GAS_CONSTANT = 8.314462618e-3  # kJ / (mol K)

_WORKER_MODULE = "_bgflow_sci_openmm_worker"
# The initializer of every worker process (run by ``exec``, a builtin, so that starting a worker imports nothing of
# this package): load _openmm_worker.py by path as the top-level module the tasks are pickled with, build the Context.
_BOOT = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location(name, path)
module = importlib.util.module_from_spec(spec)
sys.modules[name] = module
spec.loader.exec_module(module)
module.initialize(*args)
"""


def _worker_module() -> ModuleType:
    """``_openmm_worker.py`` as the top-level module ``_bgflow_sci_openmm_worker`` of this process (loaded once), so
    that its functions pickle by that name, which a worker resolves without importing this package."""
    module = sys.modules.get(_WORKER_MODULE)
    if module is None:
        spec = importlib.util.spec_from_file_location(_WORKER_MODULE, _openmm_worker.__file__)
        module = importlib.util.module_from_spec(spec)
        sys.modules[_WORKER_MODULE] = module
        spec.loader.exec_module(module)
    return module


def _stop_pool(executor: ProcessPoolExecutor, pids: list[int], timeout: float = 5.0) -> None:
    """Shut a pool down without waiting on it: pending chunks are cancelled and idle workers exit; a worker still
    busy after ``timeout`` seconds is killed. Idempotent, and immediate at interpreter exit (when
    ``concurrent.futures`` has already joined its workers)."""
    executor.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + timeout
    while alive := [p for p in mp.active_children() if p.pid in pids]:
        if time.monotonic() > deadline:
            for p in alive:
                p.kill()
                p.join(1.0)
            break
        time.sleep(0.01)


class _WorkerPool:
    """``n_workers`` spawned processes with one OpenMM ``Context`` each: a ``ProcessPoolExecutor`` whose initializer
    builds the Context. At start every worker reports (its pid, or the traceback of a failed Context) through one
    probe each; a worker that fails to start raises ``RuntimeError`` with its traceback and stops the pool."""

    def __init__(
        self, n_workers: int, system_xml: str, platform: str, properties: dict[str, str], max_kj: float, timeout: float
    ):
        ctx = mp.get_context("spawn")
        worker = _worker_module()
        self.evaluate_task, self.timeout, self.pids = worker.evaluate, timeout, []
        barrier = ctx.Barrier(n_workers)
        args = (system_xml, platform, properties, max_kj, barrier)
        boot = {"name": _WORKER_MODULE, "path": worker.__file__, "args": args}
        self.executor = ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=exec, initargs=(_BOOT, boot))
        try:
            probes = [self.executor.submit(worker.probe, timeout) for _ in range(n_workers)]
            reports = [p.result(timeout + 10.0) for p in probes]
        except BrokenProcessPool as error:
            self.stop()
            raise RuntimeError(f"OpenMM worker processes failed to start ({error}); see the log above") from error
        except BaseException as error:
            self.stop()
            if isinstance(error, FutureTimeoutError):
                raise RuntimeError(f"OpenMM workers did not start within {timeout} s (timeout)") from error
            raise
        self.pids[:] = [pid for pid, _ in reports]
        for i, (pid, failure) in enumerate(reports):
            if failure is not None:
                self.stop()
                raise RuntimeError(f"OpenMM worker {i} (pid {pid}) failed to start; worker traceback:\n{failure}")

    def evaluate(self, positions: np.ndarray, chunk_size: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Energies (kJ/mol, NaN if invalid) and forces (kJ/mol/nm) of ``positions`` ``(n, n_atoms, 3)``, in
        contiguous chunks of ``chunk_size`` (default: split evenly over the workers), one task each.

        Raises ``RuntimeError``: with the worker's message and traceback when a worker raised (the pool stays
        usable), :class:`~concurrent.futures.process.BrokenProcessPool` when a worker died, and
        :class:`concurrent.futures.TimeoutError` when no chunk came back for ``timeout`` seconds.
        """
        n = len(positions)
        size = chunk_size or -(-n // len(self.pids))
        starts = list(range(0, n, size))
        futures = [self.executor.submit(self.evaluate_task, positions[s : s + size]) for s in starts]
        energies, forces = np.full(n, np.nan), np.zeros_like(positions)
        try:
            for s, future in zip(starts, futures):
                try:
                    energies[s : s + size], forces[s : s + size] = future.result(self.timeout)
                except (BrokenProcessPool, FutureTimeoutError):
                    raise
                except Exception as error:  # raised inside the worker (its traceback is in the message)
                    raise RuntimeError(f"OpenMM worker raised {error}") from error
        finally:
            for future in futures:
                future.cancel()  # no-op for chunks done or running
        return energies, forces

    def stop(self) -> None:
        _stop_pool(self.executor, self.pids)


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
    ``max_energy`` (kT) get ``u = +inf`` and zero force and are counted in ``n_invalid``.  Virtual sites (TIP4P's M)
    are recomputed from their parent atoms on every evaluation and get zero force (their force is on the parents):
    ``u`` depends on the real atoms only and ``F`` is its exact negative gradient.

    ``n_workers > 1`` evaluates contiguous chunks of at most ``chunk_size`` configurations (default: the batch split
    evenly over the workers) in a :class:`~concurrent.futures.ProcessPoolExecutor` of as many ``spawn``-ed
    processes, one ``Context`` on ``platform`` each (``worker_pids``); ``n_workers <= 1`` evaluates in-process.
    An error inside a worker is re-raised here as ``RuntimeError`` with the worker's message and traceback, and the
    pool stays usable; a worker that fails to start, dies, or returns nothing for ``timeout`` seconds raises
    ``RuntimeError`` and closes the pool. Use it as a context manager or call :meth:`close`; the workers are also
    stopped when the object is garbage collected or at interpreter exit. As with any ``spawn`` pool, a script that
    creates one at import time needs the ``if __name__ == "__main__":`` guard.
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
        properties = dict(platform_properties or {})
        self._context, self._pool = None, None
        if self.n_workers == 1:
            self._context = _openmm_worker.make_context(system_xml, platform, properties)
            self._finalizer = weakref.finalize(self, lambda: None)
        else:
            self._pool = _WorkerPool(
                self.n_workers, system_xml, platform, properties, self.max_energy * self.kt, self.timeout
            )
            self._finalizer = weakref.finalize(self, _stop_pool, self._pool.executor, self._pool.pids)

    # -- pool management ---------------------------------------------------------------------------------------
    @property
    def worker_pids(self) -> tuple[int, ...]:
        """Process ids of the pool's workers (empty in-process or once closed)."""
        return tuple(self._pool.pids) if self._pool is not None else ()

    @property
    def closed(self) -> bool:
        return self._context is None and self._pool is None

    def close(self) -> None:
        """Stop the worker processes (idempotent); the energy cannot be evaluated afterwards."""
        self._finalizer()
        self._context, self._pool = None, None

    def __enter__(self) -> OpenMMEnergy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- evaluation ----------------------------------------------------------------------------------------------
    def _evaluate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Energies (kJ/mol, NaN if invalid) and forces (kJ/mol/nm) of ``positions`` ``(n, n_atoms, 3)`` float64."""
        if self.closed:
            raise RuntimeError("this OpenMMEnergy is closed")
        if self._context is not None:
            return _openmm_worker.evaluate_chunk(self._context, positions, self.max_energy * self.kt)
        if len(positions) == 0:
            return np.full(0, np.nan), np.zeros_like(positions)
        try:
            return self._pool.evaluate(positions, self.chunk_size)
        except BrokenProcessPool as error:
            self.close()
            raise RuntimeError(f"an OpenMM worker process died ({error}); the pool is closed") from error
        except FutureTimeoutError as error:
            self.close()
            message = f"OpenMM workers sent nothing for {self.timeout} s (timeout); the pool is closed"
            raise RuntimeError(message) from error

    def _compute(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Reduced energies ``(batch,)`` (NaN if invalid) and forces ``(batch, dim)`` (zero if invalid), like ``x``."""
        positions = x.detach().to("cpu", torch.float64).numpy().reshape(len(x), self.n_atoms, 3)
        energies, forces = self._evaluate(positions)
        u = torch.as_tensor(energies / self.kt).to(x.device, x.dtype)
        f = torch.as_tensor(forces.reshape(len(x), self.dim) / self.kt).to(x.device, x.dtype)
        return u, f

    def _energy(self, x: Tensor) -> Tensor:
        return _EnergyWithForce.apply(x, self)

    def energy_and_force(self, x: Tensor, create_graph: bool = False) -> tuple[Tensor, Tensor]:
        """``(u, F)``: reduced energies ``(batch,)`` (``+inf`` if invalid) and forces ``(batch, dim)`` in kT/nm
        (zero if invalid) from one OpenMM evaluation per configuration, without autograd (overrides the autograd
        default of :class:`Energy`; no second derivatives, so ``create_graph=True`` raises)."""
        if create_graph:
            raise NotImplementedError("OpenMMEnergy has no second derivatives (create_graph=True)")
        check_batch(x, self.dim)
        valid = finite_rows(x)
        u = torch.full((len(x),), math.nan, dtype=x.dtype, device=x.device)
        f = torch.zeros_like(x)
        u[valid], f[valid] = self._compute(x[valid])
        ok = valid & ~torch.isnan(u)
        self.n_invalid += (~ok).sum().to(self.n_invalid.device)
        return torch.where(ok, u, torch.full_like(u, math.inf)), torch.where(ok[:, None], f, torch.zeros_like(f))

    def extra_repr(self) -> str:
        return f"n_atoms={self.n_atoms}, temperature={self.temperature}, n_workers={self.n_workers}"
