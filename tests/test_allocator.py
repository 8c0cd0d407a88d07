"""The CPU allocator setting: taken on Linux with glibc, harmless elsewhere, results unchanged."""

from __future__ import annotations

import ctypes.util
import platform
import sys

import numpy as np

from ase_equi import EquivariantCalculator
from ase_equi.allocator import retain_freed_memory


def test_retain_freed_memory_is_taken_where_glibc_is():
    first, second = retain_freed_memory(), retain_freed_memory()
    assert first == second  # idempotent
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    if glibc and ctypes.util.find_library("c"):
        assert first is True


def test_results_do_not_depend_on_the_allocator_setting(loaded_model, structure):
    atoms = structure("bulk")
    results = []
    for retain in (False, True):
        atoms.calc = EquivariantCalculator(loaded_model, dtype="float64", retain_memory=retain)
        results.append((atoms.get_potential_energy(), atoms.get_forces().copy()))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])
