"""Verlet-skin neighbour lists: reused lists give exactly the edges and results of fresh ones."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units
from ase.build import bulk, fcc111, molecule
from ase.md.langevin import Langevin

from ase_equi import EquivariantCalculator
from ase_equi.neighbours import VerletNeighbourList, neighbour_list_from_atoms


def _edge_set(nl) -> set:
    edges = zip(nl.senders, nl.receivers, nl.shifts, strict=True)
    return {(int(i), int(j), *map(int, s)) for i, j, s in edges}


@pytest.mark.parametrize(
    "make",
    [
        lambda: bulk("Cu", "fcc", a=3.6) * (2, 1, 1),  # cutoff larger than the cell
        lambda: fcc111("Al", size=(2, 2, 3), vacuum=5.0),  # slab: pbc T, T, F
        lambda: molecule("CH3CH2OH"),  # no periodicity
    ],
)
def test_reused_edges_equal_a_fresh_build(make):
    atoms = make()
    cutoff, skin = 4.0, 0.6
    verlet = VerletNeighbourList(cutoff, skin)
    rng = np.random.default_rng(0)
    start = atoms.positions.copy()
    for step in range(30):
        # a random walk that sometimes exceeds skin / 2 in total
        atoms.positions += rng.normal(0.0, 0.03, atoms.positions.shape)
        got = verlet.update(atoms)
        assert _edge_set(got) == _edge_set(neighbour_list_from_atoms(atoms, cutoff)), step
        assert len(_edge_set(got)) == len(got)  # no duplicates
    moved = np.linalg.norm(atoms.positions - start, axis=1).max()
    assert moved > skin / 2  # the walk did force rebuilds ...
    assert 1 < verlet.builds < verlet.calls  # ... and reuse in between


def test_rebuild_rules():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    verlet = VerletNeighbourList(3.0, skin=0.4)
    verlet.update(atoms)
    atoms.positions[1] += [0.19, 0.0, 0.0]  # below skin / 2
    verlet.update(atoms)
    assert verlet.builds == 1
    atoms.positions[1] += [0.02, 0.0, 0.0]  # now 0.21 > 0.2 from the build
    verlet.update(atoms)
    assert verlet.builds == 2
    atoms.set_cell(atoms.cell * 1.001, scale_atoms=False)  # any cell change rebuilds
    verlet.update(atoms)
    assert verlet.builds == 3
    atoms.numbers[0] = 13  # so does a change of species
    verlet.update(atoms)
    assert verlet.builds == 4


def test_md_with_skin_is_bit_identical_to_fresh_lists(loaded_model):
    def run(skin: float):
        atoms = bulk("Cu", "fcc", a=3.65, cubic=True) * (2, 2, 1)
        atoms.numbers[::3] = 13
        calc = EquivariantCalculator(loaded_model, skin=skin)
        atoms.calc = calc
        rng = np.random.default_rng(3)
        atoms.set_momenta(rng.normal(0, 0.3, (len(atoms), 3)))
        dyn = Langevin(atoms, 4 * units.fs, temperature_K=600, friction=0.02, fixcm=False, rng=rng)
        energies, forces = [], []
        for _ in range(25):
            dyn.run(1)
            energies.append(atoms.get_potential_energy())
            forces.append(atoms.get_forces().copy())
        return np.array(energies), np.array(forces), calc.graph_source.neighbours

    e_skin, f_skin, verlet = run(1.0)
    e_fresh, f_fresh, fresh = run(0.0)
    assert verlet.builds < verlet.calls // 2  # the list was reused
    assert fresh.builds == fresh.calls  # every step rebuilt
    assert np.array_equal(e_skin, e_fresh)
    assert np.array_equal(f_skin, f_fresh)
