"""The calculator's state check finds exactly the changes ASE's ``compare_atoms`` finds."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.calculator import compare_atoms

from ase_equi.calculator_options import changes_of


def edits():
    def moved(a, dx):
        a.positions[1] += dx

    return {
        "same": lambda a: None,
        "within tolerance": lambda a: moved(a, 1e-17),
        "moved": lambda a: moved(a, 1e-3),
        "nan": lambda a: moved(a, np.nan),
        "numbers": lambda a: a.numbers.__setitem__(0, 7),
        "cell": lambda a: a.set_cell([5.0, 5.0, 5.0]),
        "pbc": lambda a: a.set_pbc(True),
        "charges added": lambda a: a.set_initial_charges(np.ones(len(a))),
        "momenta added": lambda a: a.set_momenta(np.ones((len(a), 3))),
    }


@pytest.mark.parametrize("ignored", [(), ("positions",)])
@pytest.mark.parametrize("name", list(edits()))
def test_changes_equal_ase_compare_atoms(name, ignored):
    old = molecule("CH3CH2OH")
    old.set_initial_magnetic_moments(np.zeros(len(old)))
    new = old.copy()
    edits()[name](new)
    expected = compare_atoms(old, new, tol=1e-15, excluded_properties=set(ignored))
    assert sorted(changes_of(old, new, 1e-15, ignored)) == sorted(expected)
    assert sorted(changes_of(None, new, 1e-15, ignored)) == sorted(compare_atoms(None, new))
