"""The cell side of a neighbour search: input checks, the search cell, and its cost bounds.

Cell vectors are the rows of ``cell`` (as in ASE). Non-periodic directions need no cell vector
(a zero row is fine): the search runs in a temporary box, the *search cell*, whose non-periodic
vectors are orthogonal to the periodic ones and sized by the extent of the atoms along them,
never by their distance from the origin, so a molecule far from the origin costs the same as
one at the origin.

A periodic cell much thinner than the cutoff needs ``ceil(cutoff / height)`` images on each
side along the thin direction; more than ``MAX_PERIODIC_IMAGES`` lattice shifts in all (or more
than ``MAX_IMAGE_ATOMS`` atom images) is refused before anything is allocated
(:func:`check_periodic_images`), with a ``ValueError`` naming the cell height, the cutoff and
the number of images. A lattice given in a badly skewed basis (a cubic crystal whose third
vector is c + 1000 a, as long shear runs or some generators write) is searched in its
Minkowski-reduced basis (:func:`reduced_basis`): the same lattice, the same edges, with the
shifts returned in the caller's basis, at the cost of the reduced cell rather than of the skew.
A lattice whose shortest period (the distance from any atom to its own
nearest image) is under ``MIN_PERIOD`` is refused too (:func:`check_lattice_period`): no
material has one, and a model evaluated on it returns nonsense (one Cu atom in a cell 0.01 Å
long gives -6e19 eV), not an error. So is, at each search, an atom with
``CROWDED_NEIGHBOURS`` or more neighbours closer than ``CROWDED_DISTANCE``, or
``DENSE_NEIGHBOURS`` within ``DENSE_DISTANCE`` (:func:`check_not_crowded`): a Cu cluster whose
positions were given in nm gave -4e5 eV.

Used by both searches: :mod:`ase_equi.neighbours.host` (matscipy) and
:mod:`ase_equi.neighbours.device` (torch).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase.geometry.minkowski_reduction import minkowski_reduce

# Atoms closer than this (Å) are treated as coincident, which no potential can evaluate.
COINCIDENT_DISTANCE = 1e-8
# Longest periodic cell vector component accepted (Å): 10 cm. Beyond about 1e154 Å the
# squares in lengths and volumes overflow, which used to read as "zero volume".
MAX_CELL_LENGTH = 1e9
# Empty space (Å) added on both sides of the atoms along non-periodic directions.
PADDING = 1.0
# Relative tolerance below which periodic cell vectors count as linearly dependent.
_RANK_TOLERANCE = 1e-10
# Lattice shifts a search may examine (product over periodic directions of 2 ceil(rc / h) + 1).
MAX_PERIODIC_IMAGES = 100_000
# Atom images a search may examine (atoms x lattice shifts).
MAX_IMAGE_ATOMS = 2**27
# Shortest lattice period (Å) accepted: under the shortest bond of any material (H2, 0.74 Å).
MIN_PERIOD = 0.5
# A basis whose periodic rows' orthogonality defect (product of lengths over the volume) is
# at least this is replaced by its Minkowski-reduced one (hexagonal cells: 1.15).
SKEWED_DEFECT = 2.0
# Largest entry of a basis change taken from the reduction: the caller's shifts grow with it,
# and so does the rounding in ``shifts @ cell`` downstream.
MAX_BASIS_CHANGE = 2**20
# An atom with CROWDED_NEIGHBOURS or more other atoms (or images) closer than CROWDED_DISTANCE
# (Å) is refused: no material is that dense (positions in nm read as Å look like this), while a
# close pair or a triple, as in a collision cascade or a dimer scan, is allowed.
CROWDED_DISTANCE = 0.75
CROWDED_NEIGHBOURS = 4
# Nor may an atom have DENSE_NEIGHBOURS or more within DENSE_DISTANCE (Å): the committed molecular
# MD at 1000 K has at most three (a CH3 group), CH4 or NH4+ could reach four, while a lattice of
# 0.3 Å³ an atom with periods of 0.6-0.8 Å has fourteen.
DENSE_DISTANCE = 1.0
DENSE_NEIGHBOURS = 6
# Both bounds as (distance in Å, count).
CROWDING = ((CROWDED_DISTANCE, CROWDED_NEIGHBOURS), (DENSE_DISTANCE, DENSE_NEIGHBOURS))


def check_positions(positions: np.ndarray) -> None:
    """Refuse non-finite positions (``[n_atoms, 3]``, Å), naming the first bad atom.

    Raises
    ------
    ValueError
        "positions contain NaN or infinity at atom 17 ([nan, 0.0, 0.0])".

    Examples
    --------
    >>> check_positions(np.array([[0.0, 0.0, 0.0], [np.nan, 0.0, 0.0]]))
    Traceback (most recent call last):
    ...
    ValueError: positions contain NaN or infinity at atom 1 ([nan, 0.0, 0.0])
    """
    positions_nc = np.asarray(positions, dtype=np.float64)
    bad_n = np.flatnonzero(~np.isfinite(positions_nc).all(axis=1))
    if bad_n.size:
        raise ValueError(
            f"positions contain NaN or infinity at atom {bad_n[0]} "
            f"({positions_nc[bad_n[0]].tolist()})"
        )


def validate_inputs(
    positions: np.ndarray,
    cell: np.ndarray,
    pbc: Sequence[bool] | np.ndarray,
    cutoff: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Check and convert the inputs; raise ValueError naming the first problem found."""
    positions_nc = np.asarray(positions, dtype=np.float64)
    if positions_nc.ndim != 2 or positions_nc.shape[1] != 3:
        raise ValueError(f"positions must have shape [n_atoms, 3], got {positions_nc.shape}")
    check_positions(positions_nc)
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
    longest = float(np.abs(cell_cc[pbc_c]).max(initial=0.0))
    if longest > MAX_CELL_LENGTH:
        raise ValueError(
            f"a periodic cell vector has a component of {longest:.3g} Å, beyond the "
            f"{MAX_CELL_LENGTH:.0e} Å any periodic cell needs: check the units (cell vectors "
            f"are rows, in Å), or set pbc to False along directions that are not periodic "
            f"(cell = {cell_cc.tolist()}, pbc = {pbc_c.tolist()})"
        )
    try:
        cutoff = float(cutoff)
    except (TypeError, ValueError):
        raise ValueError(f"cutoff must be a number in Å, got {cutoff!r}") from None
    if not np.isfinite(cutoff) or cutoff <= 0.0:
        raise ValueError(f"cutoff must be finite and positive, got {cutoff}")
    return positions_nc, cell_cc, pbc_c, cutoff


