"""Read an OpenMM ``System`` into force-field terms (OpenMM is imported lazily, only here)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .bonded import HarmonicAngles, HarmonicBonds, PeriodicTorsions
from .cmap import CMAPTorsions
from .custom import CUSTOM_FORCES, import_custom_force
from .ewald import import_pme
from .gbsa import OBC2
from .nonbonded import ONE_4PI_EPS0, DensePairs, ExceptionPairs, dispersion_correction

SUPPORTED_FORCES = (
    "HarmonicBondForce",
    "HarmonicAngleForce",
    "PeriodicTorsionForce",
    "NonbondedForce",
    "GBSAOBCForce",
    "CMAPTorsionForce",
    "CMMotionRemover",
    *CUSTOM_FORCES,
)


@dataclass
class ImportedTerms:
    """Terms read from a System: ``vector_terms`` act on positions, ``pair_terms`` on the dense pair distances."""

    n_atoms: int
    box: Tensor | None = None
    periodic_pairs: bool = False
    vector_terms: list[tuple[str, nn.Module]] = field(default_factory=list)
    pair_terms: list[tuple[str, nn.Module]] = field(default_factory=list)
    constants: dict[str, float] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)


def _v(q) -> float:
    from openmm import unit

    return float(q.value_in_unit_system(unit.md_unit_system)) if unit.is_quantity(q) else float(q)


def import_system(system) -> ImportedTerms:
    """Translate the forces of ``system``; raise ``ValueError`` for anything not supported."""
    import openmm

    n = system.getNumParticles()
    if n < 1:
        raise ValueError("the OpenMM System has no particles")
    for i in range(n):
        if system.isVirtualSite(i):
            raise ValueError(f"particle {i} is a virtual site; virtual sites are not supported")
    out = ImportedTerms(n_atoms=n)
    box = None
    if system.usesPeriodicBoundaryConditions():
        vecs = system.getDefaultPeriodicBoxVectors()
        box = torch.tensor([[_v(c) for c in vec] for vec in vecs], dtype=torch.float64)
        out.box = box
    counts: dict[str, int] = {}
    pair_periodic: set[bool] = set()
    for index, force in enumerate(system.getForces()):
        kind = type(force).__name__
        if kind not in SUPPORTED_FORCES:
            raise ValueError(
                f"unsupported force {kind} (force index {index}); TorchForceField supports "
                + ", ".join(SUPPORTED_FORCES)
                + " (CMMotionRemover is ignored)"
            )
        if kind == "CMMotionRemover":
            continue
        name = kind if kind not in counts else f"{kind}[{index}]"
        counts[kind] = counts.get(kind, 0) + 1
        out.names.append(name)
        fbox = box if (box is not None and force.usesPeriodicBoundaryConditions()) else None
        if isinstance(force, openmm.HarmonicBondForce):
            rows = [force.getBondParameters(k) for k in range(force.getNumBonds())]
            if rows:
                i, j, r0, k = zip(*rows)
                out.vector_terms.append((name, HarmonicBonds(i, j, [_v(x) for x in r0], [_v(x) for x in k], n, fbox)))
        elif isinstance(force, openmm.HarmonicAngleForce):
            rows = [force.getAngleParameters(k) for k in range(force.getNumAngles())]
            if rows:
                i, j, kk, th, k = zip(*rows)
                out.vector_terms.append(
                    (name, HarmonicAngles(i, j, kk, [_v(x) for x in th], [_v(x) for x in k], n, fbox))
                )
        elif isinstance(force, openmm.PeriodicTorsionForce):
            rows = [force.getTorsionParameters(k) for k in range(force.getNumTorsions())]
            if rows:
                i, j, kk, ll, per, ph, k = zip(*rows)
                out.vector_terms.append(
                    (name, PeriodicTorsions(i, j, kk, ll, per, [_v(x) for x in ph], [_v(x) for x in k], n, fbox))
                )
        elif isinstance(force, openmm.CMAPTorsionForce):
            maps = [force.getMapParameters(k) for k in range(force.getNumMaps())]
            rows = [force.getTorsionParameters(k) for k in range(force.getNumTorsions())]
            if rows:
                maps = [(size, [_v(e) for e in energy]) for size, energy in maps]
                out.vector_terms.append((name, CMAPTorsions(maps, rows, n, fbox)))
        elif isinstance(force, openmm.NonbondedForce) and force.getNonbondedMethod() in (3, 4, 5):  # Ewald, PME, LJPME
            _import_pme(force, system, name, out)
        elif isinstance(force, openmm.NonbondedForce):
            _import_nonbonded(force, name, out, pair_periodic)
        elif kind in CUSTOM_FORCES:
            for term in import_custom_force(force, index, n, box):
                out.vector_terms.append((name, term))
        elif isinstance(force, openmm.GBSAOBCForce):
            method = force.getNonbondedMethod()
            if method not in (0, 1, 2):
                raise ValueError(f"GBSAOBCForce: unsupported nonbonded method {method}")
            pair_periodic.add(method == 2)
            rows = [force.getParticleParameters(k) for k in range(force.getNumParticles())]
            q, rad, scale = (torch.tensor([_v(r[c]) for r in rows], dtype=torch.float64) for c in range(3))
            term = OBC2(
                q,
                rad,
                scale,
                solute_dielectric=force.getSoluteDielectric(),
                solvent_dielectric=force.getSolventDielectric(),
                surface_area_energy=_v(force.getSurfaceAreaEnergy()),
                cutoff=_v(force.getCutoffDistance()) if method in (1, 2) else None,
            )
            out.pair_terms.append((name, term))
    if len(pair_periodic) > 1:
        raise ValueError("NonbondedForce and GBSAOBCForce must agree on periodicity")
    out.periodic_pairs = bool(pair_periodic and pair_periodic.pop())
    if out.periodic_pairs and box is None:
        raise ValueError("a periodic nonbonded method needs periodic box vectors in the System")
    return out


def _import_pme(force, system, name: str, out: ImportedTerms) -> None:
    """PME / Ewald / LJPME ``NonbondedForce``: Ewald-summed Coulomb (and dispersion for LJPME) + cut-off LJ
    (:mod:`.ewald`), the exceptions' own terms, the dispersion correction (not for LJPME)."""
    if force.getNumParticleParameterOffsets() or force.getNumExceptionParameterOffsets():
        raise ValueError("NonbondedForce parameter offsets (global-parameter dependent charges/LJ) are not supported")
    if out.box is None:
        raise ValueError("NonbondedForce method PME/Ewald/LJPME needs periodic box vectors in the System")
    out.vector_terms.append((name, import_pme(force, system, out.box)))
    rows = []
    for k in range(force.getNumExceptions()):
        i, j, qp, s, e = force.getExceptionParameters(k)
        qp, s, e = _v(qp), _v(s), _v(e)
        if qp != 0.0 or e != 0.0:
            rows.append((i, j, ONE_4PI_EPS0 * qp, 4 * e * s**12, 4 * e * s**6))
    if rows:
        i, j, eq, ea, eb = zip(*rows)
        box = out.box if force.getExceptionsUsePeriodicBoundaryConditions() else None
        out.vector_terms.append((name, ExceptionPairs(i, j, eq, ea, eb, out.n_atoms, box)))
    if force.getUseDispersionCorrection() and force.getNonbondedMethod() != 5:  # LJPME: none (as in OpenMM)
        params = [force.getParticleParameters(k) for k in range(force.getNumParticles())]
        sig = torch.tensor([_v(p[1]) for p in params], dtype=torch.float64)
        eps = torch.tensor([_v(p[2]) for p in params], dtype=torch.float64)
        switch = _v(force.getSwitchingDistance()) if force.getUseSwitchingFunction() else None
        coefficient = dispersion_correction(sig, eps, _v(force.getCutoffDistance()), switch)
        out.constants[name] = out.constants.get(name, 0.0) + coefficient / float(torch.det(out.box).abs())


