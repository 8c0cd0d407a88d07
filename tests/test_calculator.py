"""EquivariantCalculator follows ASE's calculator contract and works inside ASE's tools.

Contract: class-level ``implemented_properties``; ``free_energy`` equal to ``energy`` (the model
has no electronic temperature); forces ``(n_atoms, 3)`` even for one atom, stress ``(6,)``,
per-atom energies ``(n_atoms,)``; results cached per geometry through ``check_state``; stress
only for a cell of rank 3 (``PropertyNotImplementedError`` otherwise, as ASE's EMT).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.lj import LennardJones
from ase.calculators.mixing import SumCalculator
from ase.filters import FrechetCellFilter
from ase.md.langevin import Langevin
from ase.md.nose_hoover_chain import IsotropicMTKNPT
from ase.md.nptberendsen import NPTBerendsen
from ase.md.velocitydistribution import thermalize_momenta
from ase.optimize import BFGS
from conftest import ELEMENTS, R_MAX

from ase_equi import EquivariantCalculator
from ase_equi.graph import atoms_to_graph, batch_graphs
from ase_equi.model.gradients import energy_forces_stress


def test_implemented_properties(calc):
    assert set(EquivariantCalculator.implemented_properties) == {
        "energy",
        "free_energy",
        "energies",
        "forces",
        "stress",
        "hessian",
    }
    assert set(calc.implemented_properties) == set(EquivariantCalculator.implemented_properties)


@pytest.mark.parametrize("name", ["bulk", "molecule"])
def test_free_energy_equals_energy(name, structure, calc):
    atoms = structure(name)
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    assert atoms.get_potential_energy(force_consistent=True) == energy
    assert calc.get_property("free_energy", atoms) == energy


def test_shapes_one_atom_periodic(structure, calc):
    """One atom in a periodic cell: forces (1, 3) (never squeezed), stress (6,), energies (1,)."""
    atoms = structure("one_atom")
    atoms.calc = calc
    assert isinstance(atoms.get_potential_energy(), float)
    assert atoms.get_forces().shape == (1, 3)
    assert atoms.get_stress().shape == (6,)
    assert atoms.get_stress(voigt=False).shape == (3, 3)
    assert atoms.get_potential_energies().shape == (1,)
    # a Bravais lattice is centrosymmetric about every atom: the force vanishes by symmetry
    np.testing.assert_allclose(atoms.get_forces(), 0.0, atol=1e-12)


def test_shapes_isolated_atom(calc):
    """One atom in vacuum (no neighbours at all): forces (1, 3) and exactly zero, E finite."""
    atoms = Atoms("Cu", positions=[[0.0, 0.0, 0.0]])
    atoms.calc = calc
    assert np.isfinite(atoms.get_potential_energy())
    assert atoms.get_forces().shape == (1, 3)
    assert atoms.get_forces().tolist() == [[0.0, 0.0, 0.0]]
    assert atoms.get_potential_energies().shape == (1,)


@pytest.mark.parametrize("name", ["bulk", "slab", "molecule"])
def test_shapes(name, structure, calc):
    atoms = structure(name)
    atoms.calc = calc
    assert atoms.get_forces().shape == (len(atoms), 3)
    assert atoms.get_potential_energies().shape == (len(atoms),)
    if atoms.cell.rank == 3:
        assert atoms.get_stress().shape == (6,)


# ---------------------------------------------------------------------------------------------
# Caching: one model evaluation per geometry


@pytest.mark.parametrize(
    "order",
    [
        ("energy", "forces", "energies"),
        ("forces", "energy", "energies"),
        ("energies", "forces", "energy"),
    ],
    ids=lambda order: "-".join(order),
)
def test_one_model_call_per_geometry(order, structure, calc):
    """Energy, forces and per-atom energies of one geometry cost one model evaluation, in any
    order in which a user (or an optimiser) asks for them, once forces have been asked (the
    first geometry may cost two calls when energy comes first: energy-only is cheaper)."""
    atoms = structure("bulk")
    atoms.calc = calc
    getters = {
        "energy": atoms.get_potential_energy,
        "forces": atoms.get_forces,
        "energies": atoms.get_potential_energies,
    }
    for geometry in range(3):
        atoms.positions[0, 0] += 0.01
        before = calc.model_calls
        for name in order:
            getters[name]()
        first_costs = 2 if order.index("forces") > 0 else 1
        expected = first_costs if geometry == 0 else 1
        assert calc.model_calls - before == expected, f"geometry {geometry}: {order}"


def test_energy_only_use_never_computes_forces(structure, make_calc):
    atoms = structure("bulk")
    calc = make_calc()
    atoms.calc = calc
    for _ in range(3):
        atoms.positions[0, 0] += 0.01
        energy = atoms.get_potential_energy()
        assert "forces" not in calc.results
        fresh = atoms.copy()
        fresh.calc = make_calc()
        fresh.get_forces()
        assert energy == pytest.approx(fresh.get_potential_energy(), rel=1e-12, abs=1e-12)
    atoms.get_forces()  # asked once: from now on every pass has forces
    atoms.positions[0, 0] += 0.01
    atoms.get_potential_energy()
    assert "forces" in calc.results


def test_stress_once_then_every_pass(structure, make_calc):
    """After stress has been asked once, every later pass also computes stress, so each new
    geometry costs one evaluation for energy + forces + stress; and that stress is right."""
    atoms = structure("bulk")
    calc = make_calc()
    atoms.calc = calc
    atoms.get_stress()
    for _ in range(3):
        atoms.positions[1] += [0.01, -0.02, 0.005]
        atoms.set_cell(atoms.cell.array * 1.001, scale_atoms=True)
        before = calc.model_calls
        atoms.get_potential_energy()
        atoms.get_forces()
        stress = atoms.get_stress()
        atoms.get_potential_energies()
        assert calc.model_calls - before == 1
        fresh = atoms.copy()
        fresh.calc = make_calc()
        np.testing.assert_array_equal(stress, fresh.get_stress())


def test_new_geometry_triggers_recomputation(structure, calc):
    """Positions, cell, atomic numbers and pbc are state (ASE's check_state); same state: cached."""
    atoms = structure("bulk")
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    calls = calc.model_calls
    assert atoms.get_potential_energy() == energy and calc.model_calls == calls

    changes = {
        "positions": lambda a: a.positions.__setitem__((2, 1), a.positions[2, 1] + 0.05),
        "cell": lambda a: a.set_cell(a.cell.array * 1.01, scale_atoms=False),
        "numbers": lambda a: a.numbers.__setitem__(1, ELEMENTS[0] if a.numbers[1] != 13 else 29),
        "pbc": lambda a: a.set_pbc([True, True, False]),
    }
    for what, change in changes.items():
        change(atoms)
        new_energy = atoms.get_potential_energy()
        assert calc.model_calls == calls + 1, what
        assert new_energy != energy, what
        reference = atoms.copy()
        reference.calc = EquivariantCalculator(calc.loaded)
        assert new_energy == reference.get_potential_energy(), what
        energy, calls = new_energy, calc.model_calls


def test_todict_is_json_serialisable(model_path, calc):
    for calculator in (calc, EquivariantCalculator(model_path, dtype="float32")):
        parameters = calculator.todict()
        assert json.loads(json.dumps(parameters)) == parameters
        assert "model" in parameters


# ---------------------------------------------------------------------------------------------
# Inside ASE's tools


def test_sum_calculator_adds_energies_forces_stress(structure, make_calc):
    """SumCalculator(ours, Lennard-Jones) returns the sum of what each gives alone."""
    atoms = structure("bulk")

    def lennard_jones() -> LennardJones:
        return LennardJones(sigma=2.3, epsilon=0.05, rc=5.0, smooth=True)

    results = []
    for calculator in (make_calc(), lennard_jones()):
        alone = atoms.copy()
        alone.calc = calculator
        results.append((alone.get_potential_energy(), alone.get_forces(), alone.get_stress()))
    atoms.calc = SumCalculator([make_calc(), lennard_jones()])
    assert abs(results[1][0]) > 1e-3  # the LJ part is not negligible
    assert atoms.get_potential_energy() == pytest.approx(results[0][0] + results[1][0], abs=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), results[0][1] + results[1][1], atol=1e-12)
    np.testing.assert_allclose(atoms.get_stress(), results[0][2] + results[1][2], atol=1e-12)


