"""The graph's frame: far-away and unwrapped positions give the numbers of the same structure
near the origin, in float32 too.

A float32 model computes ``positions[j] − positions[i] + shifts @ cell`` in float32. Taken as
given, a molecule 10⁵ Å from the origin came out 0.16 eV/Å off (10³ Å: 2 meV/Å), and MD
positions left unwrapped (ASE does not wrap) drift that far. The graph now carries each atom
moved into the cell by whole lattice vectors and all atoms centred at zero
(:mod:`ase_equi.graph.frame`), which changes no edge vector.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk, molecule

from ase_equi import EquivariantCalculator


def results(atoms, calc, stress: bool) -> list[np.ndarray]:
    atoms.calc = calc
    got = [np.array(atoms.get_potential_energy()), atoms.get_forces()]
    return got + [atoms.get_stress()] if stress else got


@pytest.mark.parametrize("resident", [False, True])
def test_a_molecule_far_from_the_origin_keeps_its_float32_forces(resident):
    calc = EquivariantCalculator("molecules-pbe", dtype="float32", resident_graph=resident)
    near = molecule("CH3CH2OH")
    expected = results(near.copy(), calc, stress=False)
    for offset in (1e3, 1e5):
        far = near.copy()
        far.positions += offset  # exact in float64 at these offsets for this geometry
        for got, reference in zip(results(far, calc, False), expected, strict=True):
            np.testing.assert_allclose(got, reference, rtol=0, atol=1e-5)


@pytest.mark.parametrize("resident", [False, True])
def test_unwrapped_positions_keep_float32_energy_forces_and_stress(resident):
    """Every atom of a 32-atom Cu cell moved by up to ±3000 lattice vectors per direction."""
    calc = EquivariantCalculator("metals", dtype="float32", resident_graph=resident)
    wrapped = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    wrapped.rattle(0.05, seed=1)
    expected = results(wrapped.copy(), calc, stress=True)
    unwrapped = wrapped.copy()
    moves = np.random.default_rng(0).integers(-3000, 3001, (len(wrapped), 3))
    unwrapped.positions += moves @ wrapped.cell.array
    for got, reference in zip(results(unwrapped, calc, True), expected, strict=True):
        np.testing.assert_allclose(got, reference, rtol=0, atol=1e-5)
