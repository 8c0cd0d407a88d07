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

__all__ = ["DegreeBuckets", "ElementGroups", "NeighbourLayout"]


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

    channels_last = False
    """Ask the tensor product for its per-receiver products with the channels innermost (as
    in training), whose backward pass is cheaper on large batches; set on the parts of
    :class:`DegreeBuckets`."""

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


class DegreeBuckets(NeighbourLayout):
    """Receivers sorted by in-degree into a few buckets, each padded to its own largest degree.

    A :class:`NeighbourLayout` pads every receiver to the largest in-degree K of the whole
    graph; in a batch mixing clusters, slabs and bulk cells many slots stay empty. Here the
    receivers are sorted by in-degree and cut into at most ``max_buckets`` contiguous runs,
    bucket b padded to its own largest degree K_b, so that the padded rows Σ_b n_b K_b (plus
    ``rows_per_bucket`` for each bucket, the fixed cost of one more pass) are smallest.

    ``parts`` lists ``(layout_b, first_row, stop_row)``: a :class:`NeighbourLayout` of bucket
    b's receivers (numbered 0 … n_b − 1 in bucket order, senders kept as graph indices) and its
    rows in :meth:`pad`'s output ``[Σ_b n_b K_b, ...]``. Per-receiver results computed bucket
    by bucket and concatenated are in bucket order; :meth:`unsort` puts them back in node order.
    Every edge lands in exactly one slot, as in :class:`NeighbourLayout`; only the number of
    empty slots differs, so the sums over a receiver's neighbours are the same.

    Examples
    --------
    Node 0 receives three edges, nodes 1 and 2 one each, node 3 none:

    >>> buckets = DegreeBuckets(torch.tensor([1, 2, 3, 0, 0]), torch.tensor([0, 0, 0, 1, 2]), 4,
    ...                         rows_per_bucket=0)
    >>> [(part.num_nodes, part.max_neighbours) for part, _, _ in buckets.parts]
    [(1, 0), (2, 1), (1, 3)]
    >>> buckets.order.tolist(), buckets.rows
    ([3, 1, 2, 0], 5)
    """

    def __init__(
        self,
        senders: torch.Tensor,
        receivers: torch.Tensor,
        num_nodes: int,
        *,
        max_buckets: int = 4,
        rows_per_bucket: int = 64,
    ) -> None:
        e = receivers.shape[0]
        self.num_nodes, self.num_edges, self.dense = num_nodes, e, False
        counts = torch.bincount(receivers, minlength=num_nodes)
        self.max_neighbours = int(counts.max()) if num_nodes else 0
        self.order = torch.argsort(counts, stable=True)  # [N] nodes by ascending in-degree
        self.position = torch.empty_like(self.order)  # [N] where each node sits in ``order``
        self.position[self.order] = torch.arange(num_nodes, device=receivers.device)
        sorted_counts = counts[self.order].tolist()
        cuts = _cuts(sorted_counts, max_buckets, rows_per_bucket)
        bucket_of = torch.empty_like(self.order)  # [N] bucket of each node
        for b, (first, stop) in enumerate(cuts):
            bucket_of[self.order[first:stop]] = b
        edge_rows = torch.empty_like(receivers)  # [E] row of each edge in pad()'s output
        edge_ids = torch.arange(e, device=receivers.device)
        self.parts: list[tuple[NeighbourLayout, int, int]] = []
        row = 0
        for b, (first, stop) in enumerate(cuts):
            mine = edge_ids[bucket_of[receivers] == b] if e else edge_ids
            local = self.position[receivers[mine]] - first  # receivers renumbered in the bucket
            part = NeighbourLayout(senders[mine], local, stop - first)
            part.channels_last = True  # the cheaper backward at batch sizes
            edge_rows[mine] = row + part.edge_slots
            rows = part.num_nodes * part.max_neighbours
            self.parts.append((part, row, row + rows))
            row += rows
        self.rows, self.edge_rows = row, edge_rows

    def receiver_rows(self, start: int, stop: int) -> NeighbourLayout:
        raise ValueError("DegreeBuckets: chunks of receivers are not supported; chunk each part")

    def pad(self, edge_values: torch.Tensor) -> torch.Tensor:
        """``[E, ...]`` → ``[Σ_b n_b K_b, ...]``: each part's slots in turn, zeros where empty."""
        out = edge_values.new_zeros((self.rows, *edge_values.shape[1:]))
        return out.index_copy(0, self.edge_rows, edge_values)

    def unsort(self, values: torch.Tensor) -> torch.Tensor:
        """Per-receiver ``[N, ...]`` in bucket order (the parts' results concatenated) →
        node order."""
        return values.index_select(0, self.position)


def _cuts(
    sorted_counts: list[int], max_buckets: int, rows_per_bucket: int
) -> list[tuple[int, int]]:
    """Contiguous runs ``(first, stop)`` of nodes sorted by ascending in-degree, at most
    ``max_buckets``, cut only between distinct degrees, that minimise Σ n_b K_b +
    ``rows_per_bucket`` × (number of runs): a small dynamic programme over the distinct
    degrees."""
    n = len(sorted_counts)
    if n == 0:
        return []
    ends = [i + 1 for i in range(n) if i + 1 == n or sorted_counts[i + 1] != sorted_counts[i]]
    m = len(ends)
    inf = float("inf")
    # best[j][b]: cost of covering nodes 0 … ends[j]-1 with b runs; back[j][b]: previous end index
    best = [[inf] * (max_buckets + 1) for _ in range(m)]
    back = [[-1] * (max_buckets + 1) for _ in range(m)]
    for j in range(m):
        k = sorted_counts[ends[j] - 1]
        best[j][1] = ends[j] * k + rows_per_bucket
        for b in range(2, max_buckets + 1):
            for i in range(j):
                cost = best[i][b - 1] + (ends[j] - ends[i]) * k + rows_per_bucket
                if cost < best[j][b]:
                    best[j][b], back[j][b] = cost, i
    b = min(range(1, max_buckets + 1), key=lambda b: best[m - 1][b])
    cuts, j = [], m - 1
    while j >= 0 and b >= 1:
        i = back[j][b]
        cuts.append((ends[i] if i >= 0 else 0, ends[j]))
        j, b = i, b - 1
    return cuts[::-1]
