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

import torch
from torch import Tensor

from .bg import BoltzmannGenerator
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
from .flows.transformers import Domain


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
    data: Tensor,
    n_layers: int = 8,
    n_bins: int = 8,
    hidden: tuple[int, ...] = (128, 128),
    bound: float = 5.0,
    center: int | None = None,
    seed: int = 0,
    tight_torsion_std: float = 0.3,
) -> BoltzmannGenerator:
    """Build the Boltzmann generator of a molecule from its ``mdtraj`` topology and Cartesian training data.

    Args:
        topology: ``mdtraj.Topology`` with bonds (defines the Z-matrix).
        target: reduced energy ``u(x)`` of flat Cartesian positions in nm (or ``None`` for density only).
        data: ``(n_frames, 3 n_atoms)`` positions in nm, used only for the internal-coordinate statistics.
        n_layers, n_bins, hidden, bound: spline-coupling settings (``bound`` in standard deviations).
        center: root atom of the Z-matrix (default: the bond graph's centre).
        tight_torsion_std: torsions whose circular standard deviation in ``data`` is below this (radians)
            and that never stray more than 1.5 rad from their mean (improper-like and sibling-relative
            torsions, trans peptide bonds) are centred on their circular mean and modelled as standardised
            real coordinates; the others (rotors, φ, ψ) stay on the circle.
    """
    ic = InternalCoordinates.from_mdtraj(topology, center)
    if data.dim() != 2 or data.shape[1] != ic.cartesian_dim:
        raise ValueError(f"data must have shape (n_frames, {ic.cartesian_dim}), got {tuple(data.shape)}")
    if data.shape[0] < 2 or not torch.isfinite(data).all():
        raise ValueError("data must hold at least two frames, all finite")
    with torch.no_grad():
        z, _ = ic.to(data.device, data.dtype).inverse(data)
    z = z.cpu()
    stats = internal_coordinate_statistics(ic, z, tight_torsion_std)
    tight, loose = stats["tight"], stats["loose"]
    n_bond_angle = ic.dim - len(ic.torsion_indices)
    reals = list(range(n_bond_angle)) + tight
    n_real = len(reals)
    # latent layout [bonds, angles, tight torsions | rotor torsions]; Permutation puts them in IC order
    to_ic = Permutation(ic.dim, torch.argsort(torch.tensor(reals + loose)))
    shift = torch.zeros(ic.dim, dtype=data.dtype)
    log_scale = torch.zeros(ic.dim, dtype=data.dtype)
    shift[:n_bond_angle] = stats["mean"][:n_bond_angle]
    log_scale[reals] = torch.log(stats["std"][reals].clamp_min(1e-6))
    destandardize = ActNorm(ic.dim)
    with torch.no_grad():
        destandardize.shift.copy_(shift)
        destandardize.log_scale.copy_(log_scale)
    destandardize.initialized.fill_(True)
    destandardize.requires_grad_(False)
    tail = [to_ic, destandardize]
    if tight:  # centred tight torsions -> their circular mean (wrapping keeps them valid torsions)
        tail.append(CircularShift(ic.dim, tight, Domain.circle(), learnable=False, shift=stats["mean"][tight]))

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
    return BoltzmannGenerator(prior, flow, target)
