"""The device-side neighbour list finds exactly the edges of the matscipy-based list."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk, fcc111, molecule
from conftest import STRUCTURES, make_structure

from ase_equi.neighbours import neighbour_list_from_atoms
from ase_equi.neighbours.device import _batches, device_neighbour_list


def _edges(senders, receivers, shifts) -> list:
    rows = zip(np.asarray(senders), np.asarray(receivers), np.asarray(shifts), strict=True)
    return sorted((int(i), int(j), *map(int, s)) for i, j, s in rows)


CASES = {
    **{name: (lambda name=name: make_structure(name)) for name in STRUCTURES},
    "cu_supercell": lambda: bulk("Cu", "fcc", a=3.6, cubic=True).repeat(3),
    "cutoff_beyond_cell": lambda: bulk("Cu", "fcc", a=3.6),  # 1 atom, cutoff ≫ cell
    "slab_pbc_TTF": lambda: fcc111("Al", size=(2, 2, 3), vacuum=5.0),
    "ethanol_far_away": lambda: _translated(molecule("CH3CH2OH"), 1e4),
}


def _translated(atoms, distance):
    atoms.positions += distance
    return atoms


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("cutoff", [3.5, 7.3])
def test_same_edges_as_the_host_list(name, cutoff):
    atoms = CASES[name]()
    atoms.rattle(0.05, seed=11)
    expected = neighbour_list_from_atoms(atoms, cutoff)
    got = device_neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    assert _edges(*got) == _edges(expected.senders, expected.receivers, expected.shifts)


def test_small_batches_give_the_same_edges(monkeypatch):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    whole = _edges(*device_neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, 5.0))
    monkeypatch.setattr("ase_equi.neighbours.device.PAIRS_PER_BATCH", 50)
    batched = _edges(*device_neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, 5.0))
    assert batched == whole


def test_batches_cover_all_atoms_once():
    assert _batches([5, 10, 30, 31], 10) == [(0, 2), (2, 3), (3, 4)]
    assert _batches([100], 10) == [(0, 1)]


def test_errors_name_the_problem():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    positions = atoms.positions.copy()
    positions[1] = positions[0]
    with pytest.raises(ValueError, match="same position"):
        device_neighbour_list(positions, atoms.cell.array, atoms.pbc, 3.0)
    positions[1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        device_neighbour_list(positions, atoms.cell.array, atoms.pbc, 3.0)
    with pytest.raises(ValueError, match="zero"):
        device_neighbour_list(atoms.positions, np.zeros((3, 3)), [True] * 3, 3.0)