def test_cell_relaxation_lowers_energy_one_call_per_geometry(structure, calc):
    """FrechetCellFilter + BFGS: the energy decreases, and each geometry costs one model
    evaluation (energy, forces and stress together)."""
    atoms = structure("bulk")
    atoms.calc = calc
    initial = atoms.get_potential_energy()
    calc.model_calls = 0
    geometries = []

    def record() -> None:
        geometries.append((atoms.positions.copy(), atoms.cell.array.copy()))

    optimiser = BFGS(FrechetCellFilter(atoms), logfile=None)
    optimiser.attach(record, interval=1)
    optimiser.run(fmax=1e-6, steps=5)
    assert atoms.get_potential_energy() < initial - 1e-4
    assert np.abs(atoms.cell.array - structure("bulk").cell.array).max() > 1e-4  # cell moved
    assert calc.model_calls == len(geometries)


def test_langevin_runs(structure, calc):
    atoms = structure("bulk")
    atoms.calc = calc
    start = atoms.positions.copy()
    dynamics = Langevin(
        atoms,
        2 * units.fs,
        temperature_K=300,
        friction=0.02,
        fixcm=False,
        rng=np.random.default_rng(1),
    )
    dynamics.run(5)
    assert np.abs(atoms.positions - start).max() > 1e-4
    assert np.isfinite(atoms.get_potential_energy())
    assert calc.model_calls <= 6 + 1


