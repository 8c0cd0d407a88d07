"""Neighbour lists on the host for any periodicity, built on matscipy.

Convention
----------
Cell vectors are the rows of ``cell`` (as in ASE). For every ordered pair of atoms (i, j) and
every integer shift S = (S_0, S_1, S_2) with

    | positions[j] - positions[i] + S @ cell | < cutoff        (strictly less)

there is exactly one edge with ``senders = i``, ``receivers = j`` and ``shifts = S``, except
the trivial pair i == j with S == 0. Hence, for the positions exactly as the caller passed them
(wrapped into the cell or not),

    edge_vectors = positions[receivers] - positions[senders] + shifts @ cell

This is matscipy's ``neighbour_list('ijS', ...)`` with senders = i and receivers = j
(matscipy's D = positions[j] - positions[i] + S . cell). Consequences:

- the list is symmetric: (i, j, S) is an edge if and only if (j, i, -S) is one;
- shifts are nonzero only along periodic directions;
- self-images (i == j, S != 0) and several images of the same pair appear whenever the cutoff
  exceeds the cell size;
- edges are sorted by sender, but not by receiver within one sender.

Non-periodic directions need no cell vector (a zero row is fine); the inputs are checked and
the search cell is built in :mod:`ase_equi.neighbours.cell`.

Cost bounds
-----------
- A lattice given in a skewed basis is searched in its reduced basis
  (:func:`~ase_equi.neighbours.cell.reduced_basis`); a periodic cell still far thinner than
  the cutoff is refused before anything is allocated
  (:func:`~ase_equi.neighbours.cell.check_periodic_images`).
- Few atoms in a large box (matscipy bins the whole box, so its time and memory follow the box
  volume, not the atoms): a periodic direction with a vacuum gap of at least the cutoff between
  the atoms' periodic images is searched as a non-periodic one (no pair can cross the gap), and
  a search box that still holds more than ``SPARSE_BINS_PER_ATOM`` cutoff-sized bins per atom
  is searched directly, pair by pair, in bounded chunks, for up to ``DIRECT_MAX_ATOMS`` atoms.
  The edges are the same set either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import ase
import numpy as np
from matscipy.neighbours import neighbour_list as _matscipy_neighbour_list

from .cell import (
    COINCIDENT_DISTANCE,
    PADDING,
    change_basis,
    check_not_crowded,
    check_periodic_images,
    plane_spacings,
    reduced_basis,
    row_norms,
    search_cell,
    validate_inputs,
)

__all__ = ["NeighbourList", "neighbour_list", "neighbour_list_from_atoms"]

# A search box with more cutoff-sized bins than this per atom is searched pair by pair ...
SPARSE_BINS_PER_ATOM = 64
# ... for up to this many atoms (n^2 x shifts distances, in chunks of _DIRECT_CHUNK_PAIRS).
DIRECT_MAX_ATOMS = 4096
_DIRECT_CHUNK_PAIRS = 2**20


@dataclass(frozen=True)
class NeighbourList:
    """Edges of the atomic graph; see the module docstring for the convention.

    Attributes
    ----------
    senders : np.ndarray
        [n_edges] int64, index i of the atom the edge vector starts from.
    receivers : np.ndarray
        [n_edges] int64, index j of the atom the edge vector points to.
    shifts : np.ndarray
        [n_edges, 3] int64, integer cell offsets S, so that
        ``edge_vectors = positions[receivers] - positions[senders] + shifts @ cell``.

    Examples
    --------
    >>> from ase.build import bulk
    >>> nl = neighbour_list_from_atoms(bulk("Cu", "fcc", a=3.6), cutoff=3.0)
    >>> len(nl), nl.senders.dtype, nl.shifts.shape
    (12, dtype('int64'), (12, 3))
    """

    senders: np.ndarray
    receivers: np.ndarray
    shifts: np.ndarray

    def __len__(self) -> int:
        return int(self.senders.shape[0])


def neighbour_list(
    positions: np.ndarray,
    cell: np.ndarray,
    pbc: Sequence[bool] | np.ndarray,
    cutoff: float,
) -> NeighbourList:
    """All ordered pairs (with periodic images) closer than ``cutoff``.

    Parameters
    ----------
    positions : np.ndarray
        [n_atoms, 3] Cartesian positions in Å; they may lie outside the cell.
    cell : np.ndarray
        [3, 3] cell vectors as rows, in Å. Rows of non-periodic directions are ignored and may
        be zero.
    pbc : Sequence[bool] | np.ndarray
        [3] periodicity along each cell vector (a single bool applies to all three).
    cutoff : float
        Cutoff radius in Å, finite and positive. It may exceed the cell size.

    Returns
    -------
    NeighbourList
        int64, C-contiguous ``senders`` [n_edges], ``receivers`` [n_edges] and
        ``shifts`` [n_edges, 3], sorted by sender.

    Raises
    ------
    ValueError
        If the shapes are wrong, positions or cell contain NaN or infinity, the cutoff is not
        finite and positive, a periodic cell vector is zero, the periodic cell vectors are
        linearly dependent (zero volume), or two atoms (or an atom and a periodic image of
        another) are closer than 1e-8 Å.

    Examples
    --------
    A water molecule, no periodicity; the O-H bonds appear in both directions:

    >>> import numpy as np
    >>> positions = np.array([[0.0, 0.0, 0.119], [0.0, 0.763, -0.477], [0.0, -0.763, -0.477]])
    >>> nl = neighbour_list(positions, np.zeros((3, 3)), [False, False, False], cutoff=1.2)
    >>> sorted((int(i), int(j)) for i, j in zip(nl.senders, nl.receivers))
    [(0, 1), (0, 2), (1, 0), (2, 0)]

    One atom in a 2 Å simple cubic cell sees its six nearest images:

    >>> nl = neighbour_list(np.zeros((1, 3)), 2.0 * np.eye(3), [True] * 3, cutoff=2.5)
    >>> len(nl), int(np.abs(nl.shifts).sum(axis=1).max())
    (6, 1)
    """
    positions_nc, cell_cc, pbc_c, cutoff = validate_inputs(positions, cell, pbc, cutoff)
    n_atoms = positions_nc.shape[0]
    search_cell_cc = search_cell(positions_nc, cell_cc, pbc_c, cutoff)
    if n_atoms == 0:
        return _as_neighbour_list(np.empty(0), np.empty(0), np.empty((0, 3)))
    basis_cc = reduced_basis(cell_cc, pbc_c)
    if basis_cc is not None:  # the same lattice, searched in a reduced basis: S = S' @ M
        nl = neighbour_list(positions_nc, change_basis(cell_cc, pbc_c, basis_cc), pbc_c, cutoff)
        return _as_neighbour_list(nl.senders, nl.receivers, nl.shifts @ basis_cc)
    check_periodic_images(search_cell_cc, pbc_c, cutoff, n_atoms)
    unwrap_nc = np.zeros((n_atoms, 3), dtype=np.int64)
    if _is_sparse(search_cell_cc, cutoff, n_atoms):
        # periodic directions with a vacuum gap >= cutoff are searched as non-periodic, with
        # the atoms moved by whole cell vectors (unwrap_nc) so that none straddles the gap
        for axis in np.flatnonzero(pbc_c):
            moves_n = _vacuum_unwrap(positions_nc, search_cell_cc, int(axis), cutoff)
            if moves_n is None:
                continue
            positions_nc = positions_nc + moves_n[:, None] * cell_cc[axis]
            unwrap_nc[:, axis] = moves_n
            pbc_c = pbc_c.copy()
            pbc_c[axis] = False
            search_cell_cc = search_cell(positions_nc, cell_cc, pbc_c, cutoff)
    nl = _search(positions_nc, search_cell_cc, pbc_c, cutoff)
    if not unwrap_nc.any():
        return nl
    # positions' = positions + unwrap @ cell, so S = S' + unwrap[j] - unwrap[i]
    shifts = nl.shifts + unwrap_nc[nl.receivers] - unwrap_nc[nl.senders]
    return _as_neighbour_list(nl.senders, nl.receivers, shifts)


def _search(
    positions_nc: np.ndarray, search_cell_cc: np.ndarray, pbc_c: np.ndarray, cutoff: float
) -> NeighbourList:
    """The pair search of :func:`neighbour_list` on checked inputs and their search cell."""

    # Move every atom into the search box: wrap along periodic directions (remembering the
    # integer offsets) and translate along the non-periodic ones, which by construction are
    # orthogonal to the periodic ones, so the translation never changes a periodic offset.
    # Along a non-periodic row of length L the atoms then span [padding, padding + extent] in
    # Cartesian terms, well inside [0, L) since L = extent + cutoff + 2 padding.
    fractional_nc = np.linalg.solve(search_cell_cc.T, positions_nc.T).T
    offsets_nc = np.where(pbc_c, np.floor(fractional_nc), 0.0)
    lengths_c = row_norms(search_cell_cc)
    translation_c = np.where(pbc_c, 0.0, fractional_nc.min(axis=0) - PADDING / lengths_c)
    inside_nc = positions_nc - (offsets_nc + translation_c) @ search_cell_cc

    if _is_sparse(search_cell_cc, cutoff, len(inside_nc)) and len(inside_nc) <= DIRECT_MAX_ATOMS:
        search = _direct_search  # matscipy's bins would follow the box volume, not the atoms
    else:
        search = _matscipy_search
    i_p, j_p, shifts_inside_pc, vectors_inside_pc = search(
        inside_nc, search_cell_cc, pbc_c, float(cutoff)
    )
    i_p = i_p.astype(np.int64)
    j_p = j_p.astype(np.int64)
    # positions = inside + offsets @ cell + (a translation common to all atoms), so
    # D = inside[j] - inside[i] + S' @ cell = positions[j] - positions[i] + S @ cell
    # with S = S' + offsets[i] - offsets[j].
    shifts_pc = shifts_inside_pc + (offsets_nc[i_p] - offsets_nc[j_p]).astype(np.int64)

    vectors_pc = positions_nc[j_p] - positions_nc[i_p] + shifts_pc @ search_cell_cc
    scale = 1.0 + cutoff + np.abs(positions_nc).max()
    if np.any(np.abs(vectors_pc - vectors_inside_pc) > 1e-9 * scale):
        raise RuntimeError(
            "internal error: matscipy's shift vectors do not reproduce its edge vectors for "
            "the input positions; please report this with the structure that caused it"
        )
    lengths_p = np.linalg.norm(vectors_pc, axis=1)
    _check_not_coincident(lengths_p, i_p, j_p, shifts_pc)
    check_not_crowded(lengths_p, i_p, len(positions_nc))

    keep_p = lengths_p < cutoff  # the convention is strict; matscipy may keep d == cutoff
    return _as_neighbour_list(i_p[keep_p], j_p[keep_p], shifts_pc[keep_p])


def _is_sparse(search_cell_cc: np.ndarray, cutoff: float, n_atoms: int) -> bool:
    """True when the search box holds many more cutoff-sized bins than atoms."""
    bins = abs(float(np.linalg.det(search_cell_cc))) / cutoff**3
    return bins > SPARSE_BINS_PER_ATOM * max(n_atoms, 1)


def _vacuum_unwrap(
    positions_nc: np.ndarray, search_cell_cc: np.ndarray, axis: int, cutoff: float
) -> np.ndarray | None:
    """[n] integer moves along periodic cell vector ``axis`` that close the atoms up, or None.

    If the atoms' fractional coordinates along ``axis`` leave a gap g (fraction of the cell)
    with ``g h >= cutoff`` (h: plane spacing, Å), every image across the gap is at least the
    cutoff away, so after moving the atoms by whole cell vectors to one side of the gap the
    direction can be searched as non-periodic. None when there is no such gap.
    """
    fractional_n = np.linalg.solve(search_cell_cc.T, positions_nc.T).T[:, axis]
    wrapped_n = fractional_n - np.floor(fractional_n)
    sorted_n = np.sort(wrapped_n)
    gaps_n = np.diff(sorted_n, append=sorted_n[0] + 1.0)  # gap after each atom, with wrap
    largest = int(np.argmax(gaps_n))
    height = plane_spacings(search_cell_cc)[axis]
    if not gaps_n[largest] * height >= cutoff * (1.0 + 1e-9) + 1e-9:
        return None
    start = sorted_n[(largest + 1) % len(sorted_n)]  # the first atom after the gap
    return -np.floor(fractional_n - start + 1e-12).astype(np.int64)


def _matscipy_search(
    inside_nc: np.ndarray, search_cell_cc: np.ndarray, pbc_c: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """matscipy's cell-list search: ``(i [p], j [p], S [p, 3], D [p, 3])``."""
    return _matscipy_neighbour_list(
        "ijSD", positions=inside_nc, cell=search_cell_cc, pbc=pbc_c, cutoff=cutoff
    )


