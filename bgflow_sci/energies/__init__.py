"""Reduced energies ``u(x)`` in kT: the Energy protocol (energy and force), the systems built on it, and the
interpolated energy ``u_λ`` of stochastic flows and annealing."""

from .base import BiasedEnergy, Energy, FunctionEnergy, ScaledEnergy, as_energy
from .double_well import DoubleWell2D
from .forcefield import TorchForceField
from .gmm import GaussianMixture, GaussianMixture40
from .ice import IceXI, ice_xi, tip4p_ew_ice
from .interpolated import InterpolatedEnergy
from .many_well import ManyWell, ManyWell32
from .muller_brown import MuellerBrown
from .openmm import OpenMMEnergy
from .particles import DW4, LJ13, DoubleWellParticles, LennardJonesCluster, PairwiseParticleEnergy
from .phase_space import PhaseSpaceEnergy
from .rigid import CrystalSymmetry, RigidBodyEnergy, RigidMolecule, tetrahedron, tip4p_ew_water
from .tetrahedra import TetrahedraInField, orientational_log_z

__all__ = [
    "IceXI",
    "CrystalSymmetry",
    "RigidBodyEnergy",
    "ice_xi",
    "tip4p_ew_ice",
    "RigidMolecule",
    "TetrahedraInField",
    "orientational_log_z",
    "tetrahedron",
    "tip4p_ew_water",
    "Energy",
    "FunctionEnergy",
    "InterpolatedEnergy",
    "ScaledEnergy",
    "BiasedEnergy",
    "as_energy",
    "DoubleWell2D",
    "GaussianMixture",
    "GaussianMixture40",
    "ManyWell",
    "ManyWell32",
    "MuellerBrown",
    "OpenMMEnergy",
    "PairwiseParticleEnergy",
    "DoubleWellParticles",
    "DW4",
    "LennardJonesCluster",
    "LJ13",
    "TorchForceField",
    "PhaseSpaceEnergy",
]
