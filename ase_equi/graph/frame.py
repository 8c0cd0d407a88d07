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
import torch

from ..neighbours import change_basis, integer_matmul, reduced_basis

__all__ = ["GraphFrame", "graph_frame"]


@dataclass(frozen=True)
class GraphFrame:
    """How one structure's positions and neighbour-list shifts map into its graph.

    cell : [3, 3] float64, the graph's cell (rows, Å): the atoms' own, or a reduced basis.
    to_graph : [3, 3] int64 or None, a neighbour list's shifts S become ``S @ to_graph``.
    moves : [n_atoms, 3] int64 or None, lattice vectors (graph basis) taken off each atom.
    origin : [3] float64 or None, the translation taken off every atom (Å).
    source : the atoms' own cell and periodicity, for :func:`graph_frame`'s ``previous``.
    """

    cell: np.ndarray
    to_graph: np.ndarray | None
    moves: np.ndarray | None
    origin: np.ndarray | None
    source: tuple[np.ndarray, np.ndarray]

    def positions(self, positions: np.ndarray) -> np.ndarray:
        """[n, 3] positions (Å, float64) in the graph's frame."""
        if self.moves is not None:
            positions = positions - self.moves @ self.cell
        return positions if self.origin is None else positions - self.origin

    def shifts(self, shifts: np.ndarray, senders: np.ndarray, receivers: np.ndarray) -> np.ndarray:
        """[E, 3] neighbour-list shifts (the caller's basis) for the graph's positions and cell."""
        if self.to_graph is not None:
            shifts = shifts @ self.to_graph
        if self.moves is not None:
            shifts = shifts + self.moves[receivers] - self.moves[senders]
        return shifts

    def device_shifts(
        self, shifts: torch.Tensor, senders: torch.Tensor, receivers: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`shifts` for int64 tensors on any device (a device-built list)."""
        if self.to_graph is not None:
            shifts = integer_matmul(shifts, self.to_graph)
        if self.moves is not None:
            moves = torch.as_tensor(self.moves, device=shifts.device)
            shifts = shifts + moves[receivers] - moves[senders]
        return shifts


def graph_frame(atoms: ase.Atoms, previous: GraphFrame | None = None) -> GraphFrame:
    """The frame of ``atoms``'s graph: reduced cell, atoms moved into it, centred at zero.

    ``previous`` (the frame of an earlier call, as in MD) lends its cell when the atoms' cell
    and periodicity are unchanged.

    Examples
    --------
    >>> from ase import Atoms
    >>> atoms = Atoms("H2", positions=[[0.3, 0.0, 0.0], [-98.7, 0.0, 0.0]], cell=[5, 5, 5],
    ...               pbc=True)
    >>> frame = graph_frame(atoms)
    >>> frame.moves[:, 0].tolist(), frame.positions(atoms.positions)[:, 0].round(9).tolist()
    ([0, -20], [0.3, 1.3])
    """
    own_cell, pbc = atoms.cell.array, atoms.pbc
    if previous is not None and _same(previous.source, own_cell, pbc):
        cell, to_graph = previous.cell, previous.to_graph
    else:
        cell, to_graph = _graph_cell(np.array(own_cell, dtype=np.float64), np.array(pbc))
    positions = atoms.positions
    moves = origin = None
    if len(positions):
        low, high = positions.min(axis=0), positions.max(axis=0)
        periodic_kc = cell[pbc]
        # atoms within twice the cell's size of the origin (MD a while after wrapping) stay
        # where they are, so that an MD step does not pay for the shifts of every edge
        if len(periodic_kc) and max(-low.min(), high.max()) > 2.0 * np.linalg.norm(periodic_kc):
            moves = _moves_into_cell(positions, periodic_kc, pbc)
            if moves is not None:
                wrapped = positions - moves @ cell
                low, high = wrapped.min(axis=0), wrapped.max(axis=0)
        centre = 0.5 * (low + high)
        # translated only when far from the origin for their size (else nothing is gained)
        if np.abs(centre).max() > 2.0 * (0.5 * (high - low).max() + 1.0):
            origin = centre
    source = (np.array(own_cell, dtype=np.float64), np.array(pbc, dtype=bool))
    return GraphFrame(cell=cell, to_graph=to_graph, moves=moves, origin=origin, source=source)


def _graph_cell(cell: np.ndarray, pbc: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The graph's cell and the matrix taking shifts to it (see :class:`GraphFrame`)."""
    basis = reduced_basis(cell, pbc)
    if basis is None:
        return cell, None
    return change_basis(cell, pbc, basis), np.rint(np.linalg.inv(basis)).astype(np.int64)


def _moves_into_cell(
    positions: np.ndarray, periodic_kc: np.ndarray, pbc: np.ndarray
) -> np.ndarray | None:
    """[n, 3] integer lattice vectors that bring each atom into the cell, or None."""
    if not np.isfinite(periodic_kc).all():
        return None
    fractional_nk = positions @ np.linalg.pinv(periodic_kc)
    if not (np.isfinite(fractional_nk).all() and np.abs(fractional_nk).max() < 2.0**52):
        return None
    moves = np.zeros(positions.shape, dtype=np.int64)
    moves[:, pbc] = np.floor(fractional_nk).astype(np.int64)
    return moves if moves.any() else None


def _same(source: tuple[np.ndarray, np.ndarray], cell: np.ndarray, pbc: np.ndarray) -> bool:
    return bool(np.array_equal(source[0], cell) and np.array_equal(source[1], pbc))
