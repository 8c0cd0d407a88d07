"""Neighbour list computed with torch on the compute device (a GPU), any periodicity.

Same convention and same edge set as :func:`ase_equi.neighbours.host.neighbour_list` (every ordered
pair and periodic image closer than the cutoff, strictly; ``edge_vectors = positions[receivers]
− positions[senders] + shifts @ cell``), for the cutoff larger than the cell too; only the order
of the edges differs. The inputs are checked on the host exactly as there (they come from ASE,
on the host anyway), and the search cell, whose non-periodic vectors enclose the atoms, is the
same. The pair search itself runs on ``device``:

1. atoms are wrapped into the cell along periodic directions (the integer offsets are kept);
2. periodic images ("ghosts") of all atoms are made for every lattice shift that can reach
   within the cutoff (``ceil(cutoff / plane spacing)`` per periodic direction), and those
   farther than the cutoff from the atoms' bounding box are dropped;
3. the ghosts are sorted into a grid of bins at least ``cutoff`` wide; each atom compares its
   distance with the ghosts of its own and the 26 neighbouring bins.

Building a list reads sizes back from the device (the number of ghosts and of candidate
pairs): it is meant for a graph that stays on the device between Verlet-list rebuilds
(:class:`~ase_equi.graph.resident.ResidentGraph`), not for every step.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .cell import (
    COINCIDENT_DISTANCE,
    CROWDING,
    change_basis,
    check_periodic_images,
    crowded_error,
    plane_spacings,
    reduced_basis,
    search_cell,
    validate_inputs,
)

# Candidate pairs examined at once (bounds the memory of a build: about 100 bytes a pair).
PAIRS_PER_BATCH = 2**24


def device_neighbour_list(
    positions: np.ndarray,
    cell: np.ndarray,
    pbc: Sequence[bool] | np.ndarray,
    cutoff: float,
    *,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(senders [E], receivers [E], shifts [E, 3])``, int64 tensors on ``device``.

    Raises ``ValueError`` for the same inputs as :func:`ase_equi.neighbours.host.neighbour_list`
    (shapes, NaN, zero or dependent periodic cell vectors, coincident atoms, a periodic cell
    so thin that the search would need too many images).
    """
    positions_nc, cell_cc, pbc_c, cutoff = validate_inputs(positions, cell, pbc, cutoff)
    search_cc = search_cell(positions_nc, cell_cc, pbc_c, cutoff)
    empty = torch.zeros(0, dtype=torch.long, device=device)
    if positions_nc.shape[0] == 0:
        return empty, empty, empty.reshape(0, 3)
    basis_cc = reduced_basis(cell_cc, pbc_c)
    if basis_cc is not None:  # the same lattice, searched in a reduced basis: S = S' @ M
        cell_in_basis = change_basis(cell_cc, pbc_c, basis_cc)
        i, j, s = device_neighbour_list(positions_nc, cell_in_basis, pbc_c, cutoff, device=device)
        return i, j, integer_matmul(s, basis_cc)
    check_periodic_images(search_cc, pbc_c, cutoff, positions_nc.shape[0])

    # images per periodic direction: shifts up to ceil(cutoff / plane spacing) can bring an
    # image within the cutoff
    spacing = plane_spacings(search_cc)
    reach = [int(np.ceil(cutoff / spacing[i])) if pbc_c[i] else 0 for i in range(3)]
    lattice_shifts = torch.tensor(
        list(itertools.product(*(range(-r, r + 1) for r in reach))),
        dtype=torch.float64,
        device=device,
    )  # [n_s, 3]

    pos = torch.as_tensor(positions_nc, dtype=torch.float64, device=device)
    basis = torch.as_tensor(search_cc, dtype=torch.float64, device=device)
    periodic = torch.as_tensor(pbc_c, device=device)
    fractional = torch.linalg.solve(basis.T, pos.T).T
    offsets = torch.where(periodic, torch.floor(fractional), torch.zeros_like(fractional))
    wrapped = pos - offsets @ basis  # [n, 3]
    ghosts = _binned_ghosts(wrapped, lattice_shifts @ basis, lattice_shifts, cutoff)

    senders, receivers, shifts = [], [], []
    per_atom = ghosts.counts.sum(1)
    for first, last in _batches(per_atom.cumsum(0).tolist(), PAIRS_PER_BATCH):
        edges = _edges_of_atoms(first, last, wrapped, ghosts, cutoff)
        if edges is None:
            continue
        i, j, s = edges
        # wrapped = positions − offsets @ cell, so the shift for the original positions is
        # S_ghost − offsets[j] + offsets[i]
        senders.append(i)
        receivers.append(j)
        shifts.append((s - offsets[j] + offsets[i]).round().long())
    if not senders:
        return empty, empty, empty.reshape(0, 3)
    return torch.cat(senders), torch.cat(receivers), torch.cat(shifts)


def integer_matmul(shifts: torch.Tensor, matrix: np.ndarray) -> torch.Tensor:
    """``shifts @ matrix`` for int64 ``shifts`` [E, 3] and an integer [3, 3] ``matrix``, on
    any device (CUDA has no integer matmul): in float64, exact while entries stay below 2⁵³."""
    product = shifts.to(torch.float64) @ torch.as_tensor(
        matrix, dtype=torch.float64, device=shifts.device
    )
    return product.round().to(torch.long)


