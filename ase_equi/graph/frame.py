"""The frame a graph's positions, cell and shifts are given in (host, float64, then cast).

A model sees ``edge_vectors = positions[receivers] − positions[senders] + shifts @ cell``.
Energy, forces and stress depend only on those vectors, so any frame that leaves them unchanged
gives the same numbers; the frame chosen here keeps every term small, so that a float32 model
gets the vectors to float32's precision rather than to that of the largest term:

- **cell**: a periodic lattice given in a skewed basis is carried in its Minkowski-reduced
  basis (:func:`~ase_equi.neighbours.cell.reduced_basis`; shifts ``S → S @ inv(M)``). A Cu cell
  given as (a, b, c + 10⁵ a) was off by 0.07 eV/Å in float32 in its own basis.
- **positions**: where an atom lies farther from the origin than twice the size of the
  periodic cell, each atom is moved by whole cell vectors into the cell (``moves``:
  integer, shifts ``S → S + moves[receivers] − moves[senders]``); where the atoms lie far
  from the origin for their size, all are moved by one translation (``origin``) to around
  zero. Structures near the origin are given as they are. A molecule 10⁵ Å from the origin
  was off by 0.16 eV/Å in float32, and an MD run's unwrapped positions (ASE does not wrap)
  drift as far.

Moving atoms by lattice vectors and translating them all is exact for energy and forces, and
for the stress too: the strain acts on positions and cell alike, so a lattice vector moves
with it and a common translation does not change the energy.
"""

from __future__ import annotations

from dataclasses import dataclass

import ase
import numpy as np

from ..neighbours import change_basis, reduced_basis

__all__ = ["GraphFrame", "graph_frame"]


@dataclass(frozen=True)
class GraphFrame:
    """How one structure's positions and neighbour-list shifts map into its graph.

    cell : [3, 3] float64, the graph's cell (rows, Å): the atoms' own, or a reduced basis.
    to_graph : [3, 3] int64 or None, a neighbour list's shifts S become ``S @ to_graph``.
    moves : [n_atoms, 3] int64, lattice vectors (in the graph's basis) taken off each atom.
    origin : [3] float64, the translation taken off every atom (Å).
    """

    cell: np.ndarray
    to_graph: np.ndarray | None
    moves: np.ndarray
    origin: np.ndarray

    def positions(self, positions: np.ndarray) -> np.ndarray:
        """[n, 3] positions (Å, float64) in the graph's frame."""
        return positions - self.moves @ self.cell - self.origin

    def shifts(self, shifts: np.ndarray, senders: np.ndarray, receivers: np.ndarray) -> np.ndarray:
        """[E, 3] neighbour-list shifts (the caller's basis) for the graph's positions and cell."""
        if self.to_graph is not None:
            shifts = shifts @ self.to_graph
        if self.moves.any():
            shifts = shifts + self.moves[receivers] - self.moves[senders]
        return shifts


def graph_frame(atoms: ase.Atoms) -> GraphFrame:
    """The frame of ``atoms``'s graph: reduced cell, atoms moved into it, centred at zero.

    Examples
    --------
    >>> from ase import Atoms
    >>> atoms = Atoms("H2", positions=[[0.3, 0.0, 0.0], [-98.7, 0.0, 0.0]], cell=[5, 5, 5],
    ...               pbc=True)
    >>> frame = graph_frame(atoms)
    >>> frame.moves[:, 0].tolist(), frame.positions(atoms.positions)[:, 0].round(9).tolist()
    ([0, -20], [0.3, 1.3])
    """
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    positions = np.asarray(atoms.positions, dtype=np.float64)
    basis = reduced_basis(cell, pbc)
    to_graph = None
    if basis is not None:
        cell = change_basis(cell, pbc, basis)
        to_graph = np.rint(np.linalg.inv(basis)).astype(np.int64)
    moves = np.zeros(positions.shape, dtype=np.int64)
    periodic_kc = cell[pbc]
    if len(positions) and len(periodic_kc) and np.isfinite(periodic_kc).all():
        # atoms within a few cells of the origin (MD a while after wrapping) stay where they
        # are, so that an MD step does not pay for the shifts of every edge
        reach = 2.0 * float(np.sqrt(np.einsum("kc,kc->", periodic_kc, periodic_kc)))
        if not np.abs(positions).max() <= reach:
            fractional_nk = positions @ np.linalg.pinv(periodic_kc)
            if np.isfinite(fractional_nk).all() and np.abs(fractional_nk).max() < 2.0**52:
                moves[:, pbc] = np.floor(fractional_nk).astype(np.int64)
    wrapped = positions - moves @ cell if moves.any() else positions
    origin = np.zeros(3)
    if len(positions):
        centre = wrapped.mean(axis=0)
        # translated only when far from the origin for their size (else nothing is gained)
        if np.abs(centre).max() > 2.0 * (np.abs(wrapped - centre).max() + 1.0):
            origin = centre
    return GraphFrame(cell=cell, to_graph=to_graph, moves=moves, origin=origin)
