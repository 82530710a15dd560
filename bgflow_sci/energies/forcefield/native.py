"""Native CPU kernels for the standard force-field terms: built once per machine, loaded with ``ctypes``.

:class:`~.model.TorchForceField` evaluates harmonic bonds and angles, periodic torsions, Coulomb + Lennard-Jones
pairs (no cutoff, or cutoff with reaction field and switching; non-periodic) and OBC2 generalised Born
(``GBSAOBCForce``) with the fused loops of ``kernels.cpp`` when it runs on the CPU in float32 or float64: one pass
per interaction computes the energy and the analytic gradient for a whole chunk of configurations (the batch is the
innermost, vectorised loop), with no temporaries.  The formulas are those of the torch modules (``bonded.py``,
``nonbonded.py``, ``gbsa.py``), which stay the path for every other term, for GPUs and for other dtypes.

Building: ``g++`` (or ``$CXX``) compiles ``kernels.cpp`` with ``-O3 -march=native -ffast-math`` (vector math from
glibc's libmvec where present) into ``$BGFLOW_SCI_CACHE/native`` (default ``~/.cache/bgflow_sci/native``), keyed by
the source, the compiler and the CPU, in about a second, once; the object is linked *without* ``-ffast-math`` so the
process's floating-point mode (denormals) is left alone.  Without a working compiler :func:`load_kernels` returns
``None`` and the torch path is used.  ``BGFLOW_SCI_NATIVE=0`` turns the kernels off.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from .bonded import HarmonicAngles, HarmonicBonds, PeriodicTorsions
from .gbsa import OBC2
from .nonbonded import DensePairs, ExceptionPairs

SOURCE = Path(__file__).with_name("kernels.cpp")
ABI_VERSION = 1
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
_LIBRARY: ctypes.CDLL | None = None
_LOAD_ERROR: str | None = None


def cache_dir() -> Path:
    """Folder of the built kernels: ``$BGFLOW_SCI_CACHE/native``, else ``$XDG_CACHE_HOME/bgflow_sci/native``."""
    root = os.environ.get("BGFLOW_SCI_CACHE")
    if root:
        return Path(root) / "native"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bgflow_sci" / "native"


def native_enabled() -> bool:
    """False when the environment variable ``BGFLOW_SCI_NATIVE`` is ``0``/``false``/``no``/``off``."""
    return os.environ.get("BGFLOW_SCI_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def _cpu_key() -> str:
    """What ``-march=native`` depends on: the CPU model and flags (Linux), else the platform string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return platform.machine() + line
    except OSError:
        pass
    return platform.machine() + platform.processor()


