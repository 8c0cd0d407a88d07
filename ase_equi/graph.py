"""Atoms → tensors: the graph a model sees, and the glossary of its fields.

Glossary (n = atoms, e = edges, G = graphs in a batch; cell vectors are rows, as in ASE):

=================  ==============  ======================================================
field              shape           meaning
=================  ==============  ======================================================
``positions``      [n, 3]          Cartesian positions, Å
``cell``           [G, 3, 3]       cell vectors as rows, Å (zero rows allowed where not periodic)
``atomic_numbers`` [n]             Z of each atom
``elements``       [n]             index of each atom's Z in the model's element table
``senders``        [e]             atom i of matscipy's pair (i, j)
``receivers``      [e]             atom j; messages go sender → receiver
``shifts``         [e, 3]          integer cell offsets S of the image of j (stored as float)
``batch``          [n]             graph index of each atom
=================  ==============  ======================================================

Edge vectors are ``positions[receivers] − positions[senders] + shifts @ cell[batch[senders]]``
(matscipy's D with senders = i, receivers = j).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import ase
import numpy as np
import torch
from ase.data import chemical_symbols

from .neighbours import NeighbourList, neighbour_list_from_atoms


@dataclass
class Graph:
    """Tensors of one structure or a batch of structures (see the module glossary)."""

    positions: torch.Tensor
    cell: torch.Tensor
    atomic_numbers: torch.Tensor
    elements: torch.Tensor
    senders: torch.Tensor
    receivers: torch.Tensor
    shifts: torch.Tensor
    batch: torch.Tensor
    num_graphs: int

    @property
    def num_atoms(self) -> int:
        return int(self.positions.shape[0])

    def to(self, device: torch.device | str) -> Graph:
        fields = {k: v.to(device) if torch.is_tensor(v) else v for k, v in vars(self).items()}
        return Graph(**fields)


def edge_vectors(
    positions: torch.Tensor,
    cell: torch.Tensor,
    shifts: torch.Tensor,
    senders: torch.Tensor,
    receivers: torch.Tensor,
    batch: torch.Tensor,
) -> torch.Tensor:
    """``[e, 3]`` vectors r_j − r_i + S·cell from sender i to (the image of) receiver j, Å."""
    # index_select rather than advanced indexing: its backward is an index_add, which on CPU
    # is far cheaper than the accumulating index_put of indexing's backward
    lattice = torch.einsum("ek,ekc->ec", shifts, cell.index_select(0, batch[senders]))
    return positions.index_select(0, receivers) - positions.index_select(0, senders) + lattice


def element_indices(atomic_numbers: np.ndarray, elements: Sequence[int], model_name: str = "model"):
    """Map atomic numbers to indices in ``elements``; unknown elements raise ``ValueError``.

    Examples
    --------
    >>> element_indices(np.array([8, 1, 1]), (1, 8)).tolist()
    [1, 0, 0]
    """
    table = np.full(119, -1, dtype=np.int64)
    table[list(elements)] = np.arange(len(elements))
    z = np.asarray(atomic_numbers, dtype=np.int64)
    bad = sorted({int(x) for x in z if not 0 < x < 119 or table[x] < 0})
    if bad:
        known = ", ".join(chemical_symbols[e] for e in elements)
        names = ", ".join(f"{chemical_symbols[x] if 0 < x < 119 else '?'} (Z={x})" for x in bad)
        raise ValueError(f"element {names} is not in {model_name} ({known})")
    return table[z]


def atoms_to_graph(
    atoms: ase.Atoms,
    elements: Sequence[int],
    cutoff: float,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    model_name: str = "model",
    neighbours: NeighbourList | None = None,
) -> Graph:
    """Build the graph of one structure (neighbour list with matscipy, any periodicity).

    ``neighbours`` is a list already built for these positions and ``cutoff`` (e.g. by a
    :class:`~ase_equi.verlet_list.VerletNeighbourList`); without it one is built here.

    Raises
    ------
    ValueError
        For an element the model does not know, NaN/inf positions, a periodic direction with a
        zero cell vector, or two atoms at the same position.
    """
    species = element_indices(atoms.numbers, elements, model_name)
    nl = neighbour_list_from_atoms(atoms, cutoff) if neighbours is None else neighbours
    n = len(atoms)

    def tensor(x, dt):
        return torch.as_tensor(np.ascontiguousarray(x), dtype=dt, device=device)

    return Graph(
        positions=tensor(atoms.positions, dtype),
        cell=tensor(np.asarray(atoms.cell.array).reshape(1, 3, 3), dtype),
        atomic_numbers=tensor(atoms.numbers, torch.long),
        elements=tensor(species, torch.long),
        senders=tensor(nl.senders, torch.long),
        receivers=tensor(nl.receivers, torch.long),
        shifts=tensor(nl.shifts, dtype),
        batch=torch.zeros(n, dtype=torch.long, device=device),
        num_graphs=1,
    )


def batch_graphs(graphs: Sequence[Graph]) -> Graph:
    """Concatenate graphs into one disconnected batch (node indices offset, ``batch`` set)."""
    offsets = np.cumsum([0] + [g.num_atoms for g in graphs[:-1]])
    cat = torch.cat
    return Graph(
        positions=cat([g.positions for g in graphs]),
        cell=cat([g.cell for g in graphs]),
        atomic_numbers=cat([g.atomic_numbers for g in graphs]),
        elements=cat([g.elements for g in graphs]),
        senders=cat([g.senders + int(o) for g, o in zip(graphs, offsets, strict=True)]),
        receivers=cat([g.receivers + int(o) for g, o in zip(graphs, offsets, strict=True)]),
        shifts=cat([g.shifts for g in graphs]),
        batch=cat([torch.full_like(g.batch, k) for k, g in enumerate(graphs)]),
        num_graphs=len(graphs),
    )
