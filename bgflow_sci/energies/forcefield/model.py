"""``TorchForceField``: a batched PyTorch energy compiled from an OpenMM ``System``, with analytic forces."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor, nn

from ..._checks import check_batch, finite_rows
from ..base import Energy
from .geometry import dot, minimum_image
from .native import NativePlan, plan_native
from .openmm_import import ImportedTerms, import_system

MOLAR_GAS_CONSTANT = 8.31446261815324e-3  # kJ / (mol K), N_A k_B (exact in SI 2019)
AUTO_COMPILE_MIN_BATCH = 1024  # compile="auto" compiles on the first call with at least this many configurations
PAIR_ELEMENTS_PER_CHUNK = 2**17  # n_atoms² · chunk for eager chunks (~0.5 MB per float32 (n, n, chunk) temporary)
COMPILED_PAIR_ELEMENTS_PER_CHUNK = 2**18  # the same for compiled chunks (fused loops keep fewer temporaries)
NATIVE_ATOM_ELEMENTS_PER_CHUNK = 2**14  # n_atoms · chunk for native chunks: positions and gradients stay in L2


def auto_chunk_size(n_atoms: int, pair_elements: int = PAIR_ELEMENTS_PER_CHUNK) -> int:
    """Batch chunk ``2^k`` (16 to 4096) with ``n_atoms² · chunk ≈ pair_elements``.

    The dense pair terms build ``(n_atoms, n_atoms, chunk)`` temporaries; keeping each within a few hundred kB
    keeps them in cache (throughput independent of the batch size) and bounds memory.
    """
    target = max(1, pair_elements // max(1, n_atoms * n_atoms))
    return int(min(4096, max(16, 2 ** (target.bit_length() - 1))))


_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}


def _thread_pool(workers: int) -> ThreadPoolExecutor:
    """A pool of ``workers`` threads for the native chunks, one per size and process (a forked child, whose copy
    of the parent's pool has no threads, makes its own)."""
    key = (os.getpid(), workers)
    if key not in _POOLS:
        _POOLS[key] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bgflow_sci_ff")
    return _POOLS[key]


class _EnergyWithForce(torch.autograd.Function):
    """``u = fn(x)[0]`` whose backward uses the analytic gradient ``fn(x)[1] = du/dx`` (first order only)."""

    @staticmethod
    def forward(ctx, x: Tensor, fn: Callable[[Tensor], tuple[Tensor, Tensor]]) -> Tensor:
        u, grad = fn(x)
        ctx.save_for_backward(grad)
        return u

    @staticmethod
    def backward(ctx, grad_u: Tensor):
        (grad,) = ctx.saved_tensors
        return grad_u[:, None] * grad, None


class TorchForceField(Energy):
    """Reduced energy ``u(x) = E(x) / (k_B T)`` of an OpenMM force field, evaluated for whole batches in PyTorch.

    ``x`` is flat ``(batch, n_atoms * 3)`` in nm, atom-major; ``E`` in kJ/mol; :meth:`force` returns
    ``-du/dx`` in kT/nm.  Each term returns its energy and analytic gradient in one pass
    (:meth:`energy_and_force`); autograd through :meth:`energy` reuses that gradient (first derivatives only:
    ``create_graph=True`` second derivatives are not available).  Internally positions are ``(3, n_atoms, batch)``
    so that arithmetic vectorises over the batch; nonbonded and GB terms are dense ``n × n`` matrices, which suits
    small molecules (memory ``O(n² batch)``; use ``chunk_size`` for large systems).

    Non-finite coordinates and overlapping atoms (any non-finite energy, including ``-inf`` from
    overlapping opposite charges) give ``+inf`` energy and zero force, and are counted in ``n_invalid``.

    Build with :meth:`from_openmm`.  The batch is always evaluated in chunks (``chunk_size``, default from the atom
    count), so memory is bounded and throughput does not drop for huge batches.

    On the CPU in float32/float64, ``native`` (default ``"auto"``) evaluates the standard terms (harmonic bonds and
    angles, periodic torsions, non-periodic Coulomb + LJ incl. reaction field and switching, OBC2 ``GBSAOBCForce``)
    with the fused C++ kernels of :mod:`~bgflow_sci.energies.forcefield.native`, built once per machine with the
    system compiler (about a second) and cached; ``False`` never, ``True`` requires them.  Without a compiler (or
    with ``BGFLOW_SCI_NATIVE=0``) one warning is issued and the torch modules are used.  Every other term (PME,
    CMAP, Custom*Force, periodic pairs), every GPU and every other dtype uses the torch modules.

    ``compile`` chooses ``torch.compile`` of the torch part of each chunk (it fuses the per-pair arithmetic into a
    few loops and is several times faster on CPU than eager; nothing is compiled when the native kernels cover
    every term): ``"auto"`` (default) compiles on the first call with at least ``AUTO_COMPILE_MIN_BATCH``
    configurations (small batches, e.g. in tests, stay eager and start at once), ``True`` on the first call of any
    size, ``False`` never.  The environment variable ``BGFLOW_SCI_COMPILE=0`` turns ``"auto"`` off.  Compilation
    (tens of seconds on a small CPU, once per dtype/device; Inductor's on-disk cache makes later processes faster)
    pads the last chunk to the fixed chunk shape.  If it fails, one warning is issued and evaluation continues
    eagerly.
    """

    def __init__(
        self,
        terms: ImportedTerms,
        temperature: float,
        compile: bool | str = "auto",
        chunk_size: int | None = None,
        molar_gas_constant: float = MOLAR_GAS_CONSTANT,
        native: bool | str = "auto",
    ):
        super().__init__(3 * terms.n_atoms)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive (K), got {temperature}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self.n_atoms = terms.n_atoms
        self.temperature = float(temperature)
        self.kT = molar_gas_constant * self.temperature
        self.vector_terms = nn.ModuleList([m for _, m in terms.vector_terms])
        self.vector_names = [nm for nm, _ in terms.vector_terms]
        self.pair_terms = nn.ModuleList([m for _, m in terms.pair_terms])
        self.pair_names = [nm for nm, _ in terms.pair_terms]
        self.constants = dict(terms.constants)
        self.constant = float(sum(self.constants.values()))
        self.names = list(terms.names)
        self.register_buffer("box", terms.box if terms.periodic_pairs else None, persistent=False)
        if compile not in (True, False, "auto"):
            raise ValueError(f"compile must be True, False or 'auto', got {compile!r}")
        self.chunk_size = chunk_size
        self.compile = compile
        self._compiled: Callable | None = None
        self._compile_failed = False
        if native not in (True, False, "auto"):
            raise ValueError(f"native must be True, False or 'auto', got {native!r}")
        self._native = NativePlan(self.n_atoms)
        if native:
            self._native = plan_native(
                list(self.vector_terms), list(self.pair_terms), self.n_atoms, self.box is not None
            )
            if native is True and not self._native:
                raise RuntimeError(
                    "native=True: the native kernels are unavailable or support none of the terms "
                    "(see forcefield.native; BGFLOW_SCI_NATIVE, CXX)"
                )
        covered = len(self._native.vector_covered) + len(self._native.pair_covered)
        self._all_native = covered == len(self.vector_terms) + len(self.pair_terms)

    @classmethod
    def from_openmm(
        cls,
        system,
        temperature: float,
        compile: bool | str = "auto",
        chunk_size: int | None = None,
        native: bool | str = "auto",
    ) -> TorchForceField:
        """Compile ``system`` (an ``openmm.System``) at ``temperature`` (K).

        Supported forces: HarmonicBondForce, HarmonicAngleForce, PeriodicTorsionForce, NonbondedForce (NoCutoff,
        CutoffNonPeriodic, CutoffPeriodic with reaction field, PME/LJPME/Ewald as in OpenMM (``forcefield.ewald``),
        optional switching and dispersion correction; periodic triclinic boxes), GBSAOBCForce, CMAPTorsionForce,
        Custom{Bond,Angle,Torsion,CompoundBond,Nonbonded,GB}Force (expressions compiled to torch, see
        ``forcefield.custom``); CMMotionRemover is ignored; anything else (virtual sites, ...) raises
        ``ValueError``.  Positions-dependent
        quantities only: the periodic box is the System's default box.

        ``compile`` (``"auto"``, ``True``, ``False``), ``native`` (``"auto"``, ``True``, ``False``) and ``chunk_size``
        (rows per evaluation chunk, default from the atom count) are described in the class docstring; the defaults
        are the fast path.
        """
        from openmm import unit

        r = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)
        return cls(
            import_system(system),
            temperature,
            compile=compile,
            chunk_size=chunk_size,
            molar_gas_constant=r,
            native=native,
        )

    # ---- evaluation in kJ/mol on (3, n_atoms, batch) positions ----
    def _pair_geometry(self, pos: Tensor) -> tuple[Tensor, Tensor]:
        d = minimum_image(pos[:, :, None, :] - pos[:, None, :, :], self.box)
        return d, dot(d, d)

    def _kj(self, pos: Tensor, skip_native: bool = False) -> tuple[Tensor, Tensor]:
        """Total energy ``(batch,)`` (kJ/mol) and gradient ``(3, n_atoms, batch)`` (kJ/mol/nm) of the torch terms
        (all of them, or those the native plan does not cover when ``skip_native``), plus the constant."""
        skip_vector = self._native.vector_covered if skip_native else set()
        skip_pair = self._native.pair_covered if skip_native else set()
        energy = pos.new_full((pos.shape[-1],), self.constant)
        grad = torch.zeros_like(pos)
        for position, term in enumerate(self.vector_terms):
            if position in skip_vector:
                continue
            e, g = term(pos)
            energy = energy + e
            grad = grad + g
        pair_terms = [term for position, term in enumerate(self.pair_terms) if position not in skip_pair]
        if pair_terms:
            d, r2 = self._pair_geometry(pos)
            p_total = None
            for term in pair_terms:
                e, p = term(r2)
                energy = energy + e
                p_total = p if p_total is None else p_total + p
            grad = grad + (p_total[None] * d).sum(2)
        return energy, grad

    def _torch_part(self, x: Tensor, skip_native: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """``(pos (3, n_atoms, batch), energy, grad)`` of the torch terms for flat ``x`` (compiled as one graph)."""
        b = x.shape[0]
        pos = x.reshape(b, self.n_atoms, 3).permute(2, 1, 0).contiguous()
        energy, grad = self._kj(pos, skip_native)
        return pos, energy, grad

    def _finish(self, energy: Tensor, grad: Tensor, force: bool = False) -> tuple[Tensor, Tensor]:
        """``(u, du/dx)`` (kT, kT/nm, flat; ``-du/dx`` if ``force``) from kJ/mol values; non-finite energies become
        NaN with zero gradient."""
        b = energy.shape[0]
        u = energy / self.kT
        du = torch.mul(grad.permute(2, 1, 0), (-1.0 if force else 1.0) / self.kT).reshape(b, 3 * self.n_atoms)
        bad = ~torch.isfinite(u)
        if u.device.type != "cpu" or bool(bad.any()):  # on the CPU, skip the masking passes when nothing is bad
            u = torch.where(bad, torch.full_like(u, torch.nan), u)
            du = torch.where(bad[:, None], torch.zeros_like(du), du)
        return u, du

    def _reduced_flat(self, x: Tensor, force: bool = False) -> tuple[Tensor, Tensor]:
        """``(u, du/dx)`` (``-du/dx`` if ``force``) for flat finite ``x`` through the torch terms only."""
        _, energy, grad = self._torch_part(x)
        return self._finish(energy, grad, force)

    def _uses_native(self, x: Tensor) -> bool:
        return bool(self._native) and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)

    def _native_chunk(self, x: Tensor, torch_part: Callable, force: bool = False) -> tuple[Tensor, Tensor]:
        """``(u, du/dx)`` of one chunk: the native terms in place on top of ``torch_part``'s (the remaining terms)."""
        pos, energy, grad = torch_part(x, True)
        pos, energy, grad = pos.contiguous(), energy.contiguous(), grad.contiguous()
        self._native.add(pos, energy, grad)
        return self._finish(energy, grad, force)

    def _want_compiled(self, batch: int, native: bool = False) -> bool:
        if self._compile_failed or self.compile is False or (native and self._all_native):
            return False
        if self._compiled is not None or self.compile is True:
            return True
        if os.environ.get("BGFLOW_SCI_COMPILE", "1").strip().lower() in ("0", "false", "no", "off"):
            return False
        return batch >= AUTO_COMPILE_MIN_BATCH

    def _evaluate(self, x: Tensor, force: bool = False) -> tuple[Tensor, Tensor]:
        """``(u, du/dx)`` (``-du/dx`` if ``force``) of flat ``x`` in chunks: native kernels for the terms they cover
        (CPU, float32/64), the rest in torch, compiled when :meth:`_want_compiled` says so."""
        native = self._uses_native(x)
        if self._want_compiled(x.shape[0], native):
            try:
                if self._compiled is None:
                    self._compiled = torch.compile(self._torch_part, dynamic=False)
                compiled = self._compiled
                if native:
                    fn = lambda c: self._native_chunk(c, compiled, force)  # noqa: E731
                else:
                    fn = lambda c: self._finish(*compiled(c, False)[1:], force)  # noqa: E731
                # fixed chunk shape: one graph per dtype/device, compiled on its first use
                return self._chunked(fn, x, self._chunk(compiled=True, native=native), pad=True)
            except Exception as err:  # noqa: BLE001 - any compiler failure falls back to eager
                warnings.warn(f"torch.compile failed ({err!r}); using eager evaluation", RuntimeWarning, stacklevel=3)
                self._compile_failed, self._compiled = True, None
        if native:
            fn = lambda c: self._native_chunk(c, self._torch_part, force)  # noqa: E731
            # the kernels release the GIL: chunks run in parallel threads, as many as torch may use
            workers = torch.get_num_threads() if self._all_native else 1
            return self._chunked(fn, x, self._chunk(native=True), pad=False, workers=workers)
        return self._chunked(lambda c: self._reduced_flat(c, force), x, self._chunk(compiled=False), pad=False)

    @staticmethod
    def _chunked(fn: Callable, x: Tensor, chunk: int, pad: bool, workers: int = 1) -> tuple[Tensor, Tensor]:
        """Apply ``fn`` to consecutive chunks of ``chunk`` rows (``pad``: every call sees exactly ``chunk`` rows;
        ``workers > 1``: chunks in a pool of that many threads)."""
        if x.shape[0] == chunk or (x.shape[0] < chunk and not pad):
            return fn(x)
        u = x.new_empty(x.shape[0])
        du = torch.empty_like(x)

        def run(start: int) -> None:
            c = x[start : start + chunk]
            n = c.shape[0]
            if pad and n < chunk:  # the last chunk is padded with copies of its first row
                c = torch.cat([c, c[:1].expand(chunk - n, -1)])
            uc, duc = fn(c)
            u[start : start + n] = uc[:n]
            du[start : start + n] = duc[:n]

        starts = range(0, x.shape[0], chunk)
        if workers > 1 and len(starts) > 1:
            for _ in _thread_pool(workers).map(run, starts):
                pass
        else:
            for start in starts:
                run(start)
        return u, du

    def _chunk(self, compiled: bool = False, native: bool = False) -> int:
        if self.chunk_size is not None:
            return self.chunk_size
        if native and self._all_native:  # no n × n torch temporaries: only positions, gradients, OBC2 scratch
            return int(min(4096, max(64, 2 ** ((NATIVE_ATOM_ELEMENTS_PER_CHUNK // self.n_atoms).bit_length() - 1))))
        return auto_chunk_size(self.n_atoms, COMPILED_PAIR_ELEMENTS_PER_CHUNK if compiled else PAIR_ELEMENTS_PER_CHUNK)

    # ---- public API ----
    def _energy(self, x: Tensor) -> Tensor:
        if x.shape[0] == 0:
            return x.new_zeros(0)
        return _EnergyWithForce.apply(x, self._evaluate)

    def energy_and_force(self, x: Tensor, create_graph: bool = False) -> tuple[Tensor, Tensor]:
        """Reduced energies ``(batch,)`` (kT) and forces ``-du/dx`` ``(batch, n_atoms * 3)`` (kT/nm) in one pass.

        Analytic (overrides the autograd default of :class:`Energy`); no autograd graph is built, so
        ``create_graph=True`` raises ``NotImplementedError``.  Invalid rows (non-finite input or energy) give ``+inf``
        and zero force.
        """
        if create_graph:
            raise NotImplementedError("TorchForceField forces are analytic; create_graph=True is not supported")
        check_batch(x, self.dim)
        if x.shape[0] == 0:
            return x.new_zeros(0), x.new_zeros(0, self.dim)
        with torch.no_grad():
            valid = finite_rows(x)
            all_valid = x.device.type == "cpu" and bool(valid.all())  # CPU: skip the masking passes when possible
            u, force = self._evaluate(x if all_valid else torch.where(valid[:, None], x, torch.zeros_like(x)), True)
            ok = valid & ~torch.isnan(u)
            n_bad = (~ok).sum()
            self.n_invalid += n_bad.to(self.n_invalid.device)
            if all_valid and int(n_bad) == 0:
                return u, force
            u = torch.where(ok, u, torch.full_like(u, torch.inf))
            force = torch.where(ok[:, None], force, torch.zeros_like(force))
        return u, force

    @torch.no_grad()
    def components(self, x: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        """Per-OpenMM-force reduced energies and forces ``{name: (u (batch,), force (batch, dim))}``.

        Names are the OpenMM class names (``"NonbondedForce"``, ...), with ``[index]`` appended for repeated
        forces.  Meant for testing and diagnostics (eager, no invalid-row handling).
        """
        check_batch(x, self.dim)
        b = x.shape[0]
        pos = x.reshape(b, self.n_atoms, 3).permute(2, 1, 0).contiguous()
        out = {nm: [pos.new_full((b,), self.constants.get(nm, 0.0)), torch.zeros_like(pos)] for nm in self.names}
        for nm, term in zip(self.vector_names, self.vector_terms):
            e, g = term(pos)
            out[nm][0] = out[nm][0] + e
            out[nm][1] = out[nm][1] + g
        if len(self.pair_terms):
            d, r2 = self._pair_geometry(pos)
            for nm, term in zip(self.pair_names, self.pair_terms):
                e, p = term(r2)
                out[nm][0] = out[nm][0] + e
                out[nm][1] = out[nm][1] + (p[None] * d).sum(2)
        return {nm: (e / self.kT, -g.permute(2, 1, 0).reshape(b, self.dim) / self.kT) for nm, (e, g) in out.items()}