def _build(compiler: str, target: Path) -> None:
    """Compile and link ``kernels.cpp`` into ``target`` (atomically); raises ``RuntimeError`` with the compiler's
    message on failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        obj, lib = Path(tmp) / "kernels.o", Path(tmp) / target.name
        attempts = [
            (["-O3", "-march=native", "-ffast-math"], ["-lmvec", "-lm"]),
            (["-O3", "-march=native", "-ffast-math"], ["-lm"]),
            (["-O3", "-ffast-math"], ["-lm"]),
            (["-O2"], ["-lm"]),
        ]
        errors = []
        for cflags, libs in attempts:
            compile_cmd = [compiler, "-std=c++17", "-fPIC", *cflags, "-c", str(SOURCE), "-o", str(obj)]
            link_cmd = [compiler, "-shared", str(obj), "-o", str(lib), *libs]  # no -ffast-math: no crtfastmath.o
            ok = True
            for cmd in (compile_cmd, link_cmd):
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    errors.append(f"{' '.join(cmd)}:\n{proc.stderr.strip()[-2000:]}")
                    ok = False
                    break
            if ok:
                os.replace(lib, target)
                return
        raise RuntimeError("building the native force-field kernels failed:\n" + "\n".join(errors))


def load_kernels() -> ctypes.CDLL | None:
    """The loaded kernel library (built on first use), or ``None`` when disabled or no compiler works.

    A failed build warns once, naming the compiler's error, and the torch path is used from then on.
    """
    global _LIBRARY, _LOAD_ERROR
    if not native_enabled():
        return None
    if _LIBRARY is not None:
        return _LIBRARY
    if _LOAD_ERROR is not None:
        return None
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if compiler is None:
        _LOAD_ERROR = "no C++ compiler found (set CXX)"
        return None
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + compiler.encode() + _cpu_key().encode()).hexdigest()[:20]
    target = cache_dir() / f"bgflow_sci_kernels_{key}.so"
    try:
        if not target.exists():
            _build(compiler, target)
        library = ctypes.CDLL(str(target))
        if library.bgf_abi_version() != ABI_VERSION:
            raise RuntimeError(f"{target}: ABI version {library.bgf_abi_version()} != {ABI_VERSION}")
    except (OSError, RuntimeError) as err:
        _LOAD_ERROR = str(err)
        warnings.warn(
            f"native force-field kernels unavailable, using the torch path: {err}", RuntimeWarning, stacklevel=3
        )
        return None
    _declare(library)
    _LIBRARY = library
    return library


def _declare(library: ctypes.CDLL) -> None:
    p, i64, f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
    for suffix in _SUFFIX.values():
        for name in ("bonds", "angles", "torsions"):
            getattr(library, f"bgf_{name}_{suffix}").argtypes = [p, p, p, i64, i64, i64, p, p]
        getattr(library, f"bgf_pairs_{suffix}").argtypes = [p, p, p, i64, i64, i64, p, p, f64, f64, f64, f64]
        getattr(library, f"bgf_obc2_{suffix}").argtypes = [p, p, p, i64, i64, p, p, p, p, p, f64, p]
        for name in ("bonds", "angles", "torsions", "pairs", "obc2"):
            getattr(library, f"bgf_{name}_{suffix}").restype = None


def _f64(*columns: Tensor) -> Tensor:
    """Contiguous CPU float64 ``(m, len(columns))`` parameter table."""
    return torch.cat([c.detach().reshape(-1, 1).double().cpu() for c in columns], dim=1).contiguous()


@dataclass
class _Call:
    kind: str  # bonds | angles | torsions | pairs | obc2
    arrays: tuple[Tensor, ...]  # CPU tensors whose pointers are passed
    count: int = 0
    scalars: tuple[float, ...] = ()


@dataclass
class NativePlan:
    """The native calls for a set of force-field terms; ``vector_covered`` and ``pair_covered`` are the positions of
    the terms it covers in the force field's ``vector_terms`` and ``pair_terms``."""

    n_atoms: int
    calls: list[_Call] = field(default_factory=list)
    vector_covered: set[int] = field(default_factory=set)
    pair_covered: set[int] = field(default_factory=set)
    library: ctypes.CDLL | None = None
    _work: dict = field(default_factory=dict, repr=False)

    def add(self, pos: Tensor, energy: Tensor, grad: Tensor) -> None:
        """Add the covered terms' energies ``(batch,)`` (kJ/mol) and gradients ``(3, n_atoms, batch)`` in place.

        ``pos`` ``(3, n_atoms, batch)`` nm; all three contiguous CPU tensors of one dtype (float32 or float64).
        """
        suffix = _SUFFIX[pos.dtype]
        nb = pos.shape[-1]
        ptr = (pos.data_ptr(), grad.data_ptr(), energy.data_ptr())
        for call in self.calls:
            fn = getattr(self.library, f"bgf_{call.kind}_{suffix}")  # attribute access keeps the argtypes
            arrays = [a.data_ptr() for a in call.arrays]
            if call.kind == "obc2":
                fn(*ptr, self.n_atoms, nb, *arrays, *call.scalars, self._workspace(pos.dtype, nb).data_ptr())
            else:
                fn(*ptr, self.n_atoms, nb, call.count, *arrays, *call.scalars)

    def _workspace(self, dtype: torch.dtype, nb: int) -> Tensor:
        """Scratch of the OBC2 kernel per thread, kept between calls (reallocating ~1 MB per chunk costs page
        faults)."""
        size = (4 + self.n_atoms) * self.n_atoms * nb
        key = (threading.get_ident(), dtype)  # one per thread: chunks may run in parallel threads
        work = self._work.get(key)
        if work is None or work.numel() < size:
            work = self._work[key] = torch.empty(size, dtype=dtype)
        return work

    def __bool__(self) -> bool:
        return bool(self.calls)

    def __getstate__(self) -> dict:  # pickling and deepcopy: the library handle is reloaded, the scratch dropped
        state = dict(self.__dict__)
        state["library"], state["_work"] = None, {}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.calls:
            self.library = load_kernels()
            if self.library is None:  # kernels gone (e.g. unpickled on a machine without a compiler)
                raise RuntimeError("a TorchForceField with native kernels was unpickled where they cannot be built")