def test_npt_berendsen_shrinks_cell_under_tension(structure, calc):
    """At zero external pressure and (almost) zero temperature, a cell whose stress is tensile
    (σ_ii > 0: the cell wants to shrink) must shrink under Berendsen pressure coupling."""
    atoms = structure("bulk")
    atoms.calc = calc
    assert (atoms.get_stress()[:3] > 0).all(), "precondition: tensile stress"
    # 1 K: the kinetic pressure N k T / V ≈ 1e-6 eV/Å³ is negligible next to σ ≈ 1e-3 eV/Å³
    thermalize_momenta(atoms, temperature_K=1.0, rng=np.random.default_rng(2))
    volume = atoms.get_volume()
    dynamics = NPTBerendsen(
        atoms,
        1 * units.fs,
        temperature_K=1.0,
        pressure_au=0.0,
        taut=100 * units.fs,
        taup=200 * units.fs,
        compressibility_au=1.0 / (100 * units.GPa),
    )
    dynamics.run(5)
    assert atoms.get_volume() < volume


def test_mtk_npt_runs(structure, calc):
    atoms = structure("bulk")
    atoms.calc = calc
    volume = atoms.get_volume()
    dynamics = IsotropicMTKNPT(
        atoms,
        1 * units.fs,
        temperature_K=300,
        pressure_au=0.0,
        tdamp=50 * units.fs,
        pdamp=500 * units.fs,
    )
    dynamics.run(5)
    assert atoms.get_volume() != volume
    assert np.isfinite(atoms.get_stress()).all()


# ---------------------------------------------------------------------------------------------
# dtype, stress availability, batching


@pytest.mark.parametrize("name", ["bulk", "slab", "molecule"])
def test_float32_close_to_float64(name, model_path, structure, calc):
    atoms = structure(name)
    atoms.calc = calc
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = EquivariantCalculator(model_path, dtype="float32")
    energy32, forces32 = atoms.get_potential_energy(), atoms.get_forces()
    print(f"\nfloat32 {name}: relative energy error {abs(energy32 / energy - 1):.1e}")
    assert energy32 != energy  # really computed in float32
    assert energy32 == pytest.approx(energy, rel=1e-4)
    assert np.abs(forces32 - forces).max() <= 1e-4 * np.abs(forces).max() + 1e-6


@pytest.mark.parametrize("name", ["slab", "wire"])
def test_stress_in_finite_box(name, structure, calc):
    """A slab or wire in a finite box has a cell of rank 3: stress is defined and returned."""
    atoms = structure(name)
    atoms.calc = calc
    stress = atoms.get_stress()
    assert stress.shape == (6,) and np.isfinite(stress).all()


def test_stress_of_slab_without_box_not_implemented(structure, calc):
    atoms = structure("slab_no_box")
    atoms.calc = calc
    assert atoms.get_forces().shape == (len(atoms), 3)  # energy and forces still work
    with pytest.raises(PropertyNotImplementedError, match="rank 2"):
        atoms.get_stress()


@pytest.mark.parametrize(
    ("names", "stress"), [(("bulk", "molecule", "wire"), False), (("bulk", "slab"), True)]
)
def test_batched_equals_single(names, stress, structure, loaded_model):
    """Disconnected graphs in one batch do not see each other: each structure's energy,
    per-atom energies, forces (and stress) equal those of its own evaluation."""
    model = loaded_model.model

    def graph(atoms):
        return atoms_to_graph(atoms, ELEMENTS, R_MAX, dtype=torch.float64)

    structures = [structure(name) for name in names]
    singles = [
        energy_forces_stress(model, graph(a), forces=True, stress=stress) for a in structures
    ]
    batched = energy_forces_stress(
        model, batch_graphs([graph(a) for a in structures]), forces=True, stress=stress
    )
    start = 0
    for k, (atoms, single) in enumerate(zip(structures, singles, strict=True)):
        atoms_slice = slice(start, start + len(atoms))
        start += len(atoms)
        torch.testing.assert_close(batched["energy"][k], single["energy"][0], rtol=0, atol=1e-12)
        torch.testing.assert_close(
            batched["node_energies"][atoms_slice], single["node_energies"], rtol=0, atol=1e-12
        )
        torch.testing.assert_close(
            batched["forces"][atoms_slice], single["forces"], rtol=0, atol=1e-12
        )
        if stress:
            torch.testing.assert_close(
                batched["stress"][k], single["stress"][0], rtol=0, atol=1e-12
            )
