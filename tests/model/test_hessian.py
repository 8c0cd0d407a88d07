"""The exact Hessian: finite differences of the forces, symmetry, rows of chosen atoms, the
acoustic sum rule, ASE's Vibrations and phonopy's finite displacements on the same calculator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.constraints import FixAtoms
from ase.vibrations import Vibrations

from ase_equi import EquivariantCalculator
from ase_equi.graph.build import atoms_to_graph
from ase_equi.model.hessian import hessian_rows
from ase_equi.vibrations import hessian, phonopy_force_constants, vibrations_data


def finite_difference_hessian(atoms, calc, h=1e-4):
    """Central differences of the forces: H[:, 3i+a] = -(F(r + h e) - F(r - h e)) / 2h."""
    atoms = atoms.copy()
    atoms.calc = calc
    columns = []
    for i in range(len(atoms)):
        for a in range(3):
            forces = []
            for sign in (1, -1):
                atoms.positions[i, a] += sign * h
                forces.append(atoms.get_forces().reshape(-1))
                atoms.positions[i, a] -= sign * h
            columns.append(-(forces[0] - forces[1]) / (2 * h))
    return np.array(columns).T


@pytest.mark.parametrize("name", ["molecule", "bulk", "slab"])
def test_hessian_equals_finite_differences_of_forces(name, structure, loaded_model, calc):
    atoms = structure(name)
    exact = hessian(atoms, loaded_model)
    assert exact.shape == (3 * len(atoms), 3 * len(atoms))
    assert np.abs(exact).max() > 0.01  # a real many-body curvature, not zeros
    # central differences: error O(h²) ~ 1e-8 and rounding ~ 1e-16 / h ~ 1e-12
    np.testing.assert_allclose(exact, finite_difference_hessian(atoms, calc), rtol=0, atol=1e-6)


def test_exact_rows_are_symmetric_and_indices_give_the_same_rows(structure, loaded_model):
    atoms = structure("bulk")
    graph = atoms_to_graph(atoms, loaded_model.config.elements, loaded_model.config.r_max)
    full = hessian_rows(loaded_model.model, graph)  # unsymmetrised autograd rows
    np.testing.assert_allclose(full, full.T, rtol=0, atol=1e-10)
    picked = torch.tensor([3, 1])
    rows = hessian_rows(loaded_model.model, graph, indices=picked, rows_per_chunk=4)
    expected = full[[9, 10, 11, 3, 4, 5]]  # rows 3i + a of atoms 3 and 1, in that order
    np.testing.assert_allclose(rows, expected, rtol=0, atol=1e-12)


def test_acoustic_sum_rule_in_a_periodic_cell(structure, loaded_model):
    """A rigid translation of every atom (with its images) leaves E unchanged."""
    for name in ("bulk", "small_cell"):
        atoms = structure(name)
        n = len(atoms)
        h = hessian(atoms, loaded_model)
        assert np.abs(h).max() > 0.01
        np.testing.assert_allclose(h.reshape(3 * n, n, 3).sum(axis=1), 0.0, atol=1e-10)


def test_frequencies_equal_ase_vibrations(structure, loaded_model, calc, tmp_path):
    atoms = structure("molecule")
    atoms.calc = calc
    for indices in (None, [0, 2]):
        vib = Vibrations(atoms, indices=indices, delta=1e-4, name=str(tmp_path / f"v{indices}"))
        vib.run()
        reference = vib.get_frequencies()  # cm⁻¹ (imaginary as complex)
        ours = vibrations_data(atoms, loaded_model, indices=indices).get_frequencies()
        assert ours.shape == reference.shape
        np.testing.assert_allclose(ours, reference, rtol=0, atol=0.05)  # cm⁻¹


def test_frozen_atoms_are_left_out_as_ase_vibrations_leaves_them(
    structure, loaded_model, calc, tmp_path
):
    """``indices=None`` with a ``FixAtoms`` constraint: ASE's Vibrations displaces only the free
    atoms (an adsorbate on a frozen slab), and so must the exact Hessian's modes."""
    atoms = structure("molecule")
    atoms.set_constraint(FixAtoms(indices=[0, 1]))
    atoms.calc = calc
    vib = Vibrations(atoms, delta=1e-4, name=str(tmp_path / "frozen"))
    vib.run()
    reference = vib.get_frequencies()
    data = vibrations_data(atoms, loaded_model)
    assert data.get_indices().tolist() == list(range(2, len(atoms)))
    np.testing.assert_allclose(data.get_frequencies(), reference, rtol=0, atol=0.05)


def test_calculator_hessian_only_when_asked_and_float64_for_float32(
    structure, loaded_model, model_path
):
    atoms = structure("slab")
    calc = EquivariantCalculator(loaded_model)
    atoms.calc = calc
    atoms.get_forces()
    assert "hessian" not in calc.results
    h = calc.get_property("hessian", atoms)
    np.testing.assert_allclose(h, hessian(atoms, loaded_model), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(h, h.T)
    calc32 = EquivariantCalculator(model_path, dtype="float32")
    h32 = calc32.get_property("hessian", atoms)
    assert next(calc32.model.parameters()).dtype == torch.float32  # its own model untouched
    # computed by the file's float64 weights: the float64 Hessian, not a float32 one
    np.testing.assert_allclose(h32, h, rtol=0, atol=1e-10)


def test_bad_indices_are_refused(structure, loaded_model):
    atoms = structure("molecule")
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 5\)"):
        hessian(atoms, loaded_model, indices=[0, 5])
    with pytest.raises(ValueError, match="distinct"):
        hessian(atoms, loaded_model, indices=[1, 1])
    for bad in ([0.7], [True, False, True]):  # not cast to atom 0, nor to atoms 1, 0, 1
        with pytest.raises(ValueError, match="integer atom indices"):
            hessian(atoms, loaded_model, indices=bad)
    assert hessian(atoms, loaded_model, indices=np.array([2, 0], dtype=np.uint8)).shape == (6, 6)
    with pytest.raises(ValueError, match="dtype"):
        hessian(atoms, loaded_model, dtype="float16")


def test_phonopy_force_constants_match_finite_displacements(loaded_model, calc):
    phonopy = pytest.importorskip("phonopy", reason="phonopy not installed (extra 'phonons')")
    from phonopy.structure.atoms import PhonopyAtoms

    unit = bulk("Cu", "fcc", a=3.7)
    cell = PhonopyAtoms(
        symbols=unit.get_chemical_symbols(), cell=unit.cell.array, positions=unit.positions
    )
    phonon = phonopy.Phonopy(cell, supercell_matrix=2 * np.eye(3, dtype=int))
    phonon.generate_displacements(distance=1e-3, is_plusminus=True)
    forces = []
    for displaced in phonon.supercells_with_displacements:
        atoms = _ase(displaced)
        atoms.calc = calc
        forces.append(atoms.get_forces().copy())
    phonon.forces = forces
    phonon.produce_force_constants()
    fc = phonopy_force_constants(_ase(phonon.supercell), loaded_model)
    assert fc.shape == (8, 8, 3, 3) and np.abs(fc).max() > 0.01
    np.testing.assert_allclose(fc, phonon.force_constants, rtol=0, atol=1e-4)


def _ase(cell):
    from ase import Atoms

    return Atoms(cell.symbols, positions=cell.positions, cell=cell.cell, pbc=True)
