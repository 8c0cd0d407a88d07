"""Tests of ase_equi.neighbours against ASE's neighbour list and brute-force counts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.geometry import cellpar_to_cell
from ase.neighborlist import neighbor_list as ase_neighbor_list
from helpers import random_rotation

from ase_equi.neighbours import NeighbourList, neighbour_list, neighbour_list_from_atoms

PBC_COMBINATIONS = list(itertools.product([False, True], repeat=3))


def edge_set(nl: NeighbourList) -> list[tuple[int, int, int, int, int]]:
    """Edges as a sorted list of (i, j, S_0, S_1, S_2) tuples."""
    return sorted(
        (int(i), int(j), *map(int, s))
        for i, j, s in zip(nl.senders, nl.receivers, nl.shifts, strict=True)
    )


def ase_edge_set(atoms: Atoms, cutoff: float) -> list[tuple[int, int, int, int, int]]:
    i, j, shifts = ase_neighbor_list("ijS", atoms, cutoff)
    return sorted((int(a), int(b), *map(int, s)) for a, b, s in zip(i, j, shifts, strict=True))


def edge_vectors(atoms: Atoms, nl: NeighbourList) -> np.ndarray:
    """[n_edges, 3] positions[receivers] - positions[senders] + shifts @ cell."""
    return atoms.positions[nl.receivers] - atoms.positions[nl.senders] + nl.shifts @ atoms.cell


def random_case(rng: np.random.Generator, pbc: tuple[bool, bool, bool]) -> tuple[Atoms, float]:
    """A random triclinic structure and cutoff, resampled until the comparison is robust.

    Robust means no two atoms (or images) closer than 0.3 Å and no pair distance within
    1e-5 Å of the cutoff, so that rounding cannot decide whether an edge exists.
    """
    while True:
        lengths = rng.uniform(2.0, 5.0, size=3)
        angles = rng.uniform(65.0, 115.0, size=3)
        cell = cellpar_to_cell(np.concatenate([lengths, angles]))
        if abs(np.linalg.det(cell)) < 0.5 * np.prod(lengths):
            continue  # too flat a cell for a "reasonable" test case
        if rng.random() < 0.3:  # random rotation: cell vectors no longer aligned with x
            cell = cell @ random_rotation(rng)
        n_atoms = int(rng.integers(1, 13))
        low, high = (0.0, 1.0) if rng.random() < 0.5 else (-1.5, 2.5)
        positions = rng.uniform(low, high, size=(n_atoms, 3)) @ cell
        cutoff = float(rng.uniform(0.5, 1.6) * lengths.min())
        if rng.random() < 0.3:  # some zero cell vectors along non-periodic directions
            cell[~np.array(pbc)] = 0.0
        atoms = Atoms(f"H{n_atoms}", positions=positions, cell=cell, pbc=pbc)
        distances = ase_neighbor_list("d", atoms, cutoff + 1e-3)
        if distances.size and (distances.min() < 0.3 or np.abs(distances - cutoff).min() < 1e-5):
            continue
        return atoms, cutoff


@pytest.mark.parametrize("seed", range(8))
def test_agrees_with_ase_on_random_structures(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    for case in range(16):  # 8 seeds x 16 cases = 128 cases, every pbc combination 16 times
        pbc = PBC_COMBINATIONS[case % 8]
        atoms, cutoff = random_case(rng, pbc)
        nl = neighbour_list_from_atoms(atoms, cutoff)
        assert edge_set(nl) == ase_edge_set(atoms, cutoff), f"seed {seed}, case {case}"
        d_nc = edge_vectors(atoms, nl)
        assert np.all(np.linalg.norm(d_nc, axis=1) < cutoff)
        assert np.all(nl.shifts[:, ~atoms.pbc] == 0)
        # Same vectors as ASE's D, matched edge by edge after sorting.
        i, j, shifts, d_ase = ase_neighbor_list("ijSD", atoms, cutoff)
        ours = np.lexsort((*nl.shifts.T[::-1], nl.receivers, nl.senders))
        theirs = np.lexsort((*shifts.T[::-1], j, i))
        np.testing.assert_allclose(d_nc[ours], d_ase[theirs], atol=1e-9)


def test_cutoff_larger_than_cell_gives_many_images() -> None:
    atoms = Atoms("H2", positions=[[0, 0, 0], [0.7, 0.9, 1.1]], cell=[2.0, 2.1, 2.2], pbc=True)
    nl = neighbour_list_from_atoms(atoms, 5.05)
    assert edge_set(nl) == ase_edge_set(atoms, 5.05)
    assert np.abs(nl.shifts).max() >= 2
    pairs = set(zip(nl.senders.tolist(), nl.receivers.tolist(), strict=True))
    assert (0, 0) in pairs and (1, 1) in pairs  # self-images


def test_returns_int64_c_contiguous_arrays() -> None:
    atoms = molecule("CH4")
    nl = neighbour_list_from_atoms(atoms, 3.0)
    for array in (nl.senders, nl.receivers, nl.shifts):
        assert array.dtype == np.int64
        assert array.flags["C_CONTIGUOUS"]
    assert nl.shifts.shape == (len(nl), 3)
    assert len(nl) == 5 * 4  # every atom of methane within 3 Å of every other


def test_list_is_symmetric() -> None:
    atoms, cutoff = random_case(np.random.default_rng(7), (True, False, True))
    edges = set(edge_set(neighbour_list_from_atoms(atoms, cutoff)))
    assert edges == {(j, i, -a, -b, -c) for i, j, a, b, c in edges}


def test_strict_cutoff_excludes_pair_at_exactly_cutoff() -> None:
    positions = np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0]])
    assert len(neighbour_list(positions, np.zeros((3, 3)), [False] * 3, 1.5)) == 0
    assert len(neighbour_list(positions, np.zeros((3, 3)), [False] * 3, 1.5000001)) == 2


@pytest.mark.parametrize(
    ("cell", "pbc"),
    [
        ([10.0, 10.0, 0.0], (True, True, False)),
        ([6.0, 0.0, 0.0], (True, False, False)),
        (np.zeros((3, 3)), (False, False, False)),
    ],
)
def test_zero_cell_vectors_in_non_periodic_directions(cell: object, pbc: tuple) -> None:
    rng = np.random.default_rng(3)
    positions = rng.uniform(-2.0, 8.0, size=(10, 3))
    atoms = Atoms("H10", positions=positions, cell=cell, pbc=pbc)
    nl = neighbour_list_from_atoms(atoms, 4.0)
    assert len(nl) > 0
    assert edge_set(nl) == ase_edge_set(atoms, 4.0)
    assert np.all(nl.shifts[:, ~np.array(pbc)] == 0)


def test_triclinic_slab_with_periodic_vectors_tilted_out_of_plane() -> None:
    # Periodic vectors have z components; the third vector is zero. Images along a and b move
    # the atoms in z too, and no shift may appear along the non-periodic direction.
    cell = np.array([[3.0, 0.0, 1.0], [0.8, 2.9, -0.7], [0.0, 0.0, 0.0]])
    positions = np.array([[0.1, 0.2, 0.3], [1.5, 1.1, -0.4], [2.2, 2.5, 1.9], [0.4, 2.0, 5.0]])
    atoms = Atoms("H4", positions=positions, cell=cell, pbc=(True, True, False))
    nl = neighbour_list_from_atoms(atoms, 4.5)
    assert edge_set(nl) == ase_edge_set(atoms, 4.5)
    assert np.all(nl.shifts[:, 2] == 0)
    assert np.all(np.linalg.norm(edge_vectors(atoms, nl), axis=1) < 4.5)


def test_molecule_far_from_origin_has_same_edges() -> None:
    atoms = molecule("C6H6")
    far = atoms.copy()
    far.translate(1e4 / np.sqrt(3.0) * np.ones(3))
    assert edge_set(neighbour_list_from_atoms(far, 5.0)) == edge_set(
        neighbour_list_from_atoms(atoms, 5.0)
    )


def test_unwrapped_positions_shift_by_the_lattice_offset() -> None:
    # Moving atom k by n_k lattice vectors must change the shift of edge (i, j) by n_i - n_j
    # (so the edge vector is unchanged), even far outside the cell.
    rng = np.random.default_rng(11)
    atoms, cutoff = random_case(rng, (True, True, False))
    offsets = rng.integers(-1000, 1000, size=(len(atoms), 3))
    offsets[:, 2] = 0
    moved = atoms.copy()
    moved.positions += offsets @ atoms.cell
    expected = sorted(
        (i, j, *(np.array(s) + offsets[i] - offsets[j]).tolist())
        for i, j, *s in edge_set(neighbour_list_from_atoms(atoms, cutoff))
    )
    nl = neighbour_list_from_atoms(moved, cutoff)
    assert edge_set(nl) == expected
    np.testing.assert_allclose(
        np.linalg.norm(edge_vectors(moved, nl), axis=1).max(), cutoff, atol=cutoff
    )


def test_single_atom_in_small_periodic_cell_sees_its_images() -> None:
    cell = cellpar_to_cell([2.1, 2.4, 2.7, 80.0, 95.0, 105.0])
    cutoff = 5.3
    # Brute force: every lattice vector S @ cell shorter than the cutoff, S != 0. The range
    # bound follows from |S_k| <= cutoff / (spacing of the lattice planes k).
    spacings = 1.0 / np.linalg.norm(np.linalg.inv(cell), axis=0)
    bound = int(np.ceil(cutoff / spacings.min()))
    span = range(-bound, bound + 1)
    images = {s for s in itertools.product(span, span, span) if any(s)}
    images = {s for s in images if np.linalg.norm(np.array(s) @ cell) < cutoff}
    assert all(abs(np.linalg.norm(np.array(s) @ cell) - cutoff) > 1e-3 for s in images)
    atoms = Atoms("Cu", positions=[[0.3, -0.2, 0.1]], cell=cell, pbc=True)
    nl = neighbour_list_from_atoms(atoms, cutoff)
    assert len(nl) == len(images) > 26
    assert {tuple(s) for s in nl.shifts.tolist()} == images
    assert np.all(nl.senders == 0) and np.all(nl.receivers == 0)


def test_single_atom_without_periodicity_has_no_edges() -> None:
    nl = neighbour_list(np.array([[1e4, -3.0, 2.0]]), np.zeros((3, 3)), [False] * 3, 5.0)
    assert len(nl) == 0 and nl.shifts.shape == (0, 3)


def test_zero_atoms() -> None:
    nl = neighbour_list(np.zeros((0, 3)), 3.0 * np.eye(3), [True] * 3, 5.0)
    assert len(nl) == 0
    assert nl.senders.dtype == np.int64 and nl.shifts.shape == (0, 3)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_position_names_the_atom(bad: float) -> None:
    positions = np.zeros((4, 3))
    positions[:, 0] = np.arange(4.0)
    positions[2, 1] = bad
    with pytest.raises(ValueError, match="NaN or infinity at atom 2"):
        neighbour_list(positions, np.eye(3) * 10.0, [True] * 3, 3.0)


def test_zero_periodic_cell_vector_is_an_error() -> None:
    with pytest.raises(ValueError, match="cell vector 1 is zero but direction 1 is periodic"):
        neighbour_list(np.zeros((1, 3)), np.diag([5.0, 0.0, 5.0]), [True, True, False], 3.0)


def test_linearly_dependent_periodic_vectors_are_an_error() -> None:
    cell = np.array([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [3.0, 3.0, 0.0]])
    with pytest.raises(ValueError, match="zero volume"):
        neighbour_list(np.zeros((1, 3)), cell, [True] * 3, 3.0)
    collinear = np.array([[3.0, 0.0, 0.0], [-6.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    with pytest.raises(ValueError, match="zero volume"):
        neighbour_list(np.zeros((1, 3)), collinear, [True, True, False], 3.0)


@pytest.mark.parametrize("cutoff", [0.0, -1.0, np.nan, np.inf])
def test_bad_cutoff_is_an_error(cutoff: float) -> None:
    with pytest.raises(ValueError, match="cutoff must be finite and positive"):
        neighbour_list(
            np.zeros((2, 3)) + [[0, 0, 0], [1, 0, 0]], np.zeros((3, 3)), [False] * 3, cutoff
        )


def test_coincident_atoms_are_an_error() -> None:
    positions = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [2.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="atoms 1 and 3 are at the same position"):
        neighbour_list(positions, np.zeros((3, 3)), [False] * 3, 2.0)


def test_atom_on_periodic_image_of_another_is_an_error() -> None:
    cell = np.array([[4.0, 0.0, 0.0], [1.0, 4.0, 0.0], [0.0, 0.0, 4.0]])
    positions = np.array([[0.5, 0.5, 0.5], [2.0, 2.0, 2.0], [0.5, 0.5, 0.5] + cell[1]])
    with pytest.raises(ValueError, match="atoms 0 and 2 are at the same position.*periodic"):
        neighbour_list(positions, cell, [True] * 3, 2.0)
