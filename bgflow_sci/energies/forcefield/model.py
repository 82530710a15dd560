"""``TorchForceField``: a batched PyTorch energy compiled from an OpenMM ``System``, with analytic forces."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..._checks import check_batch, finite_rows
from ..base import Energy
from .geometry import dot, minimum_image
from .openmm_import import ImportedTerms, import_system

MOLAR_GAS_CONSTANT = 8.31446261815324e-3  # kJ / (mol K), N_A k_B (exact in SI 2019)
AUTO_COMPILE_MIN_BATCH = 1024  # compile="auto" compiles on the first call with at least this many configurations
PAIR_ELEMENTS_PER_CHUNK = 2**17  # n_atoms² · chunk for eager chunks (~0.5 MB per float32 (n, n, chunk) temporary)
COMPILED_PAIR_ELEMENTS_PER_CHUNK = 2**18  # the same for compiled chunks (fused loops keep fewer temporaries)


def auto_chunk_size(n_atoms: int, pair_elements: int = PAIR_ELEMENTS_PER_CHUNK) -> int:
    """Batch chunk ``2^k`` (16 to 4096) with ``n_atoms² · chunk ≈ pair_elements``.

    The dense pair terms build ``(n_atoms, n_atoms, chunk)`` temporaries; keeping each within a few hundred kB
    keeps them in cache (throughput independent of the batch size) and bounds memory.
    """
    target = max(1, pair_elements // max(1, n_atoms * n_atoms))
    return int(min(4096, max(16, 2 ** (target.bit_length() - 1))))


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

    Build with :meth:`from_openmm`.  The batch is always evaluated in chunks (``chunk_size``, default
    :func:`auto_chunk_size` from the atom count), so memory is bounded and throughput does not drop for huge
    batches.  ``compile`` chooses ``torch.compile`` of the per-chunk evaluation (it fuses the per-pair arithmetic
    into a few loops and is several times faster on CPU): ``"auto"`` (default) compiles on the first call with at
    least ``AUTO_COMPILE_MIN_BATCH`` configurations (small batches, e.g. in tests, stay eager and start at once),
    ``True`` on the first call of any size, ``False`` never.  The environment variable ``BGFLOW_SCI_COMPILE=0``
    turns ``"auto"`` off.  Compilation (tens of seconds on a small CPU, once per dtype/device; Inductor's on-disk
    cache makes later processes faster) pads the last chunk to the fixed chunk shape.  If it fails, one warning is
    issued and evaluation continues eagerly.
    """

    def __init__(
        self,
        terms: ImportedTerms,
        temperature: float,
        compile: bool | str = "auto",
        chunk_size: int | None = None,
        molar_gas_constant: float = MOLAR_GAS_CONSTANT,
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

    @classmethod
    def from_openmm(
        cls, system, temperature: float, compile: bool | str = "auto", chunk_size: int | None = None
    ) -> TorchForceField:
        """Compile ``system`` (an ``openmm.System``) at ``temperature`` (K).

        Supported forces: HarmonicBondForce, HarmonicAngleForce, PeriodicTorsionForce, NonbondedForce (NoCutoff,
        CutoffNonPeriodic, CutoffPeriodic with reaction field, PME/LJPME/Ewald as in OpenMM (``forcefield.ewald``),
        optional switching and dispersion correction; periodic triclinic boxes), GBSAOBCForce, CMAPTorsionForce,
        Custom{Bond,Angle,Torsion,CompoundBond,Nonbonded,GB}Force (expressions compiled to torch, see
        ``forcefield.custom``); CMMotionRemover is ignored; anything else (virtual sites, ...) raises
        ``ValueError``.  Positions-dependent
        quantities only: the periodic box is the System's default box.

        ``compile`` (``"auto"``, ``True``, ``False``) and ``chunk_size`` (rows per evaluation chunk, default from the
        atom count) are described in the class docstring; the defaults are the fast path.
        """
        from openmm import unit

        r = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)
        return cls(import_system(system), temperature, compile=compile, chunk_size=chunk_size, molar_gas_constant=r)

    # ---- evaluation in kJ/mol on (3, n_atoms, batch) positions ----
    def _pair_geometry(self, pos: Tensor) -> tuple[Tensor, Tensor]:
        d = minimum_image(pos[:, :, None, :] - pos[:, None, :, :], self.box)
        return d, dot(d, d)

    def _kj(self, pos: Tensor) -> tuple[Tensor, Tensor]:
        """Total energy ``(batch,)`` (kJ/mol) and gradient ``(3, n_atoms, batch)`` (kJ/mol/nm)."""
        energy = pos.new_full((pos.shape[-1],), self.constant)
        grad = torch.zeros_like(pos)
        for term in self.vector_terms:
            e, g = term(pos)
            energy = energy + e
            grad = grad + g
        if len(self.pair_terms):
            d, r2 = self._pair_geometry(pos)
            p_total = None
            for term in self.pair_terms:
                e, p = term(r2)
                energy = energy + e
                p_total = p if p_total is None else p_total + p
            grad = grad + (p_total[None] * d).sum(2)
        return energy, grad

    def _reduced_flat(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(u, du/dx)`` for flat finite ``x``; non-finite energies become NaN with zero gradient."""
        b = x.shape[0]
        pos = x.reshape(b, self.n_atoms, 3).permute(2, 1, 0).contiguous()
        energy, grad = self._kj(pos)
        u = energy / self.kT
        du = grad.permute(2, 1, 0).reshape(b, 3 * self.n_atoms) / self.kT
        bad = ~torch.isfinite(u)
        u = torch.where(bad, torch.full_like(u, torch.nan), u)
        du = torch.where(bad[:, None], torch.zeros_like(du), du)
        return u, du

    def _want_compiled(self, batch: int) -> bool:
        if self._compile_failed or self.compile is False:
            return False
        if self._compiled is not None or self.compile is True:
            return True
        if os.environ.get("BGFLOW_SCI_COMPILE", "1").strip().lower() in ("0", "false", "no", "off"):
            return False
        return batch >= AUTO_COMPILE_MIN_BATCH

    def _evaluate(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(u, du/dx)`` of flat ``x`` in chunks, compiled when :meth:`_want_compiled` says so."""
        if self._want_compiled(x.shape[0]):
            try:
                if self._compiled is None:
                    self._compiled = torch.compile(self._reduced_flat, dynamic=False)
                # fixed chunk shape: one graph per dtype/device, compiled on its first use
                return self._chunked(self._compiled, x, self._chunk(compiled=True), pad=True)
            except Exception as err:  # noqa: BLE001 - any compiler failure falls back to eager
                warnings.warn(f"torch.compile failed ({err!r}); using eager evaluation", RuntimeWarning, stacklevel=3)
                self._compile_failed, self._compiled = True, None
        return self._chunked(self._reduced_flat, x, self._chunk(compiled=False), pad=False)

    @staticmethod
    def _chunked(fn: Callable, x: Tensor, chunk: int, pad: bool) -> tuple[Tensor, Tensor]:
        """Apply ``fn`` to consecutive chunks of ``chunk`` rows (``pad``: every call sees exactly ``chunk`` rows)."""
        if x.shape[0] == chunk or (x.shape[0] < chunk and not pad):
            return fn(x)
        u = x.new_empty(x.shape[0])
        du = torch.empty_like(x)
        for start in range(0, x.shape[0], chunk):
            c = x[start : start + chunk]
            n = c.shape[0]
            if pad and n < chunk:  # the last chunk is padded with copies of its first row
                c = torch.cat([c, c[:1].expand(chunk - n, -1)])
            uc, duc = fn(c)
            u[start : start + n] = uc[:n]
            du[start : start + n] = duc[:n]
        return u, du

    def _chunk(self, compiled: bool = False) -> int:
        if self.chunk_size is not None:
            return self.chunk_size
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
            u, du = self._evaluate(torch.where(valid[:, None], x, torch.zeros_like(x)))
            ok = valid & ~torch.isnan(u)
            self.n_invalid += (~ok).sum().to(self.n_invalid.device)
            u = torch.where(ok, u, torch.full_like(u, torch.inf))
            force = torch.where(ok[:, None], -du, torch.zeros_like(du))
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
