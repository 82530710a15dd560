"""A Boltzmann generator for a molecule: spline couplings in internal coordinates, Cartesian output.

Forward (latent -> sample)::

    z = [reals (bonds, angles; standardised), torsions on the circle]   ~  N(0, 1) × Uniform(-π, π)
      -> rational-quadratic spline couplings (torsions as circle coordinates, seams shifted)
      -> fixed de-standardisation of bonds and angles (statistics of the training data)
      -> internal -> Cartesian (exact log volume, global rotation/translation removed)   x in nm

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
from .flows import ActNorm, CircularShift, Coupling, InternalCoordinates, RationalQuadraticSpline, Sequential
from .flows.transformers import Domain


def coupling_masks(dim: int, n_layers: int) -> list[Tensor]:
    """Alternate first/second half and even/odd masks, so every pair of coordinates conditions on each other."""
    idx = torch.arange(dim)
    patterns = [idx < dim // 2, idx >= dim // 2, idx % 2 == 0, idx % 2 == 1]
    return [patterns[i % 4] for i in range(n_layers)]


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
) -> BoltzmannGenerator:
    """Build the Boltzmann generator of a molecule from its ``mdtraj`` topology and Cartesian training data.

    Args:
        topology: ``mdtraj.Topology`` with bonds (defines the Z-matrix).
        target: reduced energy ``u(x)`` of flat Cartesian positions in nm (or ``None`` for density only).
        data: ``(n_frames, 3 n_atoms)`` positions in nm, used only for the bond/angle statistics.
        n_layers, n_bins, hidden, bound: spline-coupling settings (``bound`` in standard deviations).
    """
    ic = InternalCoordinates.from_mdtraj(topology, center)
    if data.dim() != 2 or data.shape[1] != ic.cartesian_dim:
        raise ValueError(f"data must have shape (n_frames, {ic.cartesian_dim}), got {tuple(data.shape)}")
    if data.shape[0] < 2 or not torch.isfinite(data).all():
        raise ValueError("data must hold at least two frames, all finite")
    with torch.no_grad():
        z, _ = ic.to(data.device, data.dtype).inverse(data)
    n_real = ic.dim - len(ic.torsion_indices)
    shift = torch.zeros(ic.dim, dtype=data.dtype)
    log_scale = torch.zeros(ic.dim, dtype=data.dtype)
    shift[:n_real] = z[:, :n_real].mean(0).cpu()
    log_scale[:n_real] = torch.log(z[:, :n_real].std(0).cpu().clamp_min(1e-6))
    destandardize = ActNorm(ic.dim)
    with torch.no_grad():
        destandardize.shift.copy_(shift)
        destandardize.log_scale.copy_(log_scale)
    destandardize.initialized.fill_(True)
    destandardize.requires_grad_(False)

    domains = [Domain.real()] * n_real + [Domain.circle()] * (ic.dim - n_real)
    spline = RationalQuadraticSpline(domains, n_bins, bound)
    torsions = list(range(n_real, ic.dim))
    generator = torch.Generator().manual_seed(seed)
    layers = []
    for mask in coupling_masks(ic.dim, n_layers):
        layers.append(Coupling(ic.dim, spline, mask, hidden))
        shift_by = (torch.rand(len(torsions), generator=generator) * 2 - 1) * math.pi
        layers.append(CircularShift(ic.dim, torsions, Domain.circle(), learnable=False, shift=shift_by))
    flow = Sequential(*layers, destandardize, ic)
    prior = Joint(Normal(n_real), UniformBox(-math.pi, math.pi, dim=ic.dim - n_real))
    return BoltzmannGenerator(prior, flow, target)
