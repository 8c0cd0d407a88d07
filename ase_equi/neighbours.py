"""Neighbour lists for any periodicity, built on matscipy.

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

Non-periodic directions need no cell vector (a zero row is fine): the search runs in a
temporary box whose non-periodic vectors are orthogonal to the periodic ones and sized by the
extent of the atoms along them, never by their distance from the origin, so a molecule far
from the origin costs the same as one at the origin.

Cost bounds
-----------
- A periodic cell much thinner than the cutoff needs ``ceil(cutoff / height)`` images on each
  side along the thin direction; more than ``MAX_PERIODIC_IMAGES`` lattice shifts in all (or
  more than ``MAX_IMAGE_ATOMS`` atom images) is refused before anything is allocated, with a
  ``ValueError`` naming the cell height, the cutoff and the number of images.
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

__all__ = ["NeighbourList", "neighbour_list", "neighbour_list_from_atoms"]

# Atoms closer than this (Å) are treated as coincident, which no potential can evaluate.
COINCIDENT_DISTANCE = 1e-8
# Empty space (Å) added on both sides of the atoms along non-periodic directions.
_PADDING = 1.0
# Relative tolerance below which periodic cell vectors count as linearly dependent.
_RANK_TOLERANCE = 1e-10
# Lattice shifts a search may examine (product over periodic directions of 2 ceil(rc / h) + 1).
MAX_PERIODIC_IMAGES = 100_000
# Atom images a search may examine (atoms x lattice shifts).
MAX_IMAGE_ATOMS = 2**27
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
    positions_nc, cell_cc, pbc_c, cutoff = _validate(positions, cell, pbc, cutoff)
    n_atoms = positions_nc.shape[0]
    search_cell_cc = _search_cell(positions_nc, cell_cc, pbc_c, cutoff)
    if n_atoms == 0:
        return _as_neighbour_list(np.empty(0), np.empty(0), np.empty((0, 3)))
    check_periodic_images(search_cell_cc, pbc_c, cutoff, n_atoms)
    unwrap_nc = np.zeros((n_atoms, 3), dtype=np.int64)
    if _is_sparse(search_cell_cc, cutoff, n_atoms):
        # periodic directions with a vacuum gap >= cutoff are searched as non-periodic, with
        # the atoms moved by whole cell vectors (unwrap_nc) so that none straddles the gap
        for axis in np.flatnonzero(pbc_c):
            moves_n = _vacuum_unwrap(positions_nc, search_cell_cc, axis, cutoff)
            if moves_n is None:
                continue
            positions_nc = positions_nc + moves_n[:, None] * cell_cc[axis]
            unwrap_nc[:, axis] = moves_n
            pbc_c = pbc_c.copy()
            pbc_c[axis] = False
            search_cell_cc = _search_cell(positions_nc, cell_cc, pbc_c, cutoff)
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
    lengths_c = _row_norms(search_cell_cc)
    translation_c = np.where(pbc_c, 0.0, fractional_nc.min(axis=0) - _PADDING / lengths_c)
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

    keep_p = lengths_p < cutoff  # the convention is strict; matscipy may keep d == cutoff
    return _as_neighbour_list(i_p[keep_p], j_p[keep_p], shifts_pc[keep_p])


def check_periodic_images(
    search_cell_cc: np.ndarray, pbc_c: np.ndarray, cutoff: float, n_atoms: int
) -> None:
    """Refuse a search that needs too many periodic images (a cell far thinner than the cutoff).

    Along periodic direction i, lattice planes are ``h_i = V / |a_j x a_k|`` apart (Å), and
    shifts up to ``k_i = ceil(cutoff / h_i)`` can bring an image within the cutoff.

    Raises
    ------
    ValueError
        If ``prod(2 k_i + 1)`` exceeds ``MAX_PERIODIC_IMAGES`` or ``n_atoms`` times it exceeds
        ``MAX_IMAGE_ATOMS``; the message names the thinnest direction, its height and the
        cutoff.
    """
    heights_c = _plane_spacings(search_cell_cc)
    reach_c = np.where(pbc_c, np.ceil(cutoff / heights_c), 0.0)
    images = float(np.prod(2.0 * reach_c + 1.0))
    if images <= MAX_PERIODIC_IMAGES and images * n_atoms <= MAX_IMAGE_ATOMS:
        return
    axis = int(np.argmax(reach_c))
    raise ValueError(
        f"periodic cell height along cell vector {axis} is {heights_c[axis]:.4g} Å, far below "
        f"the neighbour-list cutoff {cutoff:g} Å: the search would need {int(reach_c[axis])} "
        f"periodic images on each side along it ({images:.4g} lattice shifts for {n_atoms} "
        f"atoms; limits {MAX_PERIODIC_IMAGES} shifts and {MAX_IMAGE_ATOMS} atom images). "
        "Check the cell (cell vectors are rows, in Å), or set pbc to False along that direction"
    )


def _plane_spacings(search_cell_cc: np.ndarray) -> np.ndarray:
    """[3] distances (Å) between the lattice planes spanned by each pair of cell rows."""
    volume = abs(float(np.linalg.det(search_cell_cc)))
    areas_c = _row_norms(np.cross(np.roll(search_cell_cc, -1, 0), np.roll(search_cell_cc, -2, 0)))
    return volume / areas_c


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
    height = _plane_spacings(search_cell_cc)[axis]
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
    reach_c = np.where(pbc_c, np.ceil(cutoff / _plane_spacings(search_cell_cc)), 0).astype(int)
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


def _validate(
    positions: np.ndarray,
    cell: np.ndarray,
    pbc: Sequence[bool] | np.ndarray,
    cutoff: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Check and convert the inputs; raise ValueError naming the first problem found."""
    positions_nc = np.asarray(positions, dtype=np.float64)
    if positions_nc.ndim != 2 or positions_nc.shape[1] != 3:
        raise ValueError(f"positions must have shape [n_atoms, 3], got {positions_nc.shape}")
    bad_n = np.flatnonzero(~np.isfinite(positions_nc).all(axis=1))
    if bad_n.size:
        raise ValueError(
            f"positions contain NaN or infinity at atom {bad_n[0]} "
            f"({positions_nc[bad_n[0]].tolist()})"
        )
    cell_cc = np.asarray(cell, dtype=np.float64)
    if cell_cc.shape != (3, 3):
        raise ValueError(f"cell must have shape [3, 3] (vectors as rows), got {cell_cc.shape}")
    pbc_c = np.asarray(pbc, dtype=bool)
    if pbc_c.ndim == 0:
        pbc_c = np.full(3, bool(pbc_c))
    if pbc_c.shape != (3,):
        raise ValueError(f"pbc must have three entries, got shape {pbc_c.shape}")
    if not np.isfinite(cell_cc[pbc_c]).all():
        raise ValueError(f"cell contains NaN or infinity in a periodic vector: {cell_cc.tolist()}")
    try:
        cutoff = float(cutoff)
    except (TypeError, ValueError):
        raise ValueError(f"cutoff must be a number in Å, got {cutoff!r}") from None
    if not np.isfinite(cutoff) or cutoff <= 0.0:
        raise ValueError(f"cutoff must be finite and positive, got {cutoff}")
    return positions_nc, cell_cc, pbc_c, cutoff


