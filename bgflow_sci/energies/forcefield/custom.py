"""OpenMM Custom* forces as force-field vector terms: the energy expression compiled to torch, gradient by autograd.

Each term maps positions ``(3, n_atoms, batch)`` (nm) to ``(energy (batch,), dE/dx (3, n_atoms, batch))`` in
kJ/mol and kJ/mol/nm.  The energy is the OpenMM expression evaluated batch-last on gathered geometry
(bond lengths, angles, dihedrals, pair distances over precomputed unique index lists); because the expressions
are arbitrary, the gradient is taken by ``torch.autograd`` on that graph inside the term (first order only).

Supported: CustomBondForce, CustomAngleForce, CustomTorsionForce, CustomCompoundBondForce (``distance``,
``angle``, ``dihedral``, ``x1 y1 z1 ...``), CustomNonbondedForce (NoCutoff / CutoffNonPeriodic / CutoffPeriodic,
exclusions, switching; no interaction groups, long-range correction or computed values), CustomGBForce (computed
values and energy terms of types SingleParticle / ParticlePair / ParticlePairNoExclusions, exclusions, Discrete
tabulated functions, NoCutoff / CutoffNonPeriodic / CutoffPeriodic).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .expressions import compile_expression, tabulated_function
from .geometry import minimum_image

CUSTOM_FORCES = (
    "CustomBondForce",
    "CustomAngleForce",
    "CustomTorsionForce",
    "CustomCompoundBondForce",
    "CustomNonbondedForce",
    "CustomGBForce",
)


def _v(q) -> float:
    from openmm import unit

    return float(q.value_in_unit_system(unit.md_unit_system)) if unit.is_quantity(q) else float(q)


def _dist(pos: Tensor, a: Tensor, b: Tensor, box: Tensor | None) -> tuple[Tensor, Tensor]:
    d = minimum_image(pos[:, a] - pos[:, b], box)
    return d, torch.sqrt((d * d).sum(0))


def _angle(u: Tensor, v: Tensor) -> Tensor:
    c = (u * v).sum(0)
    p = torch.linalg.cross(u, v, dim=0)
    return torch.atan2(torch.sqrt((p * p).sum(0)), c)


def _dihedral(b1: Tensor, b2: Tensor, b3: Tensor) -> Tensor:
    n1 = torch.linalg.cross(b1, b2, dim=0)
    n2 = torch.linalg.cross(b2, b3, dim=0)
    y = torch.sqrt((b2 * b2).sum(0)) * (b1 * n2).sum(0)
    return torch.atan2(y, (n1 * n2).sum(0))


class _AutogradTerm(nn.Module):
    """Base: ``forward`` returns the energy of :meth:`energy` and its gradient by autograd."""

    def energy(self, pos: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, pos: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            x = pos.detach().requires_grad_(True)
            e = self.energy(x)
            (g,) = torch.autograd.grad(e.sum(), x)
        return e.detach(), g


def _globals(force) -> dict[str, float]:
    return {
        force.getGlobalParameterName(k): float(force.getGlobalParameterDefaultValue(k))
        for k in range(force.getNumGlobalParameters())
    }


def _where(force, index: int) -> str:
    return f"{type(force).__name__} (force index {index})"


class CustomBondedTerm(_AutogradTerm):
    """``E = Σ_m f(geometry_m, params_m, globals)`` for Custom{Bond,Angle,Torsion,CompoundBond}Force.

    ``atoms`` is ``(m, k)``; ``geometry(pos, atoms)`` returns the variables (``r``, ``theta``, ``dihedral`` …)
    as ``(m, batch)`` tensors; ``params`` ``(m, n_params)``.
    """

    def __init__(
        self,
        fn: Callable,
        atoms: Tensor,
        params: dict[str, Tensor],
        constants: dict[str, float],
        geometry: Callable[[Tensor, Tensor, Tensor | None], dict[str, Tensor]],
        box: Tensor | None,
    ):
        super().__init__()
        self.fn, self.geometry, self.constants = fn, geometry, constants
        self.register_buffer("atoms", atoms, persistent=False)
        self.names = list(params)
        for k, name in enumerate(self.names):
            self.register_buffer(f"p{k}", params[name].reshape(-1, 1), persistent=False)
        self.register_buffer("box", box, persistent=False)

    def energy(self, pos: Tensor) -> Tensor:
        env = self.geometry(pos, self.atoms, self.box)
        for k, name in enumerate(self.names):
            env[name] = getattr(self, f"p{k}").to(pos.dtype)
        for name, value in self.constants.items():
            env[name] = pos.new_tensor(value)
        e = self.fn(env)
        return torch.broadcast_to(e, (self.atoms.shape[0], pos.shape[-1])).sum(0)


def _bond_geometry(pos, atoms, box):
    return {"r": _dist(pos, atoms[:, 1], atoms[:, 0], box)[1]}


def _angle_geometry(pos, atoms, box):
    u = minimum_image(pos[:, atoms[:, 0]] - pos[:, atoms[:, 1]], box)
    v = minimum_image(pos[:, atoms[:, 2]] - pos[:, atoms[:, 1]], box)
    return {"theta": _angle(u, v)}


def _torsion_geometry(pos, atoms, box):
    b1 = minimum_image(pos[:, atoms[:, 1]] - pos[:, atoms[:, 0]], box)
    b2 = minimum_image(pos[:, atoms[:, 2]] - pos[:, atoms[:, 1]], box)
    b3 = minimum_image(pos[:, atoms[:, 3]] - pos[:, atoms[:, 2]], box)
    return {"theta": _dihedral(b1, b2, b3)}


class _CompoundGeometry:
    """Variables ``x1 y1 z1 …`` of a CustomCompoundBondForce; ``distance/angle/dihedral`` are functions."""

    def __init__(self, k: int):
        self.k = k

    def __call__(self, pos, atoms, box):
        env = {}
        for p in range(self.k):
            for c, axis in enumerate("xyz"):
                env[f"{axis}{p + 1}"] = pos[c, atoms[:, p]]
        return env


def import_custom_force(force, index: int, n_atoms: int, box: Tensor | None) -> list[nn.Module]:
    """Translate one OpenMM Custom* force into vector terms; ``ValueError`` names the force and expression."""
    import openmm

    where = _where(force, index)
    try:
        return _import(force, n_atoms, box, openmm)
    except ValueError as err:
        expr = force.getEnergyFunction() if hasattr(force, "getEnergyFunction") else ""
        raise ValueError(
            f"{where}: {err}" + (f" [energy: {expr!r}]" if expr and expr not in str(err) else "")
        ) from None


def _import(force, n_atoms: int, box: Tensor | None, openmm) -> list[nn.Module]:
    fbox = box if (box is not None and force.usesPeriodicBoundaryConditions()) else None
    consts = _globals(force)
    if isinstance(force, (openmm.CustomBondForce, openmm.CustomAngleForce, openmm.CustomTorsionForce)):
        kind, geo, var, k = {
            openmm.CustomBondForce: ("Bond", _bond_geometry, "r", 2),
            openmm.CustomAngleForce: ("Angle", _angle_geometry, "theta", 3),
            openmm.CustomTorsionForce: ("Torsion", _torsion_geometry, "theta", 4),
        }[type(force)]
        n = getattr(force, f"getNum{kind}s")()
        names = [
            force.getPerBondParameterName(i)
            if kind == "Bond"
            else (force.getPerAngleParameterName(i) if kind == "Angle" else force.getPerTorsionParameterName(i))
            for i in range(getattr(force, f"getNumPer{kind}Parameters")())
        ]
        fn, _ = compile_expression(force.getEnergyFunction(), [var, *names, *consts])
        if n == 0:
            return []
        rows = [getattr(force, f"get{kind}Parameters")(i) for i in range(n)]
        atoms = torch.tensor([r[:k] for r in rows], dtype=torch.long)
        params = {nm: torch.tensor([float(r[k][c]) for r in rows], dtype=torch.float64) for c, nm in enumerate(names)}
        return [CustomBondedTerm(fn, atoms, params, consts, geo, fbox)]
    if isinstance(force, openmm.CustomCompoundBondForce):
        if force.getNumTabulatedFunctions():
            raise ValueError("tabulated functions in CustomCompoundBondForce are not supported")
        k = force.getNumParticlesPerBond()
        names = [force.getPerBondParameterName(i) for i in range(force.getNumPerBondParameters())]
        coords = [f"{a}{p + 1}" for p in range(k) for a in "xyz"]
        fn, _ = compile_expression(force.getEnergyFunction(), [*coords, *names, *consts])
        if force.getNumBonds() == 0:
            return []
        rows = [force.getBondParameters(i) for i in range(force.getNumBonds())]
        atoms = torch.tensor([list(r[0]) for r in rows], dtype=torch.long)
        params = {nm: torch.tensor([float(r[1][c]) for r in rows], dtype=torch.float64) for c, nm in enumerate(names)}
        return [CustomBondedTerm(fn, atoms, params, consts, _CompoundGeometry(k), None)]
    if isinstance(force, openmm.CustomNonbondedForce):
        return [_nonbonded(force, n_atoms, fbox, consts)]
    if isinstance(force, openmm.CustomGBForce):
        return [CustomGB(force, n_atoms, fbox, consts)]
    raise ValueError("not a supported Custom force")


def _method(force) -> float | None:
    method = force.getNonbondedMethod()
    if method not in (0, 1, 2):
        raise ValueError(f"nonbonded method {method} is not supported (NoCutoff, CutoffNonPeriodic, CutoffPeriodic)")
    return _v(force.getCutoffDistance()) if method in (1, 2) else None


def _tables(force) -> dict:
    return {
        force.getTabulatedFunctionName(k): tabulated_function(
            force.getTabulatedFunction(k), force.getTabulatedFunctionName(k)
        )
        for k in range(force.getNumTabulatedFunctions())
    }


def _suffixed(names: list[str]) -> list[str]:
    return [f"{nm}{s}" for nm in names for s in ("1", "2")]


class CustomNB(_AutogradTerm):
    """``E = Σ_{i<j, not excluded, r<rc} f(r, p_i, p_j) S(r)`` with OpenMM's switching ``S``."""

    def __init__(self, fn, params: Tensor, names, consts, pairs: Tensor, cutoff, switch, box):
        super().__init__()
        self.fn, self.names, self.consts, self.cutoff, self.switch = fn, names, consts, cutoff, switch
        self.register_buffer("params", params, persistent=False)
        self.register_buffer("pairs", pairs, persistent=False)
        self.register_buffer("box", box, persistent=False)

    def energy(self, pos: Tensor) -> Tensor:
        a, b = self.pairs[0], self.pairs[1]
        _, r = _dist(pos, a, b, self.box)
        p = self.params.to(pos.dtype)
        env = {"r": r}
        for c, nm in enumerate(self.names):
            env[nm + "1"] = p[a, c, None]
            env[nm + "2"] = p[b, c, None]
        for nm, value in self.consts.items():
            env[nm] = pos.new_tensor(value)
        e = torch.broadcast_to(self.fn(env), r.shape)
        if self.cutoff is not None:
            if self.switch is not None:
                t = ((r - self.switch) / (self.cutoff - self.switch)).clamp(0.0, 1.0)
                e = e * (1 - t**3 * (10 - 15 * t + 6 * t * t))
            e = torch.where(r < self.cutoff, e, torch.zeros_like(e))
        return e.sum(0)


