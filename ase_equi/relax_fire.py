"""One structure's FIRE relaxation: ASE's update rule on ``FrechetCellFilter`` coordinates.

:class:`RelaxingStructure` holds a working copy of one structure, its generalised coordinates
and its FIRE state (velocity, time step, mixing coefficient, downhill count), and takes one
step at a time from forces it is given; :func:`ase_equi.relax.relax` evaluates many of them in
one model call per step. The coordinates and forces are those of the module docstring of
:mod:`ase_equi.relax`; with ``scalar_pressure`` p (eV/Å³) the virial is ``W = -V (σ + p I)``,
as in ASE's ``FrechetCellFilter(atoms, scalar_pressure=p)``, so the cell relaxes to where the
stress equals ``-p`` (the enthalpy ``E + pV`` is what goes down).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import voigt_6_to_full_3x3_stress

from .option_checks import is_finite_number, is_integer

__all__ = ["FireSettings", "RelaxingStructure", "matrix_exponential"]


@dataclass(frozen=True)
class FireSettings:
    """FIRE's parameters, with the names and defaults of ASE's ``FIRE``.

    Attributes
    ----------
    dt:
        Initial time step (ASE's units: positions in Å, forces in eV/Å, unit masses).
    maxstep:
        Largest step (Å): the norm of a structure's whole step vector (all atoms, and the cell
        coordinates with ``cell=True``) is cut to this length.
    dtmax:
        Largest time step.
    n_min:
        Downhill steps (``v·f > 0``) to wait before the time step grows (ASE's ``Nmin``).
    finc, fdec:
        Factor by which the time step grows after ``n_min`` downhill steps, and shrinks on an
        uphill step.
    astart, fa, a:
        Velocity–force mixing coefficient after an uphill step, its decay factor per downhill
        step past ``n_min``, and its initial value.
    """

    dt: float = 0.1
    maxstep: float = 0.2
    dtmax: float = 1.0
    n_min: int = 5
    finc: float = 1.1
    fdec: float = 0.5
    astart: float = 0.1
    fa: float = 0.99
    a: float = 0.1

    def __post_init__(self) -> None:
        for name in ("dt", "maxstep", "dtmax", "finc", "fdec", "astart", "fa", "a"):
            value = getattr(self, name)
            if not (is_finite_number(value) and value > 0):
                raise ValueError(f"FireSettings.{name} must be a positive number, not {value!r}")
        if not is_integer(self.n_min) or self.n_min < 0:
            raise ValueError(f"FireSettings.n_min must be an int >= 0, not {self.n_min!r}")


class RelaxingStructure:
    """One structure on its way down: working copy, generalised coordinates, FIRE state."""

    def __init__(
        self,
        index: int,
        atoms: Atoms,
        cell: bool,
        exp_cell_factor: float | None,
        s: FireSettings,
        scalar_pressure: float = 0.0,
    ):
        self.index = index  # position in the input list
        self.pressure = float(scalar_pressure)  # eV/Å³
        self.atoms = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        self.n = len(atoms)
        self.cell = cell
        self.orig_cell = atoms.cell.array.copy()
        self.factor = float(self.n) if exp_cell_factor is None else float(exp_cell_factor)
        cell_rows = np.zeros((3, 3)) if cell else np.zeros((0, 3))  # log F = 0 at the start
        self.x = np.concatenate([atoms.positions, cell_rows]).ravel()  # [3 (n + 3 cell)]
        self.dt, self.a, self.downhill = s.dt, s.a, 0
        self.velocity: np.ndarray | None = None
        self.steps = 0
        self.converged = False
        self.results: dict[str, Any] = {}

    def deformation(self) -> tuple[np.ndarray, np.ndarray]:
        """``log F`` and ``F`` (3×3) of the current cell coordinates."""
        log_f = self.x[3 * self.n :].reshape(3, 3) / self.factor
        return log_f, matrix_exponential(log_f)

    def place(self) -> None:
        """Positions (and cell) of the working copy from the coordinates ``x``."""
        x = self.x.reshape(-1, 3)
        if not self.cell:
            self.atoms.positions = x
            return
        _, f = self.deformation()
        self.atoms.set_cell(self.orig_cell @ f.T, scale_atoms=False)
        self.atoms.positions = x[: self.n] @ f.T

    def generalised_forces(self, results: dict[str, Any]) -> np.ndarray:
        """``[(n (+3)) × 3]`` forces conjugate to ``x`` (see the module docstring)."""
        forces = results["forces"]
        if not self.cell:
            return forces
        log_f, f = self.deformation()
        stress = voigt_6_to_full_3x3_stress(results["stress"]) + self.pressure * np.eye(3)
        virial = -self.atoms.cell.volume * stress
        cell_gradient = np.linalg.solve(f, virial.T).T  # W F^-T
        block = np.block([[log_f.T, cell_gradient], [np.zeros((3, 3)), log_f.T]])
        log_force = matrix_exponential(block)[:3, 3:]  # L_exp((log F)^T, W F^-T)
        return np.concatenate([forces @ f, log_force / self.factor])

    def fire_step(self, force: np.ndarray, s: FireSettings) -> None:
        """One step of ASE's FIRE rule from the generalised ``force`` (flat)."""
        if self.velocity is None:
            self.velocity = np.zeros_like(force)
        else:
            v = self.velocity
            vf = np.vdot(force, v)
            if vf > 0.0:
                norm_ratio = np.sqrt(np.vdot(v, v))
                self.velocity = (1.0 - self.a) * v + self.a * force / np.sqrt(
                    np.vdot(force, force)
                ) * norm_ratio
                if self.downhill > s.n_min:
                    self.dt = min(self.dt * s.finc, s.dtmax)
                    self.a *= s.fa
                self.downhill += 1
            else:
                self.velocity = v * 0.0
                self.a, self.dt, self.downhill = s.astart, self.dt * s.fdec, 0
        self.velocity = self.velocity + self.dt * force
        dr = self.dt * self.velocity
        length = np.sqrt(np.vdot(dr, dr))
        if length > s.maxstep:
            dr = s.maxstep * dr / length
        self.x = self.x + dr
        self.steps += 1
        self.place()

    def final(self, original: Atoms) -> Atoms:
        """A copy of ``original`` (info, arrays) at the final geometry, with its results."""
        out = original.copy()
        out.calc = None
        out.set_cell(self.atoms.cell, scale_atoms=False)
        out.positions = self.atoms.positions
        out.calc = SinglePointCalculator(out, **self.results)
        return out


def matrix_exponential(matrix: np.ndarray) -> np.ndarray:
    """Matrix exponential of a float64 square array (torch's Padé approximant)."""
    return torch.linalg.matrix_exp(torch.from_numpy(np.ascontiguousarray(matrix))).numpy()