def search_cell(
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
    norms_k = row_norms(periodic_kc)
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
        search_cell_cc[axis] = (extent + cutoff + 2.0 * PADDING) * direction_c
    return search_cell_cc


def reduced_basis(cell_cc: np.ndarray, pbc_c: np.ndarray) -> np.ndarray | None:
    """[3, 3] integer matrix M for which the periodic rows of ``M @ cell`` are a Minkowski-
    reduced basis of the same periodic lattice, or None where the basis is not skewed.

    M changes only periodic rows, among themselves, and has determinant ±1, so a lattice
    shift S in the caller's basis is ``S @ inv(M)`` in the reduced one (both integer), and the
    shift S' found in the reduced basis is ``S' @ M`` in the caller's. M is returned only
    when the periodic rows (two or three) are skewed, with an orthogonality defect (product of
    their lengths over their volume) of at least ``SKEWED_DEFECT``, and no entry of M exceeds
    ``MAX_BASIS_CHANGE``. Non-periodic rows may hold anything.

    Examples
    --------
    >>> skewed = np.array([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [3000.0, 0.0, 3.0]])
    >>> reduced_basis(skewed, np.array([True, True, True])) @ skewed
    array([[3., 0., 0.],
           [0., 3., 0.],
           [0., 0., 3.]])
    >>> reduced_basis(np.eye(3) * 3.0, np.array([True, True, True])) is None
    True
    """
    periodic_kc = cell_cc[pbc_c]
    if len(periodic_kc) < 2 or not SKEWED_DEFECT <= orthogonality_defect(periodic_kc) < np.inf:
        return None  # not skewed, or dependent or non-finite rows (refused by the search)
    _, basis_cc = minkowski_reduce(np.where(pbc_c[:, None], cell_cc, 0.0), pbc=pbc_c)
    if np.abs(basis_cc).max() > MAX_BASIS_CHANGE or (basis_cc == np.eye(3)).all():
        return None
    # a reduced basis is never skewed (3D: defect at most about 1.4), so a search in it never
    # reduces again; should rounding leave it skewed, the caller's basis is kept
    if not orthogonality_defect(change_basis(cell_cc, pbc_c, basis_cc)[pbc_c]) < SKEWED_DEFECT:
        return None
    return np.asarray(basis_cc, dtype=np.int64)


def orthogonality_defect(periodic_kc: np.ndarray) -> float:
    """Product of the lengths of the rows of ``periodic_kc`` ([k, 3], k = 2 or 3) over the
    volume (area) they span: 1 for orthogonal rows, inf for dependent or non-finite ones."""
    volume = float(np.sqrt(abs(float(np.linalg.det(periodic_kc @ periodic_kc.T)))))
    length = float(np.prod(row_norms(periodic_kc)))
    defect = length / volume if volume > 0.0 else float("inf")
    return defect if np.isfinite(defect) else float("inf")


def change_basis(cell_cc: np.ndarray, pbc_c: np.ndarray, basis_cc: np.ndarray) -> np.ndarray:
    """``cell`` with its periodic rows replaced by those of ``basis @ cell`` (``basis`` from
    :func:`reduced_basis`); non-periodic rows, which may hold anything, are kept."""
    periodic_cc = np.where(pbc_c[:, None], cell_cc, 0.0)
    return np.where(pbc_c[:, None], basis_cc @ periodic_cc, cell_cc)


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
    heights_c = plane_spacings(search_cell_cc)
    if (heights_c[pbc_c] < MIN_PERIOD).any():
        check_lattice_period(search_cell_cc, pbc_c)
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


def check_lattice_period(search_cell_cc: np.ndarray, pbc_c: np.ndarray) -> None:
    """Refuse a lattice whose shortest period is under ``MIN_PERIOD`` (Å).

    The shortest period is the length of the shortest nonzero lattice vector of the periodic
    rows, found by Minkowski reduction. A cell can be thin (small plane spacing) and still have
    no short period; only the period itself is checked.

    Raises
    ------
    ValueError
        Naming the period, the lattice vector (Å) and the cell.

    Examples
    --------
    >>> check_lattice_period(np.diag([0.01, 3.0, 3.0]), np.array([True, True, True]))
    Traceback (most recent call last):
    ...
    ValueError: the lattice has a period of 0.01 Å (lattice vector [0.01, 0, 0]): ...
    >>> skewed = np.array([[10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [5.0, 3.3, 0.2]])
    >>> check_lattice_period(skewed, np.array([True, True, True]))  # thin, no short period
    """
    reduced_cc, _ = minkowski_reduce(search_cell_cc, pbc=pbc_c)
    lengths_k = row_norms(reduced_cc[pbc_c])
    shortest = int(np.argmin(lengths_k))
    if lengths_k[shortest] >= MIN_PERIOD:
        return
    vector = ", ".join(f"{x:.3g}" for x in reduced_cc[pbc_c][shortest])
    raise ValueError(
        f"the lattice has a period of {lengths_k[shortest]:.3g} Å (lattice vector "
        f"[{vector}]): every atom is that close to its "
        f"own periodic image, under the {MIN_PERIOD:g} Å that any material allows. Check the "
        f"periodic cell vectors (rows, in Å): {search_cell_cc[pbc_c].tolist()}"
    )


def check_not_crowded(lengths_p: np.ndarray, centres_p: np.ndarray, n_atoms: int) -> None:
    """Refuse a structure in which an atom has ``count`` or more neighbours closer than
    ``distance``, for either bound of ``CROWDING`` (``lengths_p`` [p] in Å of edges around
    ``centres_p``; edges beyond the search's cutoff are not counted).

    Examples
    --------
    >>> check_not_crowded(np.array([0.3, 0.3]), np.array([0, 1]), 2)  # a dimer at 0.3 Å
    >>> check_not_crowded(np.full(4, 0.26), np.zeros(4, dtype=int), 5)
    Traceback (most recent call last):
    ...
    ValueError: atom 0 has 4 neighbours closer than 0.75 Å (the nearest at 0.26 Å): ...
    >>> check_not_crowded(np.full(6, 0.9), np.zeros(6, dtype=int), 7)
    Traceback (most recent call last):
    ...
    ValueError: atom 0 has 6 neighbours closer than 1 Å (the nearest at 0.9 Å): ...
    """
    for distance, limit in CROWDING:
        close_p = lengths_p < distance
        if int(close_p.sum()) < limit:
            continue
        counts_n = np.bincount(centres_p[close_p], minlength=n_atoms)
        atom = int(np.argmax(counts_n))
        if counts_n[atom] >= limit:
            nearest = float(lengths_p[centres_p == atom].min())
            raise crowded_error(atom, int(counts_n[atom]), nearest, distance)


def crowded_error(atom: int, count: int, nearest: float, distance: float) -> ValueError:
    """The error of :func:`check_not_crowded` (also raised by the device search)."""
    return ValueError(
        f"atom {atom} has {count} neighbours closer than {distance:g} Å (the nearest "
        f"at {nearest:.3g} Å): no material is that dense, and a model's number there would be "
        "nonsense. Are the positions in Å (not nm), and is the cell right? (A close pair or "
        "three atoms, as in a collision cascade, are computed.)"
    )


def plane_spacings(search_cell_cc: np.ndarray) -> np.ndarray:
    """[3] distances (Å) between the lattice planes spanned by each pair of cell rows."""
    volume = abs(float(np.linalg.det(search_cell_cc)))
    areas_c = row_norms(np.cross(np.roll(search_cell_cc, -1, 0), np.roll(search_cell_cc, -2, 0)))
    return volume / areas_c


def row_norms(matrix: np.ndarray) -> np.ndarray:
    """Euclidean norm of each row: [k, 3] -> [k]."""
    return np.sqrt(np.einsum("kc,kc->k", matrix, matrix))


def _norm(vector: np.ndarray) -> float:
    """Euclidean norm of one vector: [3] -> scalar (cheaper than np.linalg.norm)."""
    return float(np.sqrt(vector @ vector))
