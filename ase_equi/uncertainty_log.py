"""An MD observer that writes the structures a committee is unsure about, ready for labelling.

Attach it to any ASE dynamics (``dyn.attach(log, interval=1)``). At each call it reads the
committee calculator's ``forces_uncertainty`` (computed in the same pass as the forces once
asked, so it costs no extra model call after the first) and, when its maximum passes
``threshold`` (eV/Å), appends the frame to an extxyz file: positions, cell, pbc and numbers,
with ``info["step"]``, ``info["max_forces_uncertainty"]`` (eV/Å),
``info["energy_uncertainty"]`` (eV) and ``arrays["forces_uncertainty"]`` (eV/Å). The model's
own energy and forces are *not* written, so the file is not mistaken for labelled data.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import write

from .option_checks import is_finite_number

__all__ = ["UncertaintyLog"]


class UncertaintyLog:
    """Observer: append the frames whose largest atomic force uncertainty exceeds ``threshold``.

    Parameters
    ----------
    atoms:
        The atoms being simulated, with a committee ``EquivariantCalculator``.
    filename:
        The extxyz file the flagged frames are appended to.
    threshold:
        eV/Å, on the largest atomic ``forces_uncertainty``; must be > 0.

    Attributes
    ----------
    calls, flagged:
        Number of calls, and the call indices (0-based) whose frame was written.
    """

    def __init__(self, atoms: Atoms, filename: str | os.PathLike, threshold: float) -> None:
        if not (is_finite_number(threshold) and threshold > 0):
            raise ValueError(f"threshold must be a number > 0 (eV/Å), got {threshold!r}")
        self.atoms = atoms
        self.filename = Path(filename)
        self.threshold = float(threshold)
        self.calls = 0
        self.flagged: list[int] = []

    def __call__(self) -> None:
        calc = self.atoms.calc
        if calc is None:
            raise ValueError("UncertaintyLog: the atoms have no calculator")
        per_atom = np.asarray(calc.get_property("forces_uncertainty", self.atoms))
        step = self.calls
        self.calls += 1
        if per_atom.size == 0 or not per_atom.max() > self.threshold:
            return
        frame = Atoms(
            numbers=self.atoms.numbers,
            positions=self.atoms.positions,
            cell=self.atoms.cell,
            pbc=self.atoms.pbc,
        )
        frame.info.update(
            step=step,
            max_forces_uncertainty=float(per_atom.max()),
            energy_uncertainty=float(calc.get_property("energy_uncertainty", self.atoms)),
        )
        frame.arrays["forces_uncertainty"] = per_atom.copy()
        write(self.filename, frame, format="extxyz", append=True)
        self.flagged.append(step)
