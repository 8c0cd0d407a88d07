"""A neighbour list reused across MD steps with a Verlet skin.

The list is built for ``cutoff + skin`` and kept while every atom is within ``skin / 2`` of
where it was at the build (and numbers, cell and periodicity are unchanged): then no pair can
have come from beyond ``cutoff + skin`` to within ``cutoff``, so filtering the kept candidates
by their current length gives exactly the edges of a fresh build. Edges are in a canonical
order (sender, receiver, shift), the same for a reused and a freshly built list, so a model
sees the identical graph either way and its results are bit-identical.

Examples
--------
>>> from ase.build import bulk
>>> atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
>>> verlet = VerletNeighbourList(cutoff=3.0, skin=0.5)
>>> first = verlet.update(atoms)
>>> atoms.positions[0] += 0.1  # less than skin / 2: reused
>>> second = verlet.update(atoms)
>>> verlet.builds, verlet.calls, len(second) == len(first)
(1, 2, True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ase
import numpy as np

from .cell import COINCIDENT_DISTANCE
from .host import NeighbourList, neighbour_list

# (positions [n, 3], cell [3, 3], pbc [3], cutoff) -> a neighbour list of some kind
Builder = Callable[[np.ndarray, np.ndarray, np.ndarray, float], Any]


def _host_build(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float):
    return _canonical(neighbour_list(positions, cell, pbc, cutoff))


def _canonical(nl: NeighbourList) -> NeighbourList:
    order = np.lexsort(
        (nl.shifts[:, 2], nl.shifts[:, 1], nl.shifts[:, 0], nl.receivers, nl.senders)
    )
    return NeighbourList(
        senders=np.ascontiguousarray(nl.senders[order]),
        receivers=np.ascontiguousarray(nl.receivers[order]),
        shifts=np.ascontiguousarray(nl.shifts[order]),
    )


class VerletNeighbourList:
    """Neighbour list of ``cutoff`` (Å) rebuilt only when an atom moved more than ``skin / 2``.

    ``skin = 0`` rebuilds at every call that changed anything. ``builds`` and ``calls`` count
    the matscipy builds and the updates.
    """

    def __init__(self, cutoff: float, skin: float = 1.0) -> None:
        if not cutoff > 0:
            raise ValueError(f"cutoff must be > 0, got {cutoff}")
        if not skin >= 0:
            raise ValueError(f"skin must be >= 0 Å, got {skin}")
        self.cutoff, self.skin = float(cutoff), float(skin)
        self.builds = self.calls = 0
        self._key: tuple | None = None
        self._reference: np.ndarray | None = None
        self._candidates: NeighbourList | None = None

    def update(self, atoms: ase.Atoms) -> NeighbourList:
        """Edges closer than ``cutoff`` for the current positions (see the module docstring)."""
        self.calls += 1
        positions = np.asarray(atoms.positions, dtype=float)
        cell = np.asarray(atoms.cell.array, dtype=float)
        if self._candidates is not None and self._still_valid(atoms, positions, cell):
            kept = self._select(positions, cell, self._candidates)
            if kept is not None:
                return kept
        candidates = self._rebuild(atoms, positions, cell)
        kept = self._select(positions, cell, candidates)
        assert kept is not None  # neighbour_list already refused coincident atoms
        return kept

    def candidates(self, atoms: ase.Atoms, build: Builder | None = None) -> tuple[Any, bool]:
        """All pairs closer than ``cutoff + skin`` at the last build, and whether it was now.

        A superset of the current edges within ``cutoff`` (same validity rule as
        :meth:`update`), unfiltered: a caller that keeps these edges on a device for several
        steps (pairs beyond the cutoff have a zero envelope) uploads them only when the
        second value is True. ``build(positions, cell, pbc, cutoff)`` makes the list (default:
        matscipy on the host, a :class:`NeighbourList`); whatever it returns is kept and
        returned as it is, e.g. device tensors from
        :func:`~ase_equi.neighbours.device.device_neighbour_list`.
        """
        self.calls += 1
        positions = np.asarray(atoms.positions, dtype=float)
        cell = np.asarray(atoms.cell.array, dtype=float)
        rebuilt = not self._still_valid(atoms, positions, cell)
        if rebuilt:
            self._rebuild(atoms, positions, cell, build)
        assert self._candidates is not None
        return self._candidates, rebuilt

    def _key_of(self, atoms: ase.Atoms, cell: np.ndarray) -> tuple:
        return (atoms.numbers.tobytes(), cell.tobytes(), np.asarray(atoms.pbc).tobytes())

    def _still_valid(self, atoms: ase.Atoms, positions: np.ndarray, cell: np.ndarray) -> bool:
        if self._candidates is None or self._key_of(atoms, cell) != self._key:
            return False
        if not np.isfinite(positions).all():
            return False
        moved = np.sqrt(((positions - self._reference) ** 2).sum(axis=1).max(initial=0.0))
        return moved <= 0.5 * self.skin and (self.skin > 0 or moved == 0.0)

    def _rebuild(
        self,
        atoms: ase.Atoms,
        positions: np.ndarray,
        cell: np.ndarray,
        build: Builder | None = None,
    ) -> NeighbourList:
        build = build or _host_build
        candidates = build(positions, cell, np.asarray(atoms.pbc), self.cutoff + self.skin)
        self._candidates = candidates
        self.builds += 1
        self._key, self._reference = self._key_of(atoms, cell), positions.copy()
        return candidates

    def _select(
        self, positions: np.ndarray, cell: np.ndarray, nl: NeighbourList
    ) -> NeighbourList | None:
        vectors = positions[nl.receivers] - positions[nl.senders] + nl.shifts @ cell
        lengths = np.sqrt((vectors**2).sum(axis=1))
        if (lengths < COINCIDENT_DISTANCE).any():
            return None  # a rebuild raises the error that names the atoms
        keep = lengths < self.cutoff
        return NeighbourList(
            senders=np.ascontiguousarray(nl.senders[keep]),
            receivers=np.ascontiguousarray(nl.receivers[keep]),
            shifts=np.ascontiguousarray(nl.shifts[keep]),
        )
