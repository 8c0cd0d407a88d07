"""Atoms → :class:`~ase_equi.graph.tensors.Graph`: element indices, one structure, a batch.

:func:`atoms_to_graph` builds the graph of one structure (neighbour list on the host, any
periodicity), :func:`batch_graphs` joins several into one disconnected graph. A calculator gets
its graphs from one :class:`GraphSource`, chosen once: :class:`HostGraph` (a Verlet list on the
host, filtered to the cutoff, a fresh graph per geometry) or
:class:`~ase_equi.graph.resident.ResidentGraph` (kept on the device between rebuilds).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Protocol

import ase
import numpy as np
import torch
from ase.data import chemical_symbols

from ..neighbours import NeighbourList, VerletNeighbourList, neighbour_list_from_atoms
from .frame import GraphFrame, graph_frame
from .layout import ElementGroups, NeighbourLayout
from .tensors import Graph

__all__ = [
    "GraphSource",
    "HostGraph",
    "atoms_to_graph",
    "batch_graphs",
    "check_neutral",
    "element_indices",
]


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


def check_neutral(atoms: ase.Atoms, model_name: str = "model") -> None:
    """Refuse a structure that carries a total charge: no model here takes one as input.

    ASE keeps a total charge in ``atoms.info["charge"]`` (the key of charge-aware models and
    data sets) or as the sum of the initial charges (``atoms.set_initial_charges``). A model
    without a charge input would compute the neutral structure and return it as the charged
    one; so a nonzero ``info["charge"]``, or initial charges summing to 0.5 e or more in size
    (partial charges of a neutral structure, rounded, sum to about 0), raise ``ValueError``.

    Examples
    --------
    >>> cation = ase.Atoms("NH4", positions=np.eye(5, 3), info={"charge": 1})
    >>> check_neutral(cation, "molecules-pbe")
    Traceback (most recent call last):
    ...
    ValueError: the structure has a total charge of 1 (atoms.info['charge']), but molecules-pbe \
takes no charge: it computes neutral structures. Remove the charge to compute the neutral one
    """
    charge, where = atoms.info.get("charge", 0), "atoms.info['charge']"
    if not isinstance(charge, numbers.Real):
        return  # a label of some other kind, not a charge
    if charge == 0 and "initial_charges" in atoms.arrays:
        total = float(atoms.arrays["initial_charges"].sum())
        charge, where = (total if abs(total) >= 0.5 else 0), "the initial charges' sum"
    if charge != 0:
        raise ValueError(
            f"the structure has a total charge of {charge:g} ({where}), but {model_name} takes "
            "no charge: it computes neutral structures. Remove the charge to compute the "
            "neutral one"
        )


def atoms_to_graph(
    atoms: ase.Atoms,
    elements: Sequence[int],
    r_max: float,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    model_name: str = "model",
    neighbours: NeighbourList | None = None,
    max_chunk_bytes: int | None = None,
) -> Graph:
    """Build the graph of one structure (neighbour list with matscipy, any periodicity).

    ``elements`` are the model's atomic numbers (``ModelConfig.elements``), ``r_max`` its cutoff
    radius (Å). ``neighbours`` is a list already built for these positions and ``r_max`` (e.g. by a
    :class:`~ase_equi.neighbours.verlet.VerletNeighbourList`); without it one is built here.
    ``max_chunk_bytes`` is the memory bound of the model call
    (:attr:`~ase_equi.graph.tensors.Graph.max_chunk_bytes`).

    Raises
    ------
    ValueError
        For an element the model does not know, a total charge (:func:`check_neutral`),
        NaN/inf positions, a periodic direction with a zero cell vector, or two atoms at the
        same position.
    """
    element_index = element_indices(atoms.numbers, elements, model_name)
    check_neutral(atoms, model_name)
    nl = neighbour_list_from_atoms(atoms, r_max) if neighbours is None else neighbours
    n = len(atoms)
    frame = graph_frame(atoms)
    cell = frame.cell

    def tensor(x, dt):
        return torch.as_tensor(np.ascontiguousarray(x), dtype=dt, device=device)

    return Graph(
        positions=tensor(frame.positions(atoms.positions), dtype),
        cell=tensor(cell.reshape(1, 3, 3), dtype),
        atomic_numbers=tensor(atoms.numbers, torch.long),
        element_index=tensor(element_index, torch.long),
        senders=tensor(nl.senders, torch.long),
        receivers=tensor(nl.receivers, torch.long),
        shifts=tensor(frame.shifts(nl.shifts, nl.senders, nl.receivers), dtype),
        batch=torch.zeros(n, dtype=torch.long, device=device),
        num_graphs=1,
        volumes=(abs(float(np.linalg.det(cell))),),
        max_chunk_bytes=max_chunk_bytes,
    )


def batch_graphs(graphs: Sequence[Graph]) -> Graph:
    """Concatenate graphs into one disconnected batch (node indices offset, ``batch`` set).

    The batch has no layout or groups (the model builds them) and no memory bound.
    """
    volumes = [g.volumes for g in graphs]
    offsets = np.cumsum([0] + [g.num_atoms for g in graphs[:-1]])
    cat = torch.cat
    return Graph(
        positions=cat([g.positions for g in graphs]),
        cell=cat([g.cell for g in graphs]),
        atomic_numbers=cat([g.atomic_numbers for g in graphs]),
        element_index=cat([g.element_index for g in graphs]),
        senders=cat([g.senders + int(o) for g, o in zip(graphs, offsets, strict=True)]),
        receivers=cat([g.receivers + int(o) for g, o in zip(graphs, offsets, strict=True)]),
        shifts=cat([g.shifts for g in graphs]),
        batch=cat([torch.full_like(g.batch, k) for k, g in enumerate(graphs)]),
        num_graphs=len(graphs),
        volumes=_joined_volumes(volumes),
    )


def _joined_volumes(volumes: Sequence[tuple[float, ...] | None]) -> tuple[float, ...] | None:
    """The batch's host volumes (Å³), or ``None`` when any graph lacks them."""
    joined: list[float] = []
    for vs in volumes:
        if vs is None:
            return None
        joined.extend(vs)
    return tuple(joined)


