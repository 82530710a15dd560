"""Ice XI of rigid TIP4P-Ew: the generated crystal (ice rules, Cmc2₁ mirror planes, polarisation along c), and
energies of rigid-body states equal to OpenMM's on the same atoms (Reference platform), forces against finite
differences, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bgflow_sci.energies import OpenMMEnergy, RigidBodyEnergy, ice_xi, tip4p_ew_ice, tip4p_ew_water
from bgflow_sci.energies.ice import dipole_direction, rigid_state_from_atoms
from bgflow_sci.energies.rigid import TIP4P_EW_M_WEIGHTS
from tests.conftest import require

require("openmm")


@pytest.fixture(scope="module")
def ice16():
    return tip4p_ew_ice((2, 1, 1))


def _perturbed(ice, batch: int, seed: int = 0, dr: float = 0.01, dq: float = 0.04) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = ice.n_molecules
    x = ice.state.repeat(batch, 1)
    x[:, : 3 * n] += dr * torch.randn(batch, 3 * n, generator=g, dtype=torch.float64)
    q = x[:, 3 * n :].reshape(batch, n, 4) + dq * torch.randn(batch, n, 4, generator=g, dtype=torch.float64)
    x[:, 3 * n :] = (q / q.norm(dim=-1, keepdim=True)).reshape(batch, 4 * n)
    return x


@pytest.mark.parametrize("cells,n", [((2, 1, 1), 16), ((4, 2, 2), 128)])
def test_lattice_box_ice_rules_and_polarisation(cells, n):
    lattice = ice_xi(cells)
    assert lattice.n_molecules == n
    np.testing.assert_allclose(lattice.box, np.array(cells) * np.array([0.449, 0.778, 0.734]))
    a = lattice.atoms
    oh = np.linalg.norm(a[:, 1:3] - a[:, :1], axis=-1)
    np.testing.assert_allclose(oh, 0.09572, atol=1e-12)
    # every H points at a neighbouring O (donated bond) and every O receives exactly two H (ice rules)
    box = lattice.box
    received = np.zeros(n, dtype=int)
    for i in range(n):
        for h in (1, 2):
            d = a[:, 0] - a[i, h]
            d -= box * np.round(d / box)
            dist = np.linalg.norm(d, axis=-1)
            dist[i] = np.inf
            j = int(np.argmin(dist))
            assert 0.17 < dist[j] < 0.19  # ~ 0.2753 nm O-O minus the O-H length along the bond
            received[j] += 1
    assert np.all(received == 2)
    # Cmc2₁: every molecule lies in a mirror plane x = const (both H at the O's x, or a mirror pair about it)
    dx = a[:, 1:3, 0] - a[:, :1, 0]
    in_plane = np.all(np.abs(dx) < 1e-12, axis=1)
    mirrored = (np.abs(dx[:, 0] + dx[:, 1]) < 1e-12) & (np.abs(a[:, 1, 1:] - a[:, 2, 1:]).max(1) < 1e-12)
    assert np.all(in_plane | mirrored) and in_plane.sum() == n // 2
    np.testing.assert_allclose(dipole_direction(lattice), [0, 0, 1], atol=1e-12)
    # virtual site M of TIP4P-Ew
    w = TIP4P_EW_M_WEIGHTS
    np.testing.assert_allclose(a[:, 3], w[0] * a[:, 0] + w[1] * a[:, 1] + w[2] * a[:, 2], atol=1e-14)


def test_crystal_state_round_trips_to_the_atoms(ice16):
    atoms = ice16.molecule.to_atoms(ice16.state[:, :48], ice16.state[:, 48:])
    np.testing.assert_allclose(atoms.numpy().reshape(-1, 3), ice16.positions, atol=1e-12)
    back = rigid_state_from_atoms(ice16, atoms)
    torch.testing.assert_close(ice16.molecule.to_atoms(back[:, :48], back[:, 48:]), atoms, atol=1e-12, rtol=0)


def _openmm_reference_energies(ice, atoms: np.ndarray) -> np.ndarray:
    import openmm
    from openmm import unit

    context = openmm.Context(ice.system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference"))
    energies = []
    for frame in atoms:
        real = frame.reshape(-1, 4, 3).copy()
        real[:, 3] = real[:, 0]  # garbage M: OpenMM places the virtual site itself
        context.setPositions(real.reshape(-1, 3))
        context.computeVirtualSites()
        energies.append(context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    return np.array(energies)


def test_rigid_state_energies_equal_openmm_on_the_same_atoms(ice16):
    x = _perturbed(ice16, 6)
    energy = ice16.energy(250.0, platform="Reference")
    u = energy.energy(x)
    atoms = energy.atoms(x).numpy()
    expected = _openmm_reference_energies(ice16, atoms) / energy.atom_energy.kt
    np.testing.assert_allclose(u.numpy(), expected, rtol=1e-10, atol=1e-8)
    assert torch.all(u < 0)  # a bound crystal


def test_rigid_state_energy_128_molecules_equals_openmm():
    ice = tip4p_ew_ice((4, 2, 2))
    assert ice.cutoff_nm == pytest.approx(0.734)
    x = _perturbed(ice, 1, seed=1)
    energy = ice.energy(100.0, platform="Reference")
    expected = _openmm_reference_energies(ice, energy.atoms(x).numpy()) / energy.atom_energy.kt
    np.testing.assert_allclose(energy.energy(x).numpy(), expected, rtol=1e-10)


def test_forces_match_finite_differences(ice16):
    x = _perturbed(ice16, 2, seed=2)
    energy = ice16.energy(250.0, platform="Reference")
    _, force = energy.energy_and_force(x)
    g = torch.Generator().manual_seed(5)
    h = 1e-6
    for part in (slice(0, 48), slice(48, 112)):
        d = torch.zeros_like(x[:1])
        d[:, part] = torch.randn(1, part.stop - part.start, generator=g, dtype=torch.float64)
        if part.start == 48:  # tangent to every quaternion
            q, v = x[:1, 48:].reshape(16, 4), d[:, 48:].reshape(16, 4)
            d[:, 48:] = (v - (v * q).sum(-1, keepdim=True) * q).reshape(1, 64)
        fd = (energy.energy(x[:1] + h * d) - energy.energy(x[:1] - h * d)) / (2 * h)
        assert fd.item() == pytest.approx(-(force[:1] * d).sum().item(), rel=1e-5, abs=1e-4)


def test_virtual_sites_get_zero_force_and_follow_their_parents(ice16):
    energy = OpenMMEnergy(ice16.system, 250.0)
    atoms = torch.as_tensor(ice16.positions.reshape(1, -1)).clone()
    u0, f0 = energy.energy_and_force(atoms)
    assert f0.reshape(16, 4, 3)[:, 3].abs().max() == 0
    moved = atoms.clone().reshape(16, 4, 3)
    moved[:, 3] += 0.01  # a wrong M is replaced by OpenMM's
    torch.testing.assert_close(energy.energy(moved.reshape(1, -1)), u0)


def test_bad_states_are_rejected_or_infinite(ice16):
    energy = ice16.energy(250.0, platform="Reference")
    x = ice16.state.clone()
    zero = x.clone()
    zero[:, 48:52] = 0.0
    before = int(energy.n_invalid)
    assert torch.isinf(energy.energy(zero)).all() and int(energy.n_invalid) == before + 1
    with pytest.raises(ValueError, match="norm"):
        energy.energy(torch.cat([x[:, :48], 1.1 * x[:, 48:]], dim=1))
    with pytest.raises(ValueError, match="atom energy has dim"):
        RigidBodyEnergy(energy.atom_energy, tip4p_ew_water(), 15)
    with pytest.raises(ValueError, match="cutoff_nm"):
        tip4p_ew_ice(cutoff_nm=0.5)
    with pytest.raises(ValueError, match="cells"):
        ice_xi((0, 1, 1))


@pytest.mark.parametrize("cells,count", [((2, 1, 1), 4), ((4, 2, 2), 32)])
def test_lattice_translations_map_the_ordered_crystal_onto_itself_and_keep_energies(cells, count):
    from bgflow_sci.energies import CrystalSymmetry

    ice = tip4p_ew_ice(cells)
    n = ice.n_molecules
    sym = CrystalSymmetry.find(ice.state, ice.box, ice.molecule)
    # Cmc2₁ is C-centred: 2 lattice points per orthorhombic cell, protons included
    assert len(sym) == count == 2 * int(np.prod(cells))
    assert torch.equal(sym.permutations[0], torch.arange(n))
    box = torch.as_tensor(ice.box)
    for k in range(len(sym)):
        y = sym.apply(ice.state, k)
        d = (y[:, : 3 * n] - ice.state[:, : 3 * n]).reshape(n, 3) + sym.shifts[k]  # the crystal moved by -t
        assert (d - box * torch.round(d / box)).abs().max() < 1e-9
        overlap = (y[:, 3 * n :].reshape(n, 4) * ice.state[:, 3 * n :].reshape(n, 4)).sum(-1).abs()
        assert (overlap - 1).abs().max() < 1e-9
    if n == 16:  # energies of perturbed states are invariant (OpenMM on the relabelled atoms)
        x = _perturbed(ice, 3)
        energy = ice.energy(250.0)
        u = energy.energy(x)
        images = sym.augment(x)
        assert images.shape == (len(sym) * 3, 7 * n)
        # OpenMM's CPU platform sums in mixed precision, and relabelling atoms reorders the sums: ~1e-8 relative;
        # a wrong image moves the energy by kT or more
        torch.testing.assert_close(energy.energy(images), u.repeat(len(sym)), rtol=1e-6, atol=1e-6)


def test_a_translation_that_breaks_the_proton_order_is_not_a_symmetry():
    from bgflow_sci.energies import CrystalSymmetry

    ice = tip4p_ew_ice((2, 1, 1))
    # without the water's C2 (H1 <-> H2) the a-translation does not match two molecules' labels
    assert len(CrystalSymmetry.find(ice.state, ice.box, molecule=None)) < 4
    flipped = ice.state.clone()
    n = ice.n_molecules
    flipped[0, 3 * n : 3 * n + 4] = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)  # one molecule turned
    assert len(CrystalSymmetry.find(flipped, ice.box, ice.molecule)) < 4
