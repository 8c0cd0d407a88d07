"""Many structures relaxed together: FIRE with one batched model call per step.

:func:`relax` advances every unconverged structure by one FIRE step, then evaluates all of
them in one model call on their joined graph (:func:`ase_equi.batched.batched_results`); a
structure whose largest force falls below ``fmax`` (or that has used its ``steps``) leaves the
batch, so the batch shrinks as the relaxations finish.

Each structure follows exactly the path ASE's ``FIRE`` (``ase.optimize.FIRE``) takes on it
alone with the same calculator: the same parameters (:class:`FireSettings`), the same update
rule, its own state (velocity, time step, mixing coefficient, count of downhill steps), the same
convergence test (largest row norm of the generalised forces ``< fmax``) and the same step
count. With ``cell=True`` the coordinates are those of ASE's ``FrechetCellFilter``: with
``F`` the deformation gradient of the cell from its starting value ``C0`` (``cell = C0 Fᵀ``,
cell vectors as rows) and ``c`` the ``exp_cell_factor`` (default: the number of atoms),

.. math::

    x = \\big(F^{-1} r_1, \\dots, F^{-1} r_N,\\; c \\log F\\big), \\qquad
    f_x = \\big(F^{T} f_1, \\dots, F^{T} f_N,\\;
    \\tfrac{1}{c}\\, L_{\\exp}\\big((\\log F)^{T}, W F^{-T}\\big)\\big),

where ``W = -V σ`` is the virial (eV), ``σ`` the stress (eV/Å³, ASE's sign), and
``L_exp(A, G)`` the Fréchet derivative of the matrix exponential at ``A`` in direction ``G``
(the gradient of ``E`` with respect to ``log F`` is the adjoint derivative: one Fréchet
derivative instead of nine directional ones, read off the exponential of the block matrix
``[[A, G], [0, A]]``, whose upper right block is ``L_exp(A, G)``).

Examples
--------
>>> from ase.build import bulk
>>> cu = bulk("Cu", "fcc", a=3.7, cubic=True)
>>> result = relax([cu], "metals", fmax=0.01, cell=True, verbose=False)
>>> result
RelaxResult(1 structures, 1 converged, at most 16 steps, 17 model calls)
>>> print(f"{result.structures[0].cell.lengths()[0]:.2f} Å")  # fcc Cu: 3.61 Å measured
3.59 Å
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import voigt_6_to_full_3x3_stress

from .batched import (
    batched_results,
    check_budget_mib,
    graphs_of,
    plan_batches,
    resolved_budget_mib,
)
from .data.extxyz import structures_from
from .loading import load_for_inference
from .option_checks import is_finite_number, is_integer

__all__ = ["FireSettings", "RelaxResult", "relax"]


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


@dataclass
class RelaxResult:
    """What :func:`relax` returns.

    Attributes
    ----------
    structures:
        The final structures, in input order (copies: the inputs are not changed), each with a
        ``SinglePointCalculator`` holding ``energy``, ``free_energy`` (eV), ``energies [n]``,
        ``forces [n, 3]`` (eV/Å) and, with ``cell=True``, ``stress [6]`` (eV/Å³, Voigt order)
        of the final geometry.
    converged:
        ``[S]`` bool: the largest (generalised) force fell below ``fmax``.
    steps:
        ``[S]`` int: FIRE steps taken by each structure (ASE's ``nsteps``).
    batch_sizes:
        Number of structures in each model call, in order (one call per step while the batch
        fits the memory budget of :func:`ase_equi.batched.plan_batches`).
    """

    structures: list[Atoms]
    converged: np.ndarray
    steps: np.ndarray
    batch_sizes: list[int] = field(default_factory=list)

    def __repr__(self) -> str:
        n = len(self.structures)
        most = int(self.steps.max()) if n else 0
        return (
            f"RelaxResult({n} structures, {int(self.converged.sum())} converged, "
            f"at most {most} steps, {len(self.batch_sizes)} model calls)"
        )


class _Relaxing:
    """One structure on its way down: working copy, generalised coordinates, FIRE state."""

    def __init__(
        self, index: int, atoms: Atoms, cell: bool, exp_cell_factor: float | None, s: FireSettings
    ):
        self.index = index  # position in the input list
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
        return log_f, _expm(log_f)

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
        virial = -self.atoms.cell.volume * voigt_6_to_full_3x3_stress(results["stress"])
        cell_gradient = np.linalg.solve(f, virial.T).T  # W F^-T
        block = np.block([[log_f.T, cell_gradient], [np.zeros((3, 3)), log_f.T]])
        log_force = _expm(block)[:3, 3:]  # L_exp((log F)^T, W F^-T)
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


def _expm(matrix: np.ndarray) -> np.ndarray:
    """Matrix exponential of a float64 square array (torch's Padé approximant)."""
    return torch.linalg.matrix_exp(torch.from_numpy(np.ascontiguousarray(matrix))).numpy()


def _check_input(
    images: Sequence[Atoms], fmax: float, steps: int, cell: bool, exp_cell_factor: float | None
) -> None:
    """``ValueError``/``TypeError`` naming the argument or the structure that cannot be relaxed."""
    if not (is_finite_number(fmax) and fmax > 0):
        raise ValueError(f"fmax must be a positive number (eV/Å), not {fmax!r}")
    if not is_integer(steps) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, not {steps!r}")
    if not isinstance(cell, bool):
        raise TypeError(f"cell must be True or False, not {cell!r}")
    if exp_cell_factor is not None and not (math.isfinite(exp_cell_factor) and exp_cell_factor > 0):
        raise ValueError(f"exp_cell_factor must be a positive number, not {exp_cell_factor!r}")
    for k, atoms in enumerate(images):  # Atoms each (structures_from)
        if atoms.constraints:
            raise ValueError(
                f"structure {k} has constraints ({atoms.constraints}); relax() does not apply "
                "constraints: relax it with an ASE optimiser instead"
            )
        if cell and atoms.cell.rank != 3:
            raise ValueError(
                f"structure {k}: cell=True needs a cell of rank 3 (stress); this cell has rank "
                f"{atoms.cell.rank}: relax molecules and slabs without a box with cell=False"
            )
        if cell and len(atoms) == 0:
            raise ValueError(f"structure {k} has no atoms: nothing to relax the cell against")


def _evaluate(loaded: Any, work: Sequence[_Relaxing], stress: bool, budget_mib: float) -> list[int]:
    """Results of every structure in ``work``, joined into as few model calls as the memory
    budget allows (one, unless the batch is too large); returns the size of each call."""
    graphs = [graphs_of([w.atoms], loaded, first=w.index)[0] for w in work]  # input index
    sizes = []
    for batch in plan_batches(graphs, loaded, "auto", budget_mib=budget_mib):
        try:
            results = batched_results([graphs[k] for k in batch], loaded, stress=stress)
        except FloatingPointError as error:  # it names the position in this batch
            named = _renumbered(str(error), [work[k].index for k in batch])
            raise FloatingPointError(named) from error
        for k, result in zip(batch, results, strict=True):
            work[k].results = result
        sizes.append(len(batch))
    return sizes


def _renumbered(message: str, indices: Sequence[int]) -> str:
    """``message`` with each "structure k" (k: position in a batch) naming ``indices[k]``."""
    return re.sub(r"structure (\d+)", lambda m: f"structure {indices[int(m.group(1))]}", message)


def relax(
    structures: str | os.PathLike | Sequence[Atoms],
    model: Any,
    *,
    fmax: float = 0.05,
    steps: int = 1000,
    cell: bool = False,
    exp_cell_factor: float | None = None,
    fire: FireSettings | None = None,
    dtype: str = "float64",
    device: str = "cpu",
    head: str | None = None,
    budget_mib: float | None = None,
    verbose: bool = True,
) -> RelaxResult:
    """Relax many structures at once with FIRE (positions, or positions and cell).

    Parameters
    ----------
    structures:
        ``Atoms`` objects (not changed), or a data file (extxyz, ASE database, ...). Structures
        with constraints are refused (they are not applied here).
    model:
        A zoo name, a model file, a MACE ``.model`` file or a loaded model (as the calculator
        takes them).
    fmax:
        Convergence: largest force (row norm of the generalised forces: atoms and, with
        ``cell=True``, the three cell rows) below this, eV/Å.
    steps:
        Most FIRE steps per structure (ASE's ``run(steps=...)``).
    cell:
        Relax the cell too, with the coordinates of ASE's ``FrechetCellFilter`` (every
        structure needs a cell of rank 3).
    exp_cell_factor:
        Scale of the cell coordinates (``FrechetCellFilter``'s); ``None``: each structure's
        number of atoms.
    fire:
        FIRE's parameters; ``None``: ASE's defaults.
    dtype, device:
        Of the model (``"float64"`` or ``"float32"``; a torch device).
    head:
        Head of a multi-head model (None: its default head).
    budget_mib:
        Memory budget of one model call (MiB, estimated as
        :func:`ase_equi.batched.plan_batches` does): while the structures still relaxing fit,
        a step is one model call; beyond it the step's evaluation is split into several.
        ``None``: 256 MiB on a CPU, half the free memory of a GPU
        (:func:`ase_equi.batched.default_budget_mib`).
    verbose:
        A progress line on stderr every few seconds.

    Returns
    -------
    RelaxResult
        Final structures with their results, converged flags, steps per structure.

    Raises
    ------
    ValueError
        A bad argument, a structure with constraints, ``cell=True`` for a cell of rank < 3, or
        a structure the graph builder refuses (unknown element, atoms on top of each other):
        the message names the structure by its index in ``structures``.
    FloatingPointError
        The model gave non-finite energies or forces for a structure (named by its index).
    """
    images = structures_from(structures, "relax")
    _check_input(images, fmax, steps, cell, exp_cell_factor)
    check_budget_mib(budget_mib)
    settings = fire if fire is not None else FireSettings()
    loaded = load_for_inference(model, dtype=dtype, device=device, head=head)
    budget_mib = resolved_budget_mib(loaded, budget_mib)  # once, not at every step
    work = [_Relaxing(k, atoms, cell, exp_cell_factor, settings) for k, atoms in enumerate(images)]
    active, sizes = list(work), []
    progress = _Progress(len(work), sys.stderr if verbose else None)
    while active:
        sizes += _evaluate(loaded, active, cell, budget_mib)
        moving = []
        for w in active:
            force = w.generalised_forces(w.results)
            if len(force) == 0 or np.linalg.norm(force, axis=1).max() < fmax:
                w.converged = True
            elif w.steps < steps:
                w.fire_step(force.ravel(), settings)
                moving.append(w)
        active = moving
        progress.update(len(work) - len(active), len(active))
    return RelaxResult(
        structures=[w.final(atoms) for w, atoms in zip(work, images, strict=True)],
        converged=np.array([w.converged for w in work], dtype=bool),
        steps=np.array([w.steps for w in work], dtype=int),
        batch_sizes=sizes,
    )


class _Progress:
    """``relax: 40/100 finished, 60 relaxing, 12 s`` on a stream, at most every ``every`` s."""

    def __init__(self, total: int, stream: TextIO | None, every: float = 5.0) -> None:
        self.total, self.stream, self.every = total, stream, every
        self.start = self.last = time.perf_counter()

    def update(self, finished: int, relaxing: int) -> None:
        now = time.perf_counter()
        if self.stream is None or (relaxing and now - self.last < self.every):
            return
        self.last = now
        self.stream.write(
            f"relax: {finished}/{self.total} finished, {relaxing} relaxing, "
            f"{now - self.start:.0f} s\n"
        )
        self.stream.flush()