class GraphSource(Protocol):
    """Where a calculator gets the graph of each geometry: chosen once, asked every step.

    ``neighbours`` is the source's one Verlet list (its ``skin``, ``builds`` and ``calls``);
    the other attributes are the settings it was made with (see :class:`HostGraph`).
    """

    neighbours: VerletNeighbourList
    elements: tuple[int, ...]
    r_max: float
    dtype: torch.dtype
    device: torch.device
    model_name: str
    max_chunk_bytes: int | None

    def update(self, atoms: ase.Atoms) -> Graph:
        """The graph of ``atoms`` at their current positions (``ValueError`` for bad input)."""
        ...


class HostGraph:
    """A fresh graph per geometry, its edges from one Verlet list on the host.

    The list is built for ``r_max + skin`` and filtered to ``r_max`` at every call
    (:class:`~ase_equi.neighbours.verlet.VerletNeighbourList`), so each graph is identical to
    a fresh build. Positions, cell and shifts are uploaded to ``device`` at every call; the
    index tensors, neighbour layout and element groups only when the atomic numbers or the
    edges change (:meth:`update`).

    Parameters
    ----------
    elements:
        The model's element table (atomic numbers).
    r_max:
        The model's cutoff, Å.
    skin:
        Verlet skin, Å (>= 0; 0 rebuilds the list at every new geometry).
    dtype, device:
        Of the graph's floating-point tensors.
    model_name:
        For error messages (unknown elements).
    max_chunk_bytes:
        Memory bound of the model call, put on every graph (``None``: no bound).

    Examples
    --------
    >>> from ase.build import bulk
    >>> source = HostGraph((29,), 3.0, 0.5, dtype=torch.float64, device="cpu")
    >>> source.update(bulk("Cu", "fcc", a=3.6)).senders.shape
    torch.Size([12])
    """

    def __init__(
        self,
        elements: Sequence[int],
        r_max: float,
        skin: float,
        *,
        dtype: torch.dtype,
        device: torch.device | str,
        model_name: str = "model",
        max_chunk_bytes: int | None = None,
    ) -> None:
        self.neighbours = VerletNeighbourList(r_max, skin)
        self.elements, self.r_max = tuple(elements), float(r_max)
        self.dtype, self.device, self.model_name = dtype, torch.device(device), model_name
        self.max_chunk_bytes = max_chunk_bytes
        self._atoms: _AtomTensors | None = None
        self._edges: _EdgeTensors | None = None
        self._frame: GraphFrame | None = None  # the last call's, lends its cell

    @classmethod
    def like(cls, source: GraphSource) -> HostGraph:
        """A new source with its own Verlet list and the settings of ``source`` (cutoff,
        skin, dtype, device, memory bound): one more structure evaluated beside a
        calculator's."""
        return cls(
            source.elements,
            source.r_max,
            source.neighbours.skin,
            dtype=source.dtype,
            device=source.device,
            model_name=source.model_name,
            max_chunk_bytes=source.max_chunk_bytes,
        )

    def update(self, atoms: ase.Atoms) -> Graph:
        """The graph of ``atoms`` (raises as :func:`atoms_to_graph`).

        What depends only on the atomic numbers (element indices, their groups) or only on
        the edges (their tensors and per-receiver layout) is kept from the last call while
        those are unchanged, as in an MD step between neighbour-list changes: the graph is
        the one :func:`atoms_to_graph` builds, with its ``layout`` and ``groups`` filled in.
        """
        check_neutral(atoms, self.model_name)
        neighbours = self.neighbours.update(atoms)
        nodes = self._atoms
        if nodes is None or not np.array_equal(nodes.numbers, atoms.numbers):
            nodes = self._atoms = _AtomTensors(atoms.numbers, self, self.device)
        edges = self._edges
        if edges is None or not edges.same(neighbours, len(atoms)):
            edges = self._edges = _EdgeTensors(neighbours, len(atoms), self.device)
        frame = self._frame = graph_frame(atoms, self._frame)
        cell = frame.cell
        shifts = frame.shifts(neighbours.shifts, neighbours.senders, neighbours.receivers)
        positions = frame.positions(atoms.positions)
        return Graph(
            positions=torch.as_tensor(positions, dtype=self.dtype, device=self.device),
            cell=torch.as_tensor(cell.reshape(1, 3, 3), dtype=self.dtype, device=self.device),
            atomic_numbers=nodes.atomic_numbers,
            element_index=nodes.element_index,
            senders=edges.senders,
            receivers=edges.receivers,
            shifts=torch.as_tensor(shifts, dtype=self.dtype, device=self.device),
            batch=nodes.batch,
            num_graphs=1,
            layout=edges.layout,
            groups=nodes.groups,
            volumes=(abs(float(np.linalg.det(cell))),),
            max_chunk_bytes=self.max_chunk_bytes,
        )


