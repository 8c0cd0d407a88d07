"""Inputs no potential can evaluate are refused with a ValueError that names the problem.

Each case goes through the calculator as a user would (``atoms.get_potential_energy()``), so
the message checked is the one the user sees.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from conftest import tiny_config


def test_unknown_element_is_named(structure, calc):
    """Fe is not one of the model's elements: the message names Fe (with Z) and Al, Cu."""
    atoms = structure("bulk")
    atoms.numbers[2] = 26
    atoms.calc = calc
    with pytest.raises(ValueError, match=r"Fe \(Z=26\).*tiny.*\(Al, Cu\)"):
        atoms.get_potential_energy()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", ["bulk", "molecule"])
def test_non_finite_position_names_the_atom(name, bad, structure, calc):
    atoms = structure(name)
    atoms.positions[3, 1] = bad
    atoms.calc = calc
    with pytest.raises(ValueError, match="NaN or infinity at atom 3"):
        atoms.get_potential_energy()


@pytest.mark.parametrize("axis", [0, 2])
def test_periodic_direction_with_zero_cell_vector(axis, calc):
    cell = 4.0 * np.eye(3)
    cell[axis] = 0.0
    atoms = Atoms("AlCu", positions=[[0, 0, 0], [1.5, 1.5, 1.5]], cell=cell, pbc=True)
    atoms.calc = calc
    with pytest.raises(
        ValueError, match=f"cell vector {axis} is zero but direction {axis} is periodic"
    ):
        atoms.get_potential_energy()


def test_zero_volume_periodic_cell(calc):
    """Three nonzero but coplanar periodic cell vectors: the periodic cell has no volume."""
    cell = [[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [3.0, 3.0, 0.0]]
    atoms = Atoms("AlCu", positions=[[0, 0, 0], [1.5, 1.5, 1.0]], cell=cell, pbc=True)
    atoms.calc = calc
    with pytest.raises(ValueError, match="zero volume"):
        atoms.get_potential_energy()


@pytest.mark.parametrize("name", ["bulk", "slab", "molecule"])
def test_two_atoms_at_the_same_position(name, structure, calc):
    atoms = structure(name)
    atoms.positions[1] = atoms.positions[0]
    atoms.calc = calc
    with pytest.raises(ValueError, match="atoms 0 and 1 are at the same position"):
        atoms.get_potential_energy()


def test_atom_on_a_periodic_image_of_another(structure, calc):
    """Atom 1 sits exactly one lattice vector away from atom 0: the same point of the crystal."""
    atoms = structure("bulk")
    atoms.positions[1] = atoms.positions[0] + atoms.cell[2]
    atoms.calc = calc
    with pytest.raises(ValueError, match="same position.*periodic image"):
        atoms.get_potential_energy()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"elements": ()}, "elements"),
        ({"elements": (13, 13)}, "elements"),
        ({"elements": (13, 200)}, "elements"),
        ({"reference_energies": (-0.3,)}, "reference_energies"),
        ({"r_max": 0.0}, "r_max"),
        ({"r_max": -3.0}, "r_max"),
        ({"channels": 0}, "channels"),
        ({"num_bessel": 0}, "num_bessel"),
        ({"num_interactions": 0, "correlation": ()}, "num_interactions"),
        ({"readout_hidden": 0}, "readout_hidden"),
        ({"max_ell": -1}, "max_ell"),
        ({"max_L": -1}, "max_L"),
        ({"correlation": (3,)}, "correlation"),
        ({"correlation": 5}, "correlation"),
        ({"avg_num_neighbors": 0.0}, "avg_num_neighbors"),
    ],
)
def test_model_config_errors_name_the_field(overrides, field):
    """Each invalid field is refused at construction, and the message names that field."""
    with pytest.raises(ValueError, match=rf"ModelConfig\..*\b{field}\b"):
        tiny_config(**overrides)


def test_non_finite_output_is_refused_every_time(structure, loaded_model):
    """A model whose output is NaN (one weight NaN) raises on every call for the same atoms:
    the refused results are not kept for ASE's cache to serve."""
    import copy

    import torch

    from ase_equi import EquivariantCalculator

    broken = copy.deepcopy(loaded_model)
    with torch.no_grad():
        next(p for p in broken.model.parameters() if p.numel() > 1).fill_(float("nan"))
    atoms = structure("bulk")
    atoms.calc = EquivariantCalculator(broken, dtype="float64")
    for getter in (atoms.get_potential_energy, atoms.get_potential_energy, atoms.get_forces):
        with pytest.raises(FloatingPointError, match="non-finite"):
            getter()


@pytest.mark.parametrize(
    "charge, initial, message",
    [
        (1, None, r"total charge of 1 \(atoms.info\['charge'\]\)"),
        (-2.0, None, r"total charge of -2 \(atoms.info\['charge'\]\)"),
        (None, [1.0, 0.0, 0.0, 0.0], r"total charge of 1 \(the initial charges' sum\)"),
    ],
)
def test_a_charged_structure_is_refused_by_every_path(
    charge, initial, message, structure, calc, loaded_model
):
    """No model here takes a charge: computing the neutral structure and returning it as the
    charged one would be a silent wrong number. Refused by the calculator, evaluate, relax and
    the training data; a neutral structure with partial charges (summing to ~0) is computed."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from ase_equi import evaluate, relax
    from ase_equi.data import read_frames
    from ase_equi.vibrations import hessian

    atoms = structure("molecule")
    if charge is not None:
        atoms.info["charge"] = charge
    if initial is not None:
        atoms.set_initial_charges(initial + [0.0] * (len(atoms) - len(initial)))
    atoms.calc = calc
    with pytest.raises(ValueError, match=message):
        atoms.get_potential_energy()
    bare = atoms.copy()
    with pytest.raises(ValueError, match=message):
        evaluate([bare], loaded_model, verbose=False)
    with pytest.raises(ValueError, match=message):
        relax([bare], loaded_model, verbose=False)
    with pytest.raises(ValueError, match=message):
        hessian(bare, loaded_model)
    labelled = bare.copy()
    labelled.calc = SinglePointCalculator(labelled, energy=0.0, forces=np.zeros((len(bare), 3)))
    with pytest.raises(ValueError, match=message):  # training data
        read_frames([labelled])
    neutral = structure("molecule")
    neutral.set_initial_charges(np.linspace(-0.3, 0.3, len(neutral)) + 1e-3)  # sum 0.00x
    neutral.info["charge"] = 0
    neutral.calc = calc
    assert np.isfinite(neutral.get_potential_energy())
    neutral.info["charge"] = 1  # set after a call: not served from the cache
    with pytest.raises(ValueError, match="total charge of 1"):
        neutral.get_potential_energy()