def _row_norms(matrix: np.ndarray) -> np.ndarray:
    """Euclidean norm of each row: [k, 3] -> [k]."""
    return np.sqrt(np.einsum("kc,kc->k", matrix, matrix))


def _norm(vector: np.ndarray) -> float:
    """Euclidean norm of one vector: [3] -> scalar (cheaper than np.linalg.norm)."""
    return float(np.sqrt(vector @ vector))


def _search_cell(
    positions_nc: np.ndarray, cell_cc: np.ndarray, pbc_c: np.ndarray, cutoff: float
) -> np.ndarray:
    """Cell in which matscipy searches: the periodic vectors plus a finite box around the atoms.

    Periodic rows are copied from ``cell``. Each non-periodic row becomes L u, where the unit
    vectors u are orthonormal to each other and to the span of the periodic vectors (so
    fractional coordinates along periodic vectors are unchanged by any translation along u),
    and L = (extent of the atoms along u) + cutoff + padding. Where possible u follows the
    caller's own non-periodic vector; otherwise a Cartesian axis is used.

    Raises
    ------
    ValueError
        If a periodic vector is zero or the periodic vectors are linearly dependent.
    """
    periodic = np.flatnonzero(pbc_c)
    periodic_kc = cell_cc[periodic]
    norms_k = _row_norms(periodic_kc)
    for axis, norm in zip(periodic, norms_k, strict=True):
        if norm == 0.0:
            raise ValueError(
                f"cell vector {axis} is zero but direction {axis} is periodic; give a nonzero "
                "cell vector or set pbc to False along it"
            )
    # Orthonormal basis of the periodic span (Gram-Schmidt); a vanishing residual means the
    # periodic vectors are linearly dependent and the periodic cell has zero volume.
    basis_bc = np.zeros((0, 3))
    for axis, vector_c, norm in zip(periodic, periodic_kc, norms_k, strict=True):
        residual_c = vector_c - (basis_bc @ vector_c) @ basis_bc
        residual_norm = _norm(residual_c)
        if residual_norm <= _RANK_TOLERANCE * norm:
            raise ValueError(
                f"periodic cell has zero volume: cell vector {axis} lies in the span of the "
                f"other periodic vectors (cell = {cell_cc.tolist()}, pbc = {pbc_c.tolist()})"
            )
        basis_bc = np.vstack([basis_bc, residual_c / residual_norm])

    search_cell_cc = cell_cc.copy()
    non_periodic = np.flatnonzero(~pbc_c)
    candidates = [cell_cc[axis] for axis in non_periodic] + list(np.eye(3))
    for axis in non_periodic:
        for candidate_c in candidates:
            norm = _norm(candidate_c)
            if not np.isfinite(norm) or norm == 0.0:
                continue
            residual_c = candidate_c - (basis_bc @ candidate_c) @ basis_bc
            residual_norm = _norm(residual_c)
            if residual_norm > 1e-6 * norm:
                break  # the three Cartesian axes guarantee that this happens
        direction_c = residual_c / residual_norm
        basis_bc = np.vstack([basis_bc, direction_c])
        along_n = positions_nc @ direction_c
        extent = float(along_n.max() - along_n.min()) if along_n.size else 0.0
        search_cell_cc[axis] = (extent + cutoff + 2.0 * _PADDING) * direction_c
    return search_cell_cc


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
