"""Batched FIRE (ase_equi.relax) against ASE's FIRE run on each structure alone.

The reference is ASE itself: ``ase.optimize.FIRE`` (with ``ase.filters.FrechetCellFilter`` for
``cell=True``) on the same tiny model through the calculator. The algorithm is the same in
float64, so while the trajectories agree step for step the results agree to rounding (the
batched model call and the log/exp of the cell coordinates round differently, ~1e-14): the
tolerances below (1e-8) leave room for that, and nothing more.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.constraints import FixAtoms
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE

import ase_equi.batched
from ase_equi import EquivariantCalculator
from ase_equi.relax import FireSettings, relax

FMAX = 0.01  # eV/Å (the tiny model's forces are small: 0.016-0.07 eV/Å at the start)
TOL = 1e-8  # Å, eV: rounding of the same float64 algorithm


def ase_fire(atoms: Atoms, loaded_model, *, cell: bool, fmax: float = FMAX, steps: int = 500):
    """A copy of ``atoms`` relaxed by ASE's FIRE (+ FrechetCellFilter), converged, steps."""
    work = atoms.copy()
    work.calc = EquivariantCalculator(loaded_model, dtype="float64")
    optimiser = FIRE(FrechetCellFilter(work) if cell else work, logfile=None)
    converged = optimiser.run(fmax=fmax, steps=steps)
    return work, converged, optimiser.nsteps


def strained(atoms: Atoms, strain: float) -> Atoms:
    """``atoms`` with its cell stretched by a non-symmetric strain of size ``strain``."""
    deformation = np.eye(3) + strain * np.array(
        [[1.0, 0.3, -0.2], [0.1, -0.5, 0.4], [0.0, 0.2, 0.7]]
    )
    atoms = atoms.copy()
    atoms.set_cell(atoms.cell.array @ deformation, scale_atoms=True)
    return atoms


def assert_same_relaxation(ours: Atoms, theirs: Atoms) -> None:
    assert abs(ours.get_potential_energy() - theirs.get_potential_energy()) < TOL
    np.testing.assert_allclose(ours.positions, theirs.positions, rtol=0, atol=TOL)
    np.testing.assert_allclose(ours.cell.array, theirs.cell.array, rtol=0, atol=TOL)


@pytest.fixture(scope="module")
def positions_case(loaded_model):
    """A molecule, a small periodic cell and a slab relaxed together (cell fixed)."""
    from conftest import make_structure

    structures = [make_structure(name) for name in ("molecule", "small_cell", "slab")]
    calls = []
    original = ase_equi.batched.energy_forces_stress

    def counting(*args, **kwargs):
        calls.append(args[1].num_graphs)
        return original(*args, **kwargs)

    ase_equi.batched.energy_forces_stress = counting
    try:
        result = relax(structures, loaded_model, fmax=FMAX, verbose=False)
    finally:
        ase_equi.batched.energy_forces_stress = original
    return structures, result, calls


def test_positions_match_ase_fire(positions_case, loaded_model):
    structures, result, _ = positions_case
    for k, atoms in enumerate(structures):
        reference, converged, nsteps = ase_fire(atoms, loaded_model, cell=False)
        assert converged and result.converged[k]
        assert result.steps[k] == nsteps > 5  # a real relaxation, same number of steps
        assert_same_relaxation(result.structures[k], reference)
        assert np.linalg.norm(result.structures[k].get_forces(), axis=1).max() < FMAX


def test_one_model_call_per_step_and_converged_leave(positions_case):
    structures, result, calls = positions_case
    # structure k is in the call of step i while it still moves: steps[k] >= i
    expected = [int((result.steps >= i).sum()) for i in range(int(result.steps.max()) + 1)]
    assert result.batch_sizes == expected
    assert calls == expected  # one model call per step, on the unconverged structures only
    assert expected[0] == len(structures) and expected[-1] < len(structures)
    assert "3 converged" in repr(result)


def test_inputs_not_changed_and_info_kept(positions_case):
    from conftest import make_structure

    structures, result, _ = positions_case
    np.testing.assert_array_equal(structures[0].positions, make_structure("molecule").positions)
    assert structures[0].calc is None
    assert (result.structures[2].pbc == structures[2].pbc).all()