def _direct_search(
    inside_nc: np.ndarray, search_cell_cc: np.ndarray, pbc_c: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every pair and lattice shift, in chunks of senders: ``(i [p], j [p], S [p, 3], D [p, 3])``.

    For atoms wrapped into the cell (fractional coordinates in [0, 1) along periodic
    directions), shifts ``|S_c| <= ceil(cutoff / h_c)`` reach every image within the cutoff.
    Sorted by sender; the trivial pair (i, i, 0) is left out; ``|D| <= cutoff``, as matscipy.
    """
    n_atoms = len(inside_nc)
    reach_c = np.where(pbc_c, np.ceil(cutoff / plane_spacings(search_cell_cc)), 0).astype(int)
    grids = np.meshgrid(*(np.arange(-r, r + 1) for r in reach_c), indexing="ij")
    shifts_sc = np.stack([g.ravel() for g in grids], axis=1)  # [n_s, 3]
    images_sc = shifts_sc @ search_cell_cc
    shift_chunk = max(1, _DIRECT_CHUNK_PAIRS // n_atoms)
    sender_chunk = max(1, _DIRECT_CHUNK_PAIRS // (n_atoms * min(len(shifts_sc), shift_chunk)))
    parts = []
    for first in range(0, n_atoms, sender_chunk):
        senders = np.arange(first, min(first + sender_chunk, n_atoms))
        for first_s in range(0, len(shifts_sc), shift_chunk):
            shifts = np.arange(first_s, min(first_s + shift_chunk, len(shifts_sc)))
            # [c, s, n, 3]: D = inside[j] - inside[i] + S @ cell
            d_csnx = (
                inside_nc[None, None, :, :]
                + images_sc[shifts][None, :, None, :]
                - inside_nc[senders][:, None, None, :]
            )
            near_csn = np.einsum("csnx,csnx->csn", d_csnx, d_csnx) <= cutoff * cutoff
            c, s, j = np.nonzero(near_csn)
            i, shift_p = senders[c], shifts[s]
            keep = (i != j) | shifts_sc[shift_p].any(axis=1)
            parts.append(
                (i[keep], j[keep], shifts_sc[shift_p[keep]], d_csnx[c[keep], s[keep], j[keep]])
            )
    i_p, j_p, s_pc, d_pc = (np.concatenate(column) for column in zip(*parts, strict=True))
    order = np.argsort(i_p, kind="stable")
    return i_p[order], j_p[order], s_pc[order], d_pc[order]


def neighbour_list_from_atoms(atoms: ase.Atoms, cutoff: float) -> NeighbourList:
    """Neighbour list of an ASE ``Atoms`` object; see :func:`neighbour_list`.

    Parameters
    ----------
    atoms : ase.Atoms
        Structure; its positions, cell and pbc are used as they are (no wrapping).
    cutoff : float
        Cutoff radius in Å.

    Returns
    -------
    NeighbourList
        Edges such that ``edge_vectors = atoms.positions[receivers] -
        atoms.positions[senders] + shifts @ atoms.cell``.

    Examples
    --------
    >>> from ase.build import molecule
    >>> len(neighbour_list_from_atoms(molecule("H2O"), cutoff=1.2))
    4
    """
    return neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)


def _check_not_coincident(
    lengths_p: np.ndarray, i_p: np.ndarray, j_p: np.ndarray, shifts_pc: np.ndarray
) -> None:
    """Raise ValueError if an edge is shorter than ``COINCIDENT_DISTANCE``."""
    short_p = np.flatnonzero(lengths_p < COINCIDENT_DISTANCE)
    if short_p.size == 0:
        return
    p = short_p[0]
    i, j, shift = int(i_p[p]), int(j_p[p]), shifts_pc[p].tolist()
    where = "" if not any(shift) else f" (periodic image with cell shift {shift})"
    raise ValueError(
        f"atoms {i} and {j} are at the same position{where}: distance {lengths_p[p]:.3g} Å is "
        f"below {COINCIDENT_DISTANCE:g} Å; remove the duplicate atom"
    )


def _as_neighbour_list(
    senders: np.ndarray, receivers: np.ndarray, shifts: np.ndarray
) -> NeighbourList:
    """Pack edges as int64, C-contiguous arrays."""
    return NeighbourList(
        senders=np.ascontiguousarray(senders, dtype=np.int64),
        receivers=np.ascontiguousarray(receivers, dtype=np.int64),
        shifts=np.ascontiguousarray(shifts, dtype=np.int64).reshape(-1, 3),
    )