def plan_native(vector_terms: list[nn.Module], pair_terms: list[nn.Module], n_atoms: int, periodic: bool) -> NativePlan:
    """Map the terms the kernels support (non-periodic ones) to native calls; the rest stay in torch.

    Returns an empty plan when the kernels cannot be loaded.
    """
    plan = NativePlan(n_atoms)
    library = load_kernels()
    if library is None:
        return plan
    plan.library = library
    for position, term in enumerate(vector_terms):
        if getattr(term, "box", None) is not None:
            continue
        if isinstance(term, HarmonicBonds):
            call = _Call("bonds", (term.atoms.cpu().contiguous(), _f64(term.r0, term.k)), term.atoms.shape[0])
        elif isinstance(term, HarmonicAngles):
            call = _Call("angles", (term.atoms.cpu().contiguous(), _f64(term.theta0, term.k)), term.atoms.shape[0])
        elif isinstance(term, PeriodicTorsions):
            table = _f64(term.n, term.phase, term.k)
            call = _Call("torsions", (term.atoms.cpu().contiguous(), table), term.atoms.shape[0])
        elif isinstance(term, ExceptionPairs):
            table = _f64(term.qq, term.lj_a, term.lj_b)
            call = _Call("pairs", (term.atoms.cpu().contiguous(), table), term.atoms.shape[0], (0.0, 0.0, 0.0, 0.0))
        else:
            continue
        plan.calls.append(call)
        plan.vector_covered.add(position)
    if periodic:
        return plan
    for position, term in enumerate(pair_terms):
        if isinstance(term, DensePairs):
            qq, a, b = (t.detach().double().cpu().reshape(n_atoms, n_atoms) for t in (term.qq, term.lj_a, term.lj_b))
            i, j = torch.triu_indices(n_atoms, n_atoms, offset=1)
            keep = (qq[i, j] != 0) | (a[i, j] != 0) | (b[i, j] != 0)
            i, j = i[keep], j[keep]
            atoms = torch.stack([i, j], dim=1).contiguous()
            table = _f64(qq[i, j], a[i, j], b[i, j])
            if term.cutoff is None:
                scalars = (0.0, 0.0, 0.0, 0.0)
            else:
                scalars = (term.cutoff, term.k_rf, term.c_rf, term.switch_distance or 0.0)
            plan.calls.append(_Call("pairs", (atoms, table), atoms.shape[0], scalars))
        elif isinstance(term, OBC2):
            arrays = (
                term.qq.detach().double().cpu().reshape(n_atoms, n_atoms).contiguous(),
                term.rho.detach().double().cpu().reshape(-1).contiguous(),
                term.s_j.detach().double().cpu().reshape(-1).contiguous(),
                term.radius.detach().double().cpu().reshape(-1).contiguous(),
                term.sa.detach().double().cpu().reshape(-1).contiguous(),
            )
            plan.calls.append(_Call("obc2", arrays, 0, (term.cutoff or 0.0,)))
        else:
            continue
        plan.pair_covered.add(position)
    return plan