class _AtomTensors:
    """What a graph's nodes hold that depends only on the atomic numbers (kept between
    calls of a :class:`HostGraph` while they are unchanged)."""

    def __init__(self, numbers: np.ndarray, source: HostGraph, device: torch.device | str):
        self.numbers = np.array(numbers, copy=True)
        index = element_indices(self.numbers, source.elements, source.model_name)
        self.atomic_numbers = torch.as_tensor(self.numbers, dtype=torch.long, device=device)
        self.element_index = torch.as_tensor(index, dtype=torch.long, device=device)
        self.batch = torch.zeros(len(self.numbers), dtype=torch.long, device=device)
        self.groups = ElementGroups(self.element_index)


class _EdgeTensors:
    """A graph's edge indices and their per-receiver layout (kept between calls of a
    :class:`HostGraph` while the edges within the cutoff are unchanged)."""

    def __init__(self, nl: NeighbourList, num_atoms: int, device: torch.device | str) -> None:
        self.host = (num_atoms, np.array(nl.senders), np.array(nl.receivers))
        self.senders = torch.as_tensor(nl.senders, dtype=torch.long, device=device)
        self.receivers = torch.as_tensor(nl.receivers, dtype=torch.long, device=device)
        self.layout = NeighbourLayout(self.senders, self.receivers, num_atoms)

    def same(self, nl: NeighbourList, num_atoms: int) -> bool:
        n, senders, receivers = self.host
        return (
            n == num_atoms
            and np.array_equal(senders, nl.senders)
            and np.array_equal(receivers, nl.receivers)
        )
