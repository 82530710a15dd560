"""A Boltzmann generator for a molecule: spline couplings in internal coordinates, Cartesian output.

Forward (latent -> sample)::

    z = [reals (bonds, angles, tight torsions; standardised), rotor torsions on the circle]
                                                                        ~  N(0, 1) × Uniform(-π, π)
      -> rational-quadratic spline couplings (rotor torsions as circle coordinates, seams shifted)
      -> fixed permutation into IC order, de-standardisation (statistics of the training data),
         tight torsions rotated to their circular mean
      -> internal -> Cartesian (exact log volume, global rotation/translation removed)   x in nm

Tight torsions are those that barely move (improper-like, sibling-relative, trans peptide bonds): modelled
as real Gaussian-like coordinates they cost the flow nothing, while on the circle they would need sharp peaks.

Following Noé et al., Science 2019 and Köhler et al. (smooth flows, ala2), written for any molecule whose
topology has a bond graph (mdtraj).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .bg import BoltzmannGenerator, DensityModel
from .distributions import Joint, Normal, UniformBox
from .energies import Energy
from .flows import (
    ActNorm,
    CircularShift,
    Coupling,
    InternalCoordinates,
    Permutation,
    RationalQuadraticSpline,
    Sequential,
)
from .flows.internal import dihedral
from .flows.transformers import Domain
from .state_mixture import StateMixture


def coupling_masks(dim: int, n_layers: int) -> list[Tensor]:
    """Alternate first/second half and even/odd masks, so every pair of coordinates conditions on each other."""
    idx = torch.arange(dim)
    patterns = [idx < dim // 2, idx >= dim // 2, idx % 2 == 0, idx % 2 == 1]
    return [patterns[i % 4] for i in range(n_layers)]


def internal_coordinate_statistics(ic: InternalCoordinates, z: Tensor, tight_torsion_std: float = 0.3) -> dict:
    """Per-coordinate mean and standard deviation of internal coordinates ``z`` (batch, ic.dim).

    Torsions use circular statistics: mean ``atan2(<sin>, <cos>)``, deviations wrapped around it, circular
    standard deviation ``sqrt(-2 log R)``.  Returns ``mean``, ``std`` (tensors) and the IC indices of the
    ``tight`` (circular std below ``tight_torsion_std`` and every deviation below 1.5 rad) and ``loose`` torsions.
    """
    t_idx = ic.torsion_indices.tolist()
    mean, std = z.mean(0).clone(), z.std(0).clone()
    t = z[:, t_idx]
    s, c = torch.sin(t).mean(0), torch.cos(t).mean(0)
    mu = torch.atan2(s, c)
    dev = torch.remainder(t - mu + math.pi, 2 * math.pi) - math.pi
    circular_std = torch.sqrt(-2 * torch.log(torch.hypot(s, c).clamp(1e-12, 1.0)))
    mean[t_idx], std[t_idx] = mu, dev.std(0)
    max_dev = dev.abs().max(0).values
    tight = [
        i for i, cs, md in zip(t_idx, circular_std.tolist(), max_dev.tolist()) if cs < tight_torsion_std and md < 1.5
    ]
    loose = [i for i in t_idx if i not in tight]
    return {"mean": mean, "std": std, "tight": tight, "loose": loose, "circular_std": circular_std}


def molecular_boltzmann_generator(
    topology,
    target: Energy | None,
    data: Tensor | None,
    n_layers: int = 8,
    n_bins: int = 8,
    hidden: tuple[int, ...] = (128, 128),
    bound: float = 5.0,
    center: int | None = None,
    seed: int = 0,
    tight_torsion_std: float = 0.3,
    torsion_arc: tuple[Sequence[int], float, float] | None = None,
    statistics: dict | None = None,
) -> BoltzmannGenerator | DensityModel:
    """Build the Boltzmann generator of a molecule from its ``mdtraj`` topology and Cartesian training data.

    Args:
        topology: ``mdtraj.Topology`` with bonds (defines the Z-matrix).
        target: reduced energy ``u(x)`` of flat Cartesian positions in nm; ``None`` gives a
            :class:`~bgflow_sci.DensityModel` (the same flow, no importance weights).
        data: ``(n_frames, 3 n_atoms)`` positions in nm, used only for the internal-coordinate statistics.
        n_layers, n_bins, hidden, bound: spline-coupling settings (``bound`` in standard deviations).
        center: root atom of the Z-matrix (default: the bond graph's centre).
        tight_torsion_std: torsions whose circular standard deviation in ``data`` is below this (radians)
            and that never stray more than 1.5 rad from their mean (improper-like and sibling-relative
            torsions, trans peptide bonds) are centred on their circular mean and modelled as standardised
            real coordinates; the others (rotors, φ, ψ) stay on the circle.
        torsion_arc: ``(atoms, start, length)``: confine the Z-matrix torsion over ``atoms`` (four indices, either
            direction) to the arc ``[start, start + length)`` (rad): the circle its spline works on is scaled by
            ``length / 2π`` (a constant log-det) and rotated onto the arc, so every sample lies in it (the
            components of a :class:`~bgflow_sci.state_mixture.StateMixture`, see :func:`molecular_state_mixture`).
        statistics: the ``bg.build_statistics`` of an earlier build (IC ``mean``/``std`` and the ``tight``/``loose``
            torsion split) in place of ``data``: rebuilds the same architecture without the training frames
            (how a saved model is loaded).

    The returned generator records ``bg.build_statistics`` (plain lists), everything it took from ``data``.
    """
    ic = InternalCoordinates.from_mdtraj(topology, center)
    arc = None
    if torsion_arc is not None:
        atoms, start, length = torsion_arc
        if not 0 < float(length) <= 2 * math.pi:
            raise ValueError(f"torsion_arc length must lie in (0, 2π], got {length}")
        arc = (zmatrix_torsion(ic, atoms), float(start), float(length))
    if statistics is None:
        if data is None or data.dim() != 2 or data.shape[1] != ic.cartesian_dim:
            shape = None if data is None else tuple(data.shape)
            raise ValueError(f"data must have shape (n_frames, {ic.cartesian_dim}), got {shape}")
        if data.shape[0] < 2 or not torch.isfinite(data).all():
            raise ValueError("data must hold at least two frames, all finite")
        with torch.no_grad():
            z, _ = ic.to(data.device, data.dtype).inverse(data)
        stats = internal_coordinate_statistics(ic, z.cpu(), tight_torsion_std)
        dtype = data.dtype
    else:
        missing = {"mean", "std", "tight", "loose"} - set(statistics)
        if missing:
            raise ValueError(f"statistics lack {sorted(missing)}")
        stats = {k: statistics[k] for k in ("tight", "loose")}
        stats.update(mean=torch.as_tensor(statistics["mean"]), std=torch.as_tensor(statistics["std"]))
        dtype = stats["mean"].dtype
    recorded = {"mean": stats["mean"].tolist(), "std": stats["std"].tolist()}
    recorded.update(tight=list(stats["tight"]), loose=list(stats["loose"]))
    tight, loose = list(stats["tight"]), list(stats["loose"])
    if arc is not None and arc[0] in tight:  # the arc torsion stays on the circle (its spline is squeezed)
        tight.remove(arc[0])
        loose = sorted(loose + [arc[0]])
    n_bond_angle = ic.dim - len(ic.torsion_indices)
    reals = list(range(n_bond_angle)) + tight
    n_real = len(reals)
    # latent layout [bonds, angles, tight torsions | rotor torsions]; Permutation puts them in IC order
    to_ic = Permutation(ic.dim, torch.argsort(torch.tensor(reals + loose)))
    shift = torch.zeros(ic.dim, dtype=dtype)
    log_scale = torch.zeros(ic.dim, dtype=dtype)
    shift[:n_bond_angle] = stats["mean"][:n_bond_angle]
    log_scale[reals] = torch.log(stats["std"][reals].clamp_min(1e-6))
    if arc is not None:
        log_scale[arc[0]] = math.log(arc[2] / (2 * math.pi))
    destandardize = ActNorm(ic.dim)
    with torch.no_grad():
        destandardize.shift.copy_(shift)
        destandardize.log_scale.copy_(log_scale)
    destandardize.mark_initialized()
    destandardize.requires_grad_(False)
    tail = [to_ic, destandardize]
    if tight:  # centred tight torsions -> their circular mean (wrapping keeps them valid torsions)
        tail.append(CircularShift(ic.dim, tight, Domain.circle(), learnable=False, shift=stats["mean"][tight]))
    if arc is not None:  # [-length/2, length/2) -> [start, start + length), wrapped into (-π, π]
        tail.append(CircularShift(ic.dim, [arc[0]], Domain.circle(), learnable=False, shift=arc[1] + arc[2] / 2))

    domains = [Domain.real()] * n_real + [Domain.circle()] * (ic.dim - n_real)
    spline = RationalQuadraticSpline(domains, n_bins, bound)
    torsions = list(range(n_real, ic.dim))
    generator = torch.Generator().manual_seed(seed)
    layers = []
    for mask in coupling_masks(ic.dim, n_layers):
        layers.append(Coupling(ic.dim, spline, mask, hidden))
        if torsions:
            shift_by = (torch.rand(len(torsions), generator=generator) * 2 - 1) * math.pi
            layers.append(CircularShift(ic.dim, torsions, Domain.circle(), learnable=False, shift=shift_by))
    flow = Sequential(*layers, *tail, ic)
    prior = Joint(Normal(n_real), UniformBox(-math.pi, math.pi, dim=len(torsions))) if torsions else Normal(n_real)
    bg = DensityModel(prior, flow) if target is None else BoltzmannGenerator(prior, flow, target)
    bg.build_statistics = recorded
    return bg


def zmatrix_torsion(ic: InternalCoordinates, atoms: Sequence[int]) -> int:
    """Index (into the internal coordinates) of the Z-matrix torsion over ``atoms`` ``(i, j, k, l)`` or reversed."""
    atoms = tuple(int(a) for a in atoms)
    rows = [tuple(r) for r in ic.zmatrix.rows]
    for r, row in enumerate(rows):
        if row in (atoms, atoms[::-1]):
            return int(ic.torsion_indices[r])
    raise ValueError(f"torsion {atoms} is not a torsion of the Z-matrix; its torsions are {rows}")


class TorsionArcs(nn.Module):
    """State index of flat Cartesian configurations ``(batch, 3 n_atoms)`` by the arc holding one torsion.

    ``boundaries`` ``b_0 < ... < b_{K-1}`` (rad, within one turn) cut the circle into the arcs
    ``[b_k, b_{k+1})`` and the wrapping ``[b_{K-1}, b_0 + 2π)``: state ``k`` is the arc that starts at ``b_k``.
    """

    def __init__(self, atoms: Sequence[int], boundaries: Sequence[float]):
        super().__init__()
        b = torch.as_tensor(list(boundaries), dtype=torch.float64)
        if len(atoms) != 4 or b.ndim != 1 or len(b) < 1 or (b.diff() <= 0).any() or b[-1] - b[0] >= 2 * math.pi:
            raise ValueError(f"need four atoms and increasing boundaries within one turn, got {atoms}, {b.tolist()}")
        self.atoms = tuple(int(a) for a in atoms)
        self.register_buffer("boundaries", b)

    def arcs(self) -> list[tuple[float, float]]:
        """``(start, length)`` of each state's arc."""
        b = self.boundaries.tolist()
        ends = b[1:] + [b[0] + 2 * math.pi]
        return [(lo, hi - lo) for lo, hi in zip(b, ends)]

    def torsion(self, x: Tensor) -> Tensor:
        p = x.reshape(x.shape[0], -1, 3)
        return dihedral(*(p[:, a] for a in self.atoms))

    def forward(self, x: Tensor) -> Tensor:
        b = self.boundaries.to(x)
        t = torch.remainder(self.torsion(x) - b[0], 2 * math.pi) + b[0]  # in [b_0, b_0 + 2π)
        return (torch.searchsorted(b, t.contiguous(), right=True) - 1).clamp_min(0)


def molecular_state_mixture(
    topology,
    target: Energy | None,
    data: Tensor | None,
    torsion: Sequence[int],
    boundaries: Sequence[float],
    statistics: dict | None = None,
    **kwargs,
) -> StateMixture:
    """One :func:`molecular_boltzmann_generator` per arc of a Z-matrix torsion (a :class:`StateMixture`).

    ``torsion`` (four atom indices, a torsion of the Z-matrix) and ``boundaries`` define the states as in
    :class:`TorsionArcs`; component ``k`` is built from the frames of ``data`` in state ``k`` with its torsion
    confined to that arc (``torsion_arc``). Put the boundaries on free-energy barriers, where the density is
    low. ``kwargs`` go to every component. The weights start at the states' shares of ``data``; set them with
    :meth:`StateMixture.calibrate` after training. ``statistics``: the mixture's ``build_statistics`` (per-component
    statistics and the shares) in place of ``data``, as for :func:`molecular_boltzmann_generator`.
    """
    assign = TorsionArcs(torsion, boundaries)
    arcs = assign.arcs()
    if statistics is not None:
        parts = statistics["components"]
        if len(parts) != len(arcs):
            raise ValueError(f"statistics hold {len(parts)} components, the boundaries give {len(arcs)} states")
        components = [
            molecular_boltzmann_generator(
                topology, target, None, torsion_arc=(torsion, start, length), statistics=part, **kwargs
            )
            for (start, length), part in zip(arcs, parts)
        ]
        mixture = StateMixture(components, assign, statistics["shares"], target)
        mixture.build_statistics = statistics
        return mixture
    state = assign(data)
    components, shares = [], []
    for k, (start, length) in enumerate(arcs):
        frames = data[state == k]
        if len(frames) < 2:
            raise ValueError(
                f"state {k} (torsion {tuple(torsion)} in [{start:.3f}, {start + length:.3f}) rad) holds "
                f"{len(frames)} of {len(data)} frames; each state needs training frames"
            )
        components.append(
            molecular_boltzmann_generator(topology, target, frames, torsion_arc=(torsion, start, length), **kwargs)
        )
        shares.append(len(frames) / len(data))
    mixture = StateMixture(components, assign, shares, target)
    mixture.build_statistics = {"components": [c.build_statistics for c in components], "shares": shares}
    return mixture