def test_cell_matches_ase_frechet_fire(loaded_model):
    from conftest import make_structure

    structures = [
        strained(make_structure("bulk"), 0.03),
        strained(make_structure("small_cell"), -0.02),
    ]
    result = relax(structures, loaded_model, fmax=FMAX, cell=True, verbose=False)
    for k, atoms in enumerate(structures):
        reference, converged, nsteps = ase_fire(atoms, loaded_model, cell=True)
        assert converged and result.converged[k]
        assert result.steps[k] == nsteps > 5
        assert_same_relaxation(result.structures[k], reference)
        assert abs(result.structures[k].cell.volume - atoms.cell.volume) > 0.01  # the cell moved
        np.testing.assert_allclose(
            result.structures[k].get_stress(), reference.get_stress(), rtol=0, atol=TOL
        )


def test_exp_cell_factor_like_ase(loaded_model):
    from conftest import make_structure

    atoms = strained(make_structure("small_cell"), 0.04)
    result = relax([atoms], loaded_model, fmax=1e-4, steps=8, cell=True, exp_cell_factor=0.5)
    work = atoms.copy()
    work.calc = EquivariantCalculator(loaded_model, dtype="float64")
    FIRE(FrechetCellFilter(work, exp_cell_factor=0.5), logfile=None).run(fmax=1e-4, steps=8)
    assert result.steps[0] == 8
    assert_same_relaxation(result.structures[0], work)


def test_cell_under_pressure_matches_ase_frechet_fire(loaded_model):
    """``scalar_pressure`` as ``FrechetCellFilter``'s: the same path, and the final stress is
    ``-p`` on the diagonal (compression: the volume shrinks against the zero-pressure result)."""
    from conftest import make_structure

    atoms = strained(make_structure("small_cell"), 0.02)
    pressure = 20.0 * units.GPa  # eV/Å³
    result = relax([atoms], loaded_model, fmax=FMAX, cell=True, scalar_pressure=pressure)
    work = atoms.copy()
    work.calc = EquivariantCalculator(loaded_model, dtype="float64")
    optimiser = FIRE(FrechetCellFilter(work, scalar_pressure=pressure), logfile=None)
    assert optimiser.run(fmax=FMAX, steps=500) and result.converged[0]
    assert result.steps[0] == optimiser.nsteps > 5
    assert_same_relaxation(result.structures[0], work)
    final = result.structures[0]
    # converged: each row of the cell force V (σ + p) / n (near F = exp(0)) is below fmax
    residual = FMAX * len(final) / final.cell.volume
    np.testing.assert_allclose(final.get_stress()[:3], -pressure, rtol=0, atol=residual)
    assert residual < 0.1 * pressure
    unpressed = relax([atoms], loaded_model, fmax=FMAX, cell=True, verbose=False)
    assert result.structures[0].cell.volume < unpressed.structures[0].cell.volume


def test_step_limit_and_settings_like_ase(loaded_model):
    from conftest import make_structure

    atoms = make_structure("slab")
    result = relax(
        [atoms], loaded_model, fmax=1e-4, steps=4, fire=FireSettings(maxstep=0.05), verbose=False
    )
    work = atoms.copy()
    work.calc = EquivariantCalculator(loaded_model, dtype="float64")
    assert not FIRE(work, logfile=None, maxstep=0.05).run(fmax=1e-4, steps=4)
    assert not result.converged[0] and result.steps[0] == 4
    assert_same_relaxation(result.structures[0], work)


def test_over_the_memory_budget_a_step_is_split(loaded_model):
    from conftest import make_structure

    structures = [make_structure("small_cell"), make_structure("slab")]
    split = relax(structures, loaded_model, fmax=1e-4, steps=2, budget_mib=1e-6, verbose=False)
    whole = relax(structures, loaded_model, fmax=1e-4, steps=2, verbose=False)
    assert split.batch_sizes == [1, 1] * 3 and whole.batch_sizes == [2] * 3
    for ours, theirs in zip(split.structures, whole.structures, strict=True):
        assert_same_relaxation(ours, theirs)


def test_already_converged_takes_no_step(loaded_model, capsys):
    from conftest import make_structure

    atoms = make_structure("small_cell")
    result = relax([atoms, Atoms()], loaded_model, fmax=1e3)
    assert "relax: 2/2 finished, 0 relaxing" in capsys.readouterr().err
    assert result.converged.tolist() == [True, True] and result.steps.tolist() == [0, 0]
    np.testing.assert_array_equal(result.structures[0].positions, atoms.positions)
    assert result.batch_sizes == [2] and relax([], loaded_model, verbose=False).batch_sizes == []


