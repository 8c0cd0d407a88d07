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

where ``W = -V (σ + p I)`` is the virial (eV), ``σ`` the stress (eV/Å³, ASE's sign), ``p`` the
``scalar_pressure`` (0 by default), and
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

import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
from ase import Atoms

from .batched import (
    batched_results,
    check_budget_mib,
    graphs_of,
    plan_batches,
    resolved_budget_mib,
)
from .data.extxyz import structures_from
from .graph.build import check_neutral
from .loading import load_for_inference
from .option_checks import is_finite_number, is_integer
from .relax_fire import FireSettings, RelaxingStructure

__all__ = ["FireSettings", "RelaxResult", "relax"]


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


def _check_cell_options(cell: Any, exp_cell_factor: Any, scalar_pressure: Any) -> None:
    """``ValueError``/``TypeError`` naming a bad cell option (a pressure needs ``cell=True``)."""
    if not isinstance(cell, bool):
        raise TypeError(f"cell must be True or False, not {cell!r}")
    if exp_cell_factor is not None and not (
        is_finite_number(exp_cell_factor) and exp_cell_factor > 0
    ):
        raise ValueError(f"exp_cell_factor must be a positive number, not {exp_cell_factor!r}")
    if not is_finite_number(scalar_pressure):
        raise ValueError(
            f"scalar_pressure must be a finite number (eV/Å³), not {scalar_pressure!r}"
        )
    if scalar_pressure != 0 and not cell:
        raise ValueError(
            f"scalar_pressure={scalar_pressure!r} acts on the cell: give cell=True, or leave it 0"
        )


def _check_input(images: Sequence[Atoms], fmax: float, steps: int, cell: bool) -> None:
    """``ValueError``/``TypeError`` naming the argument or the structure that cannot be relaxed."""
    if not (is_finite_number(fmax) and fmax > 0):
        raise ValueError(f"fmax must be a positive number (eV/Å), not {fmax!r}")
    if not is_integer(steps) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, not {steps!r}")
    for k, atoms in enumerate(images):  # Atoms each (structures_from)
        try:
            check_neutral(atoms, "the model")
        except ValueError as error:
            raise ValueError(f"structure {k}: {error}") from None
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


def _evaluate(
    loaded: Any, work: Sequence[RelaxingStructure], stress: bool, budget_mib: float
) -> list[int]:
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
    scalar_pressure: float = 0.0,
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
    scalar_pressure:
        External pressure (eV/Å³; ``1 * ase.units.GPa`` for 1 GPa) with ``cell=True``, as in
        ``FrechetCellFilter``: the cell relaxes to stress ``-p`` (minimum of ``E + pV``).
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
    _check_cell_options(cell, exp_cell_factor, scalar_pressure)
    _check_input(images, fmax, steps, cell)
    check_budget_mib(budget_mib)
    settings = fire if fire is not None else FireSettings()
    loaded = load_for_inference(model, dtype=dtype, device=device, head=head)
    budget_mib = resolved_budget_mib(loaded, budget_mib)  # once, not at every step
    work = [
        RelaxingStructure(k, atoms, cell, exp_cell_factor, settings, scalar_pressure)
        for k, atoms in enumerate(images)
    ]
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