@dataclass
class _Ghosts:
    """Periodic images of the wrapped atoms near their box, sorted by bin, and the candidate
    ghosts of each atom: those of bins ``start[a, b] … start[a, b] + counts[a, b]`` for the
    27 bins ``b`` around atom ``a``."""

    positions: torch.Tensor  # [g, 3]
    atom: torch.Tensor  # [g] the atom each ghost is an image of
    shift: torch.Tensor  # [g, 3] its lattice shift (float)
    start: torch.Tensor  # [n, 27]
    counts: torch.Tensor  # [n, 27]


def _binned_ghosts(
    wrapped: torch.Tensor, images: torch.Tensor, lattice_shifts: torch.Tensor, cutoff: float
) -> _Ghosts:
    """Ghosts of ``wrapped [n, 3]`` under ``images [n_s, 3]`` (= lattice_shifts @ cell) within
    the cutoff of the atoms' box, sorted into bins at least ``cutoff`` wide."""
    n = wrapped.shape[0]
    low, high = wrapped.min(0).values - cutoff, wrapped.max(0).values + cutoff
    ghosts = (wrapped[None] + images[:, None]).reshape(-1, 3)
    kept = torch.nonzero(((ghosts >= low) & (ghosts <= high)).all(1)).squeeze(1)
    ghosts = ghosts.index_select(0, kept)
    ghost_atom = kept % n
    ghost_shift = lattice_shifts.index_select(0, kept // n)

    extent = high - low
    n_bins = torch.clamp(torch.floor(extent / cutoff), min=1).long()
    width = extent / n_bins

    def bin_of(x: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.floor((x - low) / width).long(), n_bins - 1).clamp(min=0)

    def linear(b: torch.Tensor) -> torch.Tensor:
        return (b[..., 0] * n_bins[1] + b[..., 1]) * n_bins[2] + b[..., 2]

    ghost_bins, order = torch.sort(linear(bin_of(ghosts)))
    neighbour_bins = torch.tensor(
        list(itertools.product((-1, 0, 1), repeat=3)), dtype=torch.long, device=wrapped.device
    )  # [27, 3]
    query_bins = bin_of(wrapped)[:, None, :] + neighbour_bins[None]  # [n, 27, 3]
    inside = ((query_bins >= 0) & (query_bins < n_bins)).all(-1)
    keys = linear(query_bins.clamp(min=0))
    start = torch.searchsorted(ghost_bins, keys, right=False)
    stop = torch.searchsorted(ghost_bins, keys, right=True)
    counts = torch.where(inside, stop - start, torch.zeros_like(start))  # [n, 27]
    return _Ghosts(ghosts[order], ghost_atom[order], ghost_shift[order], start, counts)


def _edges_of_atoms(
    first: int, last: int, wrapped: torch.Tensor, ghosts: _Ghosts, cutoff: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Edges ``(i, j, S_ghost)`` of senders ``first … last-1`` (None if they have no
    candidates); ``ValueError`` naming two coincident atoms."""
    c = ghosts.counts[first:last].reshape(-1)
    total = int(c.sum())
    if total == 0:
        return None
    device = wrapped.device
    query = torch.arange(first, last, device=device).repeat_interleave(27)
    i = query.repeat_interleave(c)
    begin = ghosts.start[first:last].reshape(-1).repeat_interleave(c)
    group_start = torch.cumsum(c, 0) - c
    g = begin + torch.arange(total, device=device) - group_start.repeat_interleave(c)
    lengths = torch.linalg.norm(ghosts.positions[g] - wrapped[i], dim=1)
    j, s = ghosts.atom[g], ghosts.shift[g]
    itself = (i == j) & (s == 0).all(1)
    close = (lengths < COINCIDENT_DISTANCE) & ~itself
    if bool(close.any()):
        p = int(torch.nonzero(close)[0])
        raise ValueError(
            f"atoms {int(i[p])} and {int(j[p])} are at the same position: distance "
            f"{float(lengths[p]):.3g} Å is below {COINCIDENT_DISTANCE:g} Å; remove the "
            "duplicate atom"
        )
    for distance, limit in CROWDING:  # the senders' candidates are all here
        crowded = (lengths < distance) & ~itself
        if int(crowded.sum()) < limit:
            continue
        counts = torch.bincount(i[crowded] - first, minlength=last - first)
        atom = int(torch.argmax(counts))
        if int(counts[atom]) >= limit:
            nearest = float(lengths[crowded & (i == first + atom)].min())
            raise crowded_error(first + atom, int(counts[atom]), nearest, distance)
    edge = torch.nonzero((lengths < cutoff) & ~itself).squeeze(1)
    return i[edge], j[edge], s[edge]


def _batches(cumulative: list[int], limit: int) -> list[tuple[int, int]]:
    """Consecutive atom ranges whose candidate pairs add up to about ``limit`` at most (one
    atom at least per range), from the running totals of candidates per atom."""
    ranges, first, base = [], 0, 0
    for atom, total in enumerate(cumulative):
        if total - base > limit and atom > first:
            ranges.append((first, atom))
            first, base = atom, cumulative[atom - 1]
    ranges.append((first, len(cumulative)))
    return ranges