def _pairs(n: int, excluded: set[tuple[int, int]] | None) -> Tensor:
    i, j = torch.triu_indices(n, n, 1)
    if excluded:
        keep = torch.tensor([(int(a), int(b)) not in excluded for a, b in zip(i, j)], dtype=torch.bool)
        i, j = i[keep], j[keep]
    return torch.stack([i, j])


def _nonbonded(force, n_atoms, box, consts) -> CustomNB:
    if force.getNumInteractionGroups():
        raise ValueError("interaction groups are not supported")
    if force.getNumComputedValues():
        raise ValueError("computed values are not supported")
    if force.getUseLongRangeCorrection():
        raise ValueError("the long-range correction is not supported")
    cutoff = _method(force)
    names = [force.getPerParticleParameterName(k) for k in range(force.getNumPerParticleParameters())]
    fn, _ = compile_expression(force.getEnergyFunction(), ["r", *_suffixed(names), *consts], _tables(force))
    params = torch.tensor([list(force.getParticleParameters(k)) for k in range(n_atoms)], dtype=torch.float64)
    params = params.reshape(n_atoms, len(names))
    excluded = {tuple(sorted(force.getExclusionParticles(k))) for k in range(force.getNumExclusions())}
    switch = _v(force.getSwitchingDistance()) if cutoff is not None and force.getUseSwitchingFunction() else None
    return CustomNB(fn, params, names, consts, _pairs(n_atoms, excluded), cutoff, switch, box)