def _import_nonbonded(force, name: str, out: ImportedTerms, pair_periodic: set[bool]) -> None:
    method = force.getNonbondedMethod()
    names = {0: "NoCutoff", 1: "CutoffNonPeriodic", 2: "CutoffPeriodic", 3: "Ewald", 4: "PME", 5: "LJPME"}
    if method not in (0, 1, 2):
        raise ValueError(
            f"NonbondedForce method {names.get(method, method)} is not supported; "
            "use NoCutoff, CutoffNonPeriodic, CutoffPeriodic (reaction field), Ewald or PME"
        )
    if force.getNumParticleParameterOffsets() or force.getNumExceptionParameterOffsets():
        raise ValueError("NonbondedForce parameter offsets (global-parameter dependent charges/LJ) are not supported")
    n = out.n_atoms
    pair_periodic.add(method == 2)
    rows = [force.getParticleParameters(k) for k in range(force.getNumParticles())]
    q, sig, eps = (torch.tensor([_v(r[c]) for r in rows], dtype=torch.float64) for c in range(3))
    qq = ONE_4PI_EPS0 * q[:, None] * q[None, :]
    sig_ij = 0.5 * (sig[:, None] + sig[None, :])
    eps_ij = torch.sqrt(eps[:, None] * eps[None, :])
    lj_a, lj_b = 4 * eps_ij * sig_ij**12, 4 * eps_ij * sig_ij**6
    for m in (qq, lj_a, lj_b):
        m.fill_diagonal_(0.0)
    cutoff = _v(force.getCutoffDistance()) if method in (1, 2) else None
    dense_exceptions = cutoff is None
    ex_rows = []
    for k in range(force.getNumExceptions()):
        i, j, qp, s, e = force.getExceptionParameters(k)
        qp, s, e = _v(qp), _v(s), _v(e)
        for m in (qq, lj_a, lj_b):
            m[i, j] = m[j, i] = 0.0
        if qp == 0.0 and e == 0.0:
            continue
        if dense_exceptions:
            qq[i, j] = qq[j, i] = ONE_4PI_EPS0 * qp
            lj_a[i, j] = lj_a[j, i] = 4 * e * s**12
            lj_b[i, j] = lj_b[j, i] = 4 * e * s**6
        else:
            ex_rows.append((i, j, ONE_4PI_EPS0 * qp, 4 * e * s**12, 4 * e * s**6))
    switch = _v(force.getSwitchingDistance()) if (cutoff is not None and force.getUseSwitchingFunction()) else None
    if switch is not None and not 0 <= switch < cutoff:
        raise ValueError(f"NonbondedForce switching distance {switch} must lie in [0, cutoff={cutoff})")
    dense = DensePairs(qq, lj_a, lj_b, cutoff, force.getReactionFieldDielectric(), switch)
    out.pair_terms.append((name, dense))
    if ex_rows:
        i, j, eq, ea, eb = zip(*ex_rows)
        box = out.box if force.getExceptionsUsePeriodicBoundaryConditions() else None
        out.vector_terms.append((name, ExceptionPairs(i, j, eq, ea, eb, n, box)))
    if method == 2 and force.getUseDispersionCorrection():
        coefficient = dispersion_correction(sig, eps, cutoff, switch)
        volume = float(torch.det(out.box).abs())
        out.constants[name] = out.constants.get(name, 0.0) + coefficient / volume
    if not math.isfinite(sum(out.constants.values())):
        raise ValueError("non-finite dispersion correction")