@pytest.mark.parametrize(
    "structures, keywords, message",
    [
        ("molecule", {"cell": True}, "structure 0: cell=True needs a cell of rank 3"),
        ("constrained", {}, "structure 0 has constraints"),
        ("small_cell", {"fmax": 0.0}, "fmax must be a positive number"),
        ("small_cell", {"steps": -1}, "steps must be an int >= 0"),
        ("small_cell", {"dtype": "float16"}, "dtype must be one of"),
        ("small_cell", {"budget_mib": 0}, "budget_mib must be a finite number > 0"),
        ("small_cell", {"budget_mib": float("nan")}, "budget_mib must be a finite number > 0"),
        ("small_cell", {"budget_mib": float("inf")}, "budget_mib must be a finite number > 0"),
        ("small_cell", {"scalar_pressure": 0.01}, "scalar_pressure=0.01 acts on the cell"),
        ("small_cell", {"cell": True, "scalar_pressure": float("nan")}, "finite number"),
        ("small_cell", {"cell": True, "exp_cell_factor": True}, "exp_cell_factor must be"),
    ],
)
def test_refused_input_names_the_problem(loaded_model, structures, keywords, message):
    from conftest import make_structure

    if structures == "constrained":
        atoms = make_structure("small_cell")
        atoms.set_constraint(FixAtoms(indices=[0]))
    else:
        atoms = make_structure(structures)
    with pytest.raises(ValueError, match=message):
        relax([atoms], loaded_model, verbose=False, **keywords)


def test_one_atoms_instead_of_a_list_is_refused_by_name(loaded_model):
    """``relax(atoms)``: a list of one is meant (an Atoms iterates over its Atom objects)."""
    from conftest import make_structure

    with pytest.raises(TypeError, match=r"relax\(\) takes a list of structures .*\[atoms\]"):
        relax(make_structure("small_cell"), loaded_model, verbose=False)
    with pytest.raises(TypeError, match=r"relax\(\): structure 1 is a str, not Atoms"):
        relax([make_structure("small_cell"), "Cu"], loaded_model, verbose=False)


def test_structure_the_model_cannot_take_is_named_by_its_input_index(loaded_model):
    from conftest import make_structure

    hydrogen = make_structure("molecule")
    hydrogen.symbols[2] = "H"  # the tiny model knows Al and Cu only
    with pytest.raises(ValueError, match="structure 1: element H"):
        relax([make_structure("small_cell"), hydrogen], loaded_model, verbose=False)


def test_non_finite_forces_name_the_input_structure(loaded_model, monkeypatch):
    """The molecule converges first (20 steps, see positions_case); from then on the batch is
    [small_cell, slab] and NaN forces at batch position 1 belong to input structure 2."""
    from conftest import make_structure

    original = ase_equi.batched.energy_forces_stress

    def poisoned(*args, **kwargs):
        out = original(*args, **kwargs)
        graph = args[1]
        if graph.num_graphs == 2:
            out["forces"] = torch.where((graph.batch == 1)[:, None], torch.nan, out["forces"])
        return out

    monkeypatch.setattr(ase_equi.batched, "energy_forces_stress", poisoned)
    structures = [make_structure(name) for name in ("molecule", "small_cell", "slab")]
    with pytest.raises(FloatingPointError, match="non-finite forces for structure 2$"):
        relax(structures, loaded_model, fmax=FMAX, verbose=False)


def test_unknown_keyword_and_bad_settings_refused(loaded_model):
    with pytest.raises(TypeError, match="optimizer"):
        relax([], loaded_model, optimizer="BFGS")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="FireSettings.dt"):
        FireSettings(dt=-0.1)


def test_a_committee_or_a_calculator_is_refused_by_name(loaded_model, model_path):
    from conftest import make_structure

    from ase_equi import EquivariantCalculator

    structures = [make_structure("small_cell")]
    for model in ([model_path, model_path], EquivariantCalculator(model_path)):
        with pytest.raises(TypeError, match="one model is needed here .*EquivariantCalculator"):
            relax(structures, model, verbose=False)
