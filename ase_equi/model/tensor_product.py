"""Channel-wise ("uvu") tensor product of node features with edge spherical harmonics.

For an instruction (l₁ ⊗ l₂ → l₃) and every edge e and channel c,

.. math::

    m_{e c, k} = \\alpha\\, w_{e c} \\sum_{i j} C^{l_1 l_2 l_3}_{i j k}\\, h_{e c, i}\\, Y_{e, j},
    \\qquad \\alpha = \\sqrt{(2 l_3 + 1) / n_{l_3}},

with e3nn's real Wigner 3j symbols C, per-edge weights w from the radial MLP, and
:math:`n_{l_3}` the number of paths into the same output slot (e3nn's "component" irrep and
"element" path normalisation). This is numerically e3nn's ``TensorProduct(..., "uvu")`` with the
same weight layout, evaluated differently: the harmonics are first contracted with the Clebsch–
Gordan symbols of every path that starts from the same node irrep (edge-only work, no channels),
``Z [n_edges, d₁, S]``. The per-edge form (:meth:`ChannelwiseTensorProduct.forward_channels`)
then takes one batched matrix product per node irrep, ``h [n_edges, C, d₁] @ Z → [n_edges, C,
S]``. The form a model uses (:meth:`ChannelwiseTensorProduct.forward_grouped`) sums over each
receiver's neighbours inside the matrix product, per class of paths, so that the per-edge
``[E, C, S]`` tensor is never formed.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3


class NeighbourLayout:
    """Edges arranged per receiver in ``K`` padded slots (K = the largest in-degree).

    ``slots [N·K]`` holds, for slot k of node i, the edge index (or E, a zero row, where node
    i has fewer than K edges); ``padded_senders [N·K]`` the sender of that edge (node 0 for
    empty slots, whose weights are zero). Built once per graph and shared by all layers.
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
        slots = torch.full((num_nodes * self.max_neighbours,), e, dtype=torch.long,
                           device=receivers.device)
        edge_slots = torch.empty_like(order)
        edge_slots[order] = sorted_receivers * self.max_neighbours + rank
        slots[edge_slots] = torch.arange(e, device=receivers.device)
        self.slots, self.edge_slots = slots, edge_slots
        self.dense = e == num_nodes * self.max_neighbours  # no empty slot
        padded = torch.cat([senders, senders.new_zeros(1)])
        self.padded_senders = padded.index_select(0, slots)

    def receiver_rows(self, start: int, stop: int) -> NeighbourLayout:
        """The layout of receivers ``start … stop-1`` alone (their slots, same K): what a
        chunk of :meth:`ChannelwiseTensorProduct.forward_grouped` needs."""
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