class CustomGB(_AutogradTerm):
    """OpenMM CustomGBForce: computed values then energy terms, over ordered (values) or unique (energy) pairs.

    A ParticlePair computed value is ``v_i = Σ_{j≠i} f(r_ij, p_i, p_j, earlier values)`` over ordered pairs
    (without excluded pairs unless NoExclusions; only ``r < cutoff`` with a cutoff); SingleParticle values and
    energies are per particle; pair energies run over unique pairs ``i < j``.
    """

    def __init__(self, force, n_atoms: int, box: Tensor | None, consts: dict[str, float]):
        super().__init__()
        self.cutoff = _method(force)
        self.consts = consts
        self.n = n_atoms
        tables = _tables(force)
        names = [force.getPerParticleParameterName(k) for k in range(force.getNumPerParticleParameters())]
        self.names = names
        params = torch.tensor([list(force.getParticleParameters(k)) for k in range(n_atoms)], dtype=torch.float64)
        self.register_buffer("params", params.reshape(n_atoms, len(names)), persistent=False)
        excluded = {tuple(sorted(force.getExclusionParticles(k))) for k in range(force.getNumExclusions())}
        self.register_buffer("all_pairs", _pairs(n_atoms, None), persistent=False)
        # mask over all_pairs: True where not excluded
        keep = torch.tensor([(int(a), int(b)) not in excluded for a, b in self.all_pairs.t()], dtype=torch.bool)
        self.register_buffer("keep", keep, persistent=False)
        self.register_buffer("box", box, persistent=False)
        self.values: list[tuple[str, Callable, int]] = []
        seen: list[str] = []
        for k in range(force.getNumComputedValues()):
            vname, expr, kind = force.getComputedValueParameters(k)
            if kind == 0:  # SingleParticle
                allowed = ["x", "y", "z", *names, *seen, *consts]
            else:
                allowed = ["r", *_suffixed(names), *_suffixed(seen), *consts]
            fn = self._compile(expr, allowed, tables, f"computed value {vname!r}")
            if kind not in (0, 1, 2):
                raise ValueError(f"computed value {vname!r} has unsupported type {kind}")
            self.values.append((vname, fn, kind))
            seen.append(vname)
        self.energies: list[tuple[Callable, int]] = []
        for k in range(force.getNumEnergyTerms()):
            expr, kind = force.getEnergyTermParameters(k)
            if kind == 0:
                allowed = ["x", "y", "z", *names, *seen, *consts]
            else:
                allowed = ["r", *_suffixed(names), *_suffixed(seen), *consts]
            if kind not in (0, 1, 2):
                raise ValueError(f"energy term {k} has unsupported type {kind}")
            self.energies.append((self._compile(expr, allowed, tables, f"energy term {k}"), kind))

    @staticmethod
    def _compile(expr, allowed, tables, what):
        try:
            return compile_expression(expr, allowed, tables)[0]
        except ValueError as err:
            raise ValueError(f"{what}: {err}") from None

    def energy(self, pos: Tensor) -> Tensor:
        batch = pos.shape[-1]
        a, b = self.all_pairs[0], self.all_pairs[1]
        _, r = _dist(pos, a, b, self.box)  # (P, batch)
        inside = torch.ones_like(r, dtype=torch.bool) if self.cutoff is None else r < self.cutoff
        p = self.params.to(pos.dtype)
        single = {nm: p[:, c, None] for c, nm in enumerate(self.names)}
        single.update({"x": pos[0], "y": pos[1], "z": pos[2]})
        consts = {nm: pos.new_tensor(v) for nm, v in self.consts.items()}
        single.update(consts)

        def pair_env(i, j, rr):
            env = {"r": rr}
            for nm, val in single.items():
                if nm in consts or nm in ("x", "y", "z"):
                    continue
                env[nm + "1"] = val[i]
                env[nm + "2"] = val[j]
            env.update(consts)
            return env

        for vname, fn, kind in self.values:
            if kind == 0:
                val = torch.broadcast_to(fn(single), (self.n, batch))
            else:
                mask = inside if kind == 2 else inside & self.keep[:, None]
                fwd = torch.broadcast_to(fn(pair_env(a, b, r)), r.shape)
                bwd = torch.broadcast_to(fn(pair_env(b, a, r)), r.shape)
                zero = torch.zeros_like(r)
                fwd, bwd = torch.where(mask, fwd, zero), torch.where(mask, bwd, zero)
                val = torch.zeros(self.n, batch, dtype=pos.dtype, device=pos.device)
                val = val.index_add(0, a, fwd).index_add(0, b, bwd)
            single[vname] = val
        total = pos.new_zeros(batch)
        for fn, kind in self.energies:
            if kind == 0:
                total = total + torch.broadcast_to(fn(single), (self.n, batch)).sum(0)
            else:
                mask = inside if kind == 2 else inside & self.keep[:, None]
                e = torch.broadcast_to(fn(pair_env(a, b, r)), r.shape)
                total = total + torch.where(mask, e, torch.zeros_like(e)).sum(0)
        return total
