"""Index bookkeeping on a graph: edges arranged per receiver, nodes grouped by element.

Both are pure functions of a graph's ``senders``, ``receivers`` and ``element_index`` (torch only),
built once per graph and shared by every layer of a model. Building them reads a few sizes
back from the device (the largest in-degree, the set of elements present); a caller that keeps
a graph between steps (:class:`~ase_equi.graph.resident.ResidentGraph`) keeps them on the
graph (:attr:`~ase_equi.graph.tensors.Graph.layout`, :attr:`~ase_equi.graph.tensors.Graph.groups`)
so that a step reads nothing back; otherwise the model builds them per call.
"""

from __future__ import annotations

import torch

__all__ = ["ElementGroups", "NeighbourLayout"]


class NeighbourLayout:
    """Edges arranged per receiver in ``K`` padded slots (K = the largest in-degree).

    ``slots [N·K]`` holds, for slot k of node i, the edge index (or E, a zero row, where node
    i has fewer than K edges); ``padded_senders [N·K]`` the sender of that edge (node 0 for
    empty slots, whose weights are zero). Built once per graph and shared by all layers.

    Examples
    --------
    Three edges into node 0 and one into node 1 (K = 3; node 1 has two empty slots):

    >>> layout = NeighbourLayout(torch.tensor([1, 2, 3, 0]), torch.tensor([0, 0, 0, 1]), 4)
    >>> layout.max_neighbours, layout.slots[:6].tolist()
    (3, [0, 1, 2, 3, 4, 4])
    """

    def __init__(self, senders: torch.Tensor, receivers: torch.Tensor, num_nodes: int) -> None:
        e = receivers.shape[0]
        self.num_nodes, self.num_edges = num_nodes, e
        counts = torch.bincount(receivers, minlength=num_nodes)
        self.max_neighbours = int(counts.max()) if e else 0  # one host sync per graph
        order = torch.argsort(receivers, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        sorted_receivers = receivers[order]
        rank = torch.arange(e, device=receivers.device) - starts[sorted_receivers]
        slots = torch.full(
            (num_nodes * self.max_neighbours,), e, dtype=torch.long, device=receivers.device
        )
        edge_slots = torch.empty_like(order)
        edge_slots[order] = sorted_receivers * self.max_neighbours + rank
        slots[edge_slots] = torch.arange(e, device=receivers.device)
        self.slots, self.edge_slots = slots, edge_slots
        self.dense = e == num_nodes * self.max_neighbours  # no empty slot
        padded = torch.cat([senders, senders.new_zeros(1)])
        self.padded_senders = padded.index_select(0, slots)

    def receiver_rows(self, start: int, stop: int) -> NeighbourLayout:
        """The layout of receivers ``start … stop-1`` alone (their slots, same K): what a
        chunk of receivers in the model's tensor product needs."""
        part = object.__new__(NeighbourLayout)
        part.num_nodes, part.num_edges = stop - start, self.num_edges
        part.max_neighbours = k = self.max_neighbours
        part.padded_senders = self.padded_senders[start * k : stop * k]
        return part

    def pad(self, edge_values: torch.Tensor) -> torch.Tensor:
        """``[E, ...]`` → ``[N·K, ...]`` with zeros in the empty slots."""
        if self.dense:  # a permutation; backward: index_add with distinct indices
            return edge_values.index_select(0, self.slots)
        out = edge_values.new_zeros((self.num_nodes * self.max_neighbours, *edge_values.shape[1:]))
        return out.index_copy(0, self.edge_slots, edge_values)  # backward: a gather


class ElementGroups:
    """The nodes of a graph grouped by element, for the per-element contraction weights.

    ``present`` lists the element indices that occur (host ints, ascending) and ``nodes[k]``
    the node indices of ``present[k]`` (``None`` when all nodes are of one element). Built once
    per graph, with one host read (the set of elements), and shared by every contraction of
    every layer; a caller that keeps a graph between steps keeps its groups too.

    Examples
    --------
    >>> groups = ElementGroups(torch.tensor([1, 0, 1]))
    >>> groups.present, [n.tolist() for n in groups.nodes]
    ([0, 1], [[1], [0, 2]])
    """

    def __init__(self, element_index: torch.Tensor) -> None:
        present = torch.unique(element_index)
        self.present: list[int] = present.tolist()  # the one host read
        self.index = present  # [n_present] on the device
        self.single = len(self.present) == 1
        self.nodes: list[torch.Tensor | None] = [
            None if self.single else torch.nonzero(element_index == z).squeeze(1)
            for z in self.present
        ]
