"""The reference calls of on-the-fly learning: a structure labelled by the reference
calculator and kept in ``OUT/learned.xyz`` (reused, not recomputed, after a kill), the model's
errors on it, and a reference that fails on a structure: named with the call, the structure
kept for inspection (:func:`ase_equi.learning.learn_on_the_fly`)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write

from .calculator import EquivariantCalculator
from .errors import ReferenceFailed
from .io.model_file import write_atomic

__all__ = ["errors_on_structure", "label_structure"]


def errors_on_structure(
    calc: EquivariantCalculator, labelled: Atoms, when: str
) -> dict[str, float]:
    """Force RMSE (eV/Å) and |energy error| per atom (eV) of ``calc`` on ``labelled``, as
    ``force_rmse_{when}`` and ``energy_error_per_atom_{when}``."""
    work = labelled.copy()
    work.calc = calc
    forces = labelled.get_forces()
    rmse = float(np.sqrt(np.mean((work.get_forces() - forces) ** 2)))
    energy = abs(work.get_potential_energy() - labelled.get_potential_energy()) / len(work)
    return {f"force_rmse_{when}": rmse, f"energy_error_per_atom_{when}": float(energy)}


def label_structure(
    atoms: Atoms, calc: EquivariantCalculator, reference: Any, folder: Path, known: int
) -> tuple[list[Atoms], dict[str, float]]:
    """The learned frames with ``atoms`` labelled by ``reference`` as the last
    (``OUT/learned.xyz``), and the errors of ``calc`` (the model in use) on it. ``known``:
    frames learned before; a frame beyond them at the same positions was labelled before a
    kill and is reused (no second reference call). :class:`ReferenceFailed` when the reference
    raises (``atoms`` written to ``OUT/failed-{known}.xyz``)."""
    path = folder / "learned.xyz"
    learned = list(read(path, ":")) if path.exists() else []
    labelled = learned[known] if len(learned) > known else None
    if labelled is None or not np.allclose(labelled.positions, atoms.positions, rtol=0, atol=1e-8):
        labelled = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        labelled.calc = reference
        try:
            energy, forces = labelled.get_potential_energy(), labelled.get_forces()
        except Exception as exc:  # any calculator's failure: named, with the structure kept
            failed = folder / f"failed-{known}.xyz"
            write(failed, Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc))
            raise ReferenceFailed(
                f"learn_on_the_fly: the reference {type(reference).__name__} failed on the "
                f"structure of call {known + 1} ({failed}): {type(exc).__name__}: {exc}. The "
                "state is saved before the call: a run called again with the same out retries "
                "it (e.g. with other reference settings)"
            ) from exc
        labelled.calc = SinglePointCalculator(labelled, energy=energy, forces=forces)
        text = io.StringIO()
        write(text, [*learned[:known], labelled], format="extxyz")
        write_atomic(path, text.getvalue().encode())
        learned = list(read(path, ":"))  # as a resumed run reads them (same training data)
    return learned[: known + 1], errors_on_structure(calc, learned[known], "before")
