"""The graph a model sees (torch tensors only), and the glossary of its fields.

Glossary (n = atoms, e = edges, G = graphs in a batch; cell vectors are rows, as in ASE):

=================  ==============  ======================================================
field              shape           meaning
=================  ==============  ======================================================
``positions``      [n, 3]          Cartesian positions, Å
``cell``           [G, 3, 3]       cell vectors as rows, Å (zero rows allowed where not periodic)
``atomic_numbers`` [n]             Z of each atom
``element_index``  [n]             index of each atom's Z in the model's ``elements`` (config)
``senders``        [e]             atom i of matscipy's pair (i, j)
``receivers``      [e]             atom j; messages go sender → receiver
``shifts``         [e, 3]          integer cell offsets S of the image of j (stored as float)
``batch``          [n]             graph index of each atom
=================  ==============  ======================================================

Edge vectors are ``positions[receivers] − positions[senders] + shifts @ cell[batch[senders]]``
(matscipy's D with senders = i, receivers = j).

Besides the tensors, a graph carries what its evaluation needs and a caller may know better
than the model: the index bookkeeping of :mod:`ase_equi.graph.layout` when it is kept between
steps, the cell volumes as host numbers, and the memory bound of the model call.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .layout import ElementGroups, NeighbourLayout

__all__ = ["Graph", "edge_vectors"]


@dataclass
class Graph:
    """Tensors of one structure or a batch of structures (see the module glossary).

    Attributes
    ----------
    num_graphs:
        G, the number of structures in the batch.
    layout, groups:
        :class:`~ase_equi.graph.layout.NeighbourLayout` of ``senders``/``receivers`` and
        :class:`~ase_equi.graph.layout.ElementGroups` of ``element_index``, when the builder keeps
        them (a graph resident on the device); ``None``: the model builds them per call, which
        reads a few sizes back from the device. They describe the edges and elements of this
        graph: replace them together with those fields (:meth:`with_edges` does).
    volumes:
        ``|det cell|`` of each graph (Å³, G host floats), known when the graph was built from
        host arrays, so that the stress check of
        :func:`~ase_equi.model.gradients.energy_forces_stress` reads nothing from the device;
        ``None``: computed from ``cell`` there.
    max_chunk_bytes:
        Memory bound (bytes) on the largest intermediates of the model call on this graph
        (:meth:`~ase_equi.model.mace.MaceModel.chunk_nodes`); ``None``: no bound. It lives on
        the graph, not on the model, because it is the caller's setting for this evaluation
        (the calculator's ``chunk_mib``), while a model object may be shared by several
        calculators or a trainer: an attribute set on it by one would change the calls of
        the others.
    """

    positions: torch.Tensor
    cell: torch.Tensor
    atomic_numbers: torch.Tensor
    element_index: torch.Tensor
    senders: torch.Tensor
    receivers: torch.Tensor
    shifts: torch.Tensor
    batch: torch.Tensor
    num_graphs: int
    layout: NeighbourLayout | None = None
    groups: ElementGroups | None = None
    volumes: tuple[float, ...] | None = None
    max_chunk_bytes: int | None = None

    @property
    def num_atoms(self) -> int:
        return int(self.positions.shape[0])

    def to(self, device: torch.device | str) -> Graph:
        """The same graph on ``device`` (layout and groups are rebuilt there when needed)."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if torch.is_tensor(getattr(self, f.name))
        }
        return dataclasses.replace(self, **moved, layout=None, groups=None)

    def with_edges(
        self, senders: torch.Tensor, receivers: torch.Tensor, shifts: torch.Tensor
    ) -> Graph:
        """The graph with other edges (``[e']``, ``[e']``, ``[e', 3]``) and their layout."""
        return dataclasses.replace(
            self,
            senders=senders,
            receivers=receivers,
            shifts=shifts,
            layout=NeighbourLayout(senders, receivers, self.num_atoms),
            groups=ElementGroups(self.element_index) if self.groups is None else self.groups,
        )


def edge_vectors(
    positions: torch.Tensor,
    cell: torch.Tensor,
    shifts: torch.Tensor,
    senders: torch.Tensor,
    receivers: torch.Tensor,
    batch: torch.Tensor,
) -> torch.Tensor:
    """``[e, 3]`` vectors r_j − r_i + S·cell from sender i to (the image of) receiver j, Å.

    Examples
    --------
    Two atoms 1 Å apart in a 3 Å cubic cell; the second edge goes to the image of atom 0 one
    cell to the right:

    >>> positions = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    >>> cell = 3.0 * torch.eye(3).unsqueeze(0)
    >>> shifts = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    >>> edge_vectors(positions, cell, shifts, torch.tensor([0, 1]), torch.tensor([1, 0]),
    ...              torch.tensor([0, 0])).tolist()
    [[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]]
    """
    # index_select rather than advanced indexing: its backward is an index_add, which on CPU
    # is far cheaper than the accumulating index_put of indexing's backward
    lattice = torch.einsum("ek,ekc->ec", shifts, cell.index_select(0, batch[senders]))
    return positions.index_select(0, receivers) - positions.index_select(0, senders) + lattice