class ChannelwiseTensorProduct(torch.nn.Module):
    """``(h [E, irreps_nodes.dim], Y [E, irreps_edges.dim], w [E, weight_numel]) -> [E, irreps_mid.dim]``.

    Parameters
    ----------
    irreps_nodes, irreps_edges, irreps_mid:
        Node irreps (every block with the same multiplicity C), edge irreps (multiplicity 1) and
        output irreps, as from :func:`~ase_equi.model.interaction.channelwise_instructions`.
    instructions:
        ``(i_node, i_edge, i_out, "uvu", True)`` tuples ordered by output slot; the weight vector of
        an edge holds C weights per instruction, in this order.

    Notes
    -----
    ``forward_channels`` returns ``[E, C, S]`` in an internal order (paths grouped by node irrep);
    :meth:`to_irreps` turns such a tensor (or its sum over edges) into e3nn's layout. Summing over
    edges first and reordering after is cheaper, which the interaction block does.
    """

    def __init__(
        self,
        irreps_nodes: o3.Irreps,
        irreps_edges: o3.Irreps,
        irreps_mid: o3.Irreps,
        instructions: list[tuple[int, int, int, str, bool]],
    ) -> None:
        super().__init__()
        self.irreps_nodes, self.irreps_edges = o3.Irreps(irreps_nodes), o3.Irreps(irreps_edges)
        self.irreps_mid = o3.Irreps(irreps_mid)
        self.channels = self.irreps_nodes[0].mul
        if any(mul != self.channels for mul, _ in self.irreps_nodes):
            raise ValueError(f"node irreps must share one multiplicity: {self.irreps_nodes}")
        self.weight_numel = self.channels * len(instructions)
        paths_into = [0] * len(self.irreps_mid)
        for ins in instructions:
            paths_into[ins[2]] += 1

        edge_offsets = [0]
        for _, ir in self.irreps_edges:
            edge_offsets.append(edge_offsets[-1] + ir.dim)
        node_offsets = [0]
        for _, ir in self.irreps_nodes:
            node_offsets.append(node_offsets[-1] + self.channels * ir.dim)
        self.node_slices = [
            (node_offsets[i], node_offsets[i + 1]) for i in range(len(self.irreps_nodes))
        ]

        # Per node irrep: the CG matrix G [D_edges, d1·S] of all its paths, their columns grouped
        # by output dimension d3 ("classes"), so that each class of the product [E, C, S] is
        # weighted by one broadcast multiplication, [E, C, n_paths, d3] × [E, C, n_paths, 1].
        self.groups: list[tuple[int, int, int]] = []  # (node irrep index, d1, S)
        self.classes: list[list[tuple[int, int, list[int]]]] = []  # per group: (start, d3, paths)
        position: dict[int, tuple[int, int]] = {}  # instruction → (piece, column)
        piece = 0
        for i_node, (_, ir1) in enumerate(self.irreps_nodes):
            mine = [n for n, ins in enumerate(instructions) if ins[0] == i_node]
            by_dim: dict[int, list[int]] = {}
            for n in mine:
                by_dim.setdefault(self.irreps_mid[instructions[n][2]].ir.dim, []).append(n)
            s = sum(d3 * len(paths) for d3, paths in by_dim.items())
            g = torch.zeros(self.irreps_edges.dim, ir1.dim, s, dtype=torch.float64)
            k = 0
            group_classes = []
            for d3, paths in sorted(by_dim.items()):
                group_classes.append((k, d3, paths))
                for n in paths:
                    i_edge, i_out = instructions[n][1], instructions[n][2]
                    ir2, ir3 = self.irreps_edges[i_edge].ir, self.irreps_mid[i_out].ir
                    alpha = math.sqrt(ir3.dim / paths_into[i_out])
                    c = o3.wigner_3j(ir1.l, ir2.l, ir3.l, dtype=torch.float64)  # [d1, d2, d3]
                    rows = slice(edge_offsets[i_edge], edge_offsets[i_edge + 1])
                    g[rows, :, k : k + d3] = alpha * c.permute(1, 0, 2)
                    position[n] = (piece, k)
                    k += d3
            cg = g.reshape(self.irreps_edges.dim, ir1.dim * s)
            self.register_buffer(f"cg_{i_node}", cg, persistent=False)
            self.register_buffer(
                f"paths_by_class_{i_node}",
                torch.tensor([n for _, _, paths in group_classes for n in paths], dtype=torch.long),
                persistent=False,
            )
            # which instruction (weight) each of the S columns belongs to
            columns = [n for _, d3, paths in group_classes for n in paths for _ in range(d3)]
            self.register_buffer(
                f"path_of_column_{i_node}", torch.tensor(columns, dtype=torch.long),
                persistent=False,
            )
            self.groups.append((i_node, ir1.dim, s))
            self.classes.append(group_classes)
            piece += 1
        # all paths, group by group and class by class: the order of forward_grouped's weights
        grouped = torch.cat([getattr(self, f"paths_by_class_{i}") for i, _, _ in self.groups])
        self.register_buffer("grouped_paths", grouped, persistent=False)
        # e3nn output order: slot-major (slots = instructions, in order), then channel, component
        self.slots = [
            (*position[n], self.irreps_mid[instructions[n][2]].ir.dim)
            for n in range(len(instructions))
        ]

    def forward_channels(
        self, h: torch.Tensor, senders: torch.Tensor, y: torch.Tensor, w: torch.Tensor
    ) -> list[torch.Tensor]:
        """Messages per node irrep, each ``[E, C, S_i]`` (the grouped layout).

        ``h [n_nodes, irreps_nodes.dim]`` are the node features, gathered here per irrep block
        at ``senders [E]`` (splitting before gathering keeps the backward pass cheap).
        """
        e = senders.shape[0]
        w = w.reshape(e, self.weight_numel // self.channels, self.channels).transpose(1, 2)
        blocks = torch.split(h, [stop - start for start, stop in self.node_slices], dim=-1)
        pieces = []
        for i_node, d1, s in self.groups:
            x = blocks[i_node].index_select(0, senders).reshape(e, self.channels, d1)
            z = torch.matmul(y, getattr(self, f"cg_{i_node}").to(y.dtype)).reshape(e, d1, s)
            r = torch.bmm(x, z)  # [E, C, S]
            # one multiplication by the weights spread over the columns: no split/cat of the
            # large [E, C, S] tensor, whose backward would zero-fill and copy it per piece
            pieces.append(r * w.index_select(2, getattr(self, f"path_of_column_{i_node}")))
        return pieces

    def forward_nodes(
        self,
        h: torch.Tensor,
        y: torch.Tensor,
        w: torch.Tensor,
        layout: NeighbourLayout,
        *,
        padded: bool = False,
    ) -> list[torch.Tensor]:
        """Messages summed over each node's incoming edges, per node irrep ``[N, C, S_i]``.

        Equal to ``index_add`` over receivers of :meth:`forward_channels`. ``y [E, D_edges]``
        and ``w [E, weight_numel]`` (e3nn's weight order) are per edge, or already in the
        layout's slot order ``[N·K, ...]`` (zero in empty slots) when ``padded``. This
        rearranges the weights for :meth:`forward_grouped`, which does the work.
        """
        if not padded:
            w, y = layout.pad(w), layout.pad(y)
        n, k, c = layout.num_nodes, layout.max_neighbours, self.channels
        w = w.reshape(n, k, self.weight_numel // c, c).index_select(2, self.grouped_paths)
        return self.forward_grouped(h, y, w.permute(0, 2, 3, 1), layout)

    def forward_grouped(
        self,
        h: torch.Tensor,
        y: torch.Tensor,
        w: torch.Tensor,
        layout: NeighbourLayout,
    ) -> list[torch.Tensor]:
        """:meth:`forward_nodes` with the edge data already arranged per receiver.

        ``y [N·K, D_edges]`` are the harmonics in slot order and ``w [N, P, C, K]`` the weights
        with the paths in ``grouped_paths`` order (node irrep, then output dimension d₃) and
        the K neighbour slots last; zeros in empty slots. An interaction block writes its
        radial MLP's output directly in this layout (:meth:`InteractionBlock.radial_weights`).

        For a class of n paths with output dimension d₃ and node irrep dimension d₁, the
        messages are ``A [N·n, C, K·d₁] @ Z [N·n, K·d₁, d₃]`` with ``A = w ⊗ h_sender`` and
        ``Z`` the CG-contracted harmonics: a matrix product over each receiver's neighbours.
        The per-edge tensor ``[E, C, S]`` is never formed, in the forward nor in the backward
        pass, and every large operand is produced contiguous (no reordering copies).
        """
        n_nodes, k_max = layout.num_nodes, layout.max_neighbours
        c = self.channels
        if layout.num_edges == 0:
            return [h.new_zeros((n_nodes, c, s)) for _, _, s in self.groups]
        blocks = torch.split(h, [stop - start for start, stop in self.node_slices], dim=-1)
        w_groups = torch.split(w, [sum(len(p) for _, _, p in cl) for cl in self.classes], dim=1)
        pieces = []
        for (i_node, d1, s), classes, w_group in zip(
            self.groups, self.classes, w_groups, strict=True
        ):
            # senders' features gathered channel-major: x [C, N·K, d1] viewed as [N, C, K, d1]
            x = blocks[i_node].reshape(-1, c, d1).transpose(0, 1)
            x = x.index_select(1, layout.padded_senders).reshape(c, n_nodes, k_max, d1)
            x = x.permute(1, 0, 2, 3)
            z = torch.matmul(y, getattr(self, f"cg_{i_node}").to(y.dtype))
            z = z.reshape(n_nodes, k_max, d1, s)
            w_classes = torch.split(w_group, [len(paths) for _, _, paths in classes], dim=1)
            z_classes = torch.split(z, [len(paths) * d3 for _, d3, paths in classes], dim=-1)
            parts = []
            for (_, d3, paths), wp, zc in zip(classes, w_classes, z_classes, strict=True):
                n = len(paths)
                # A [N, n, C, K, d1] = w [N, n, C, K, 1] · x [N, 1, C, K, d1]
                a = (wp.unsqueeze(-1) * x.unsqueeze(1)).reshape(n_nodes * n, c, k_max * d1)
                zc = zc.reshape(n_nodes, k_max, d1, n, d3)
                zc = zc.permute(0, 3, 1, 2, 4).reshape(n_nodes * n, k_max * d1, d3)
                m = torch.bmm(a, zc).reshape(n_nodes, n, c, d3).transpose(1, 2)
                parts.append(m.reshape(n_nodes, c, n * d3))
            pieces.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1))
        return pieces

    def bytes_per_receiver(self, max_neighbours: int, itemsize: int) -> int:
        """Size of the largest intermediates of :meth:`forward_grouped` per receiver node, bytes:
        the products ``A`` of all classes, ``K · C · Σ n·d₁``."""
        total = sum(len(paths) * d1 for (_, d1, _), classes in zip(self.groups, self.classes,
                                                                   strict=True)
                    for _, _, paths in classes)
        return max_neighbours * self.channels * total * itemsize

    def to_irreps(self, pieces: list[torch.Tensor]) -> torch.Tensor:
        """Pieces ``[N, C, S_i]`` in the grouped layout → ``[N, irreps_mid.dim]`` (e3nn layout)."""
        n = pieces[0].shape[0]
        blocks = [pieces[p][:, :, k : k + d3].reshape(n, -1) for p, k, d3 in self.slots]
        return torch.cat(blocks, dim=-1)

    def forward(self, h: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """e3nn's ``TensorProduct`` signature: ``h`` already per edge ``[E, irreps_nodes.dim]``."""
        senders = torch.arange(h.shape[0], device=h.device)
        return self.to_irreps(self.forward_channels(h, senders, y, w))
