"""Channel-wise ("uvu") tensor product of node features with edge spherical harmonics.

For an instruction (l₁ ⊗ l₂ → l₃) and every edge e and channel c,

.. math::

    m_{e c, k} = \\alpha\\, w_{e c} \\sum_{i j} C^{l_1 l_2 l_3}_{i j k}\\, h_{e c, i}\\, Y_{e, j},
    \\qquad \\alpha = \\sqrt{(2 l_3 + 1) / n_{l_3}},

with e3nn's real Wigner 3j symbols C, per-edge weights w from the radial MLP, and
:math:`n_{l_3}` the number of paths into the same output block (e3nn's "component" irrep and
"element" path normalisation). This is numerically e3nn's ``TensorProduct(..., "uvu")`` with the
same weight layout, evaluated differently: the harmonics are first contracted with the Clebsch–
Gordan symbols of every path that starts from the same node irrep (edge-only work, no channels),
``Z [n_edges, d₁, S]``, and :meth:`ChannelwiseTensorProduct.receiver_messages` sums over each
receiver's neighbours inside one batched matrix product per class of paths, so that the
per-edge ``[E, C, S]`` tensor is never formed. Per-edge reference forms, used only to test this
one, live in the test suite (``tests/reference_paths.py``).
"""

from __future__ import annotations

import math

import torch
from e3nn import o3

from ..graph.layout import NeighbourLayout


class ChannelwiseTensorProduct(torch.nn.Module):
    """Messages ``w · (h_sender ⊗ Y)`` summed per receiver: ``[N, irreps_mid.dim]`` (e3nn layout).

    Parameters
    ----------
    irreps_nodes, irreps_edges, irreps_mid:
        Node irreps (every block with the same multiplicity C), edge irreps (multiplicity 1) and
        output irreps, as from :func:`~ase_equi.model.interaction.channelwise_instructions`.
    instructions:
        ``(i_node, i_edge, i_out, "uvu", True)`` tuples ordered by output block; the weight
        vector of an edge holds C weights per instruction, in this order (e3nn's weight layout).
    wigner_float32:
        Use the Wigner 3j symbols of the paths with l₁, l₂, l₃ ≥ 1 rounded to float32, as a
        MACE file stored in float32 carries them (mace-torch computes with those, also in
        float64; e3nn needs no symbol for a path with an l = 0). Default: exact (float64).

    Notes
    -----
    The work is organised in *pieces*, one per node irrep: piece p holds the S_p columns of all
    paths that start from node irrep p, grouped by output dimension d₃ into *classes*.
    :meth:`receiver_messages` returns one ``[N, C, S_p]`` tensor per piece and :meth:`to_irreps`
    reorders their columns into e3nn's layout (summing over edges first and reordering after is
    cheaper).

    Examples
    --------
    >>> from ase_equi.model.interaction import channelwise_instructions
    >>> mid, ins = channelwise_instructions(o3.Irreps("4x0e"), o3.Irreps("0e+1o"),
    ...                                     o3.Irreps("4x0e+4x1o"))
    >>> tp = ChannelwiseTensorProduct(o3.Irreps("4x0e"), o3.Irreps("0e+1o"), mid, ins)
    >>> tp.weight_numel, tp.pieces
    (8, [(0, 1, 4)])
    """

    def __init__(
        self,
        irreps_nodes: o3.Irreps,
        irreps_edges: o3.Irreps,
        irreps_mid: o3.Irreps,
        instructions: list[tuple[int, int, int, str, bool]],
        *,
        wigner_float32: bool = False,
    ) -> None:
        super().__init__()
        self.wigner_float32 = wigner_float32
        self.irreps_nodes, self.irreps_edges = o3.Irreps(irreps_nodes), o3.Irreps(irreps_edges)
        self.irreps_mid = o3.Irreps(irreps_mid)
        self.channels = self.irreps_nodes[0].mul
        if any(mul != self.channels for mul, _ in self.irreps_nodes):
            raise ValueError(f"node irreps must share one multiplicity: {self.irreps_nodes}")
        self.weight_numel = self.channels * len(instructions)
        node_offsets = [0]
        for _, ir in self.irreps_nodes:
            node_offsets.append(node_offsets[-1] + self.channels * ir.dim)
        self.node_slices = [
            (node_offsets[i], node_offsets[i + 1]) for i in range(len(self.irreps_nodes))
        ]

        self.pieces: list[tuple[int, int, int]] = []  # (node irrep index, d1, S)
        self.classes: list[list[tuple[int, int, list[int]]]] = []  # per piece: (start, d3, paths)
        position: dict[int, tuple[int, int]] = {}  # instruction → (piece, column)
        for i_node, (_, ir1) in enumerate(self.irreps_nodes):
            cg, classes = self._piece_coupling(i_node, instructions)
            for start, d3, paths in classes:
                for j, n in enumerate(paths):
                    position[n] = (i_node, start + j * d3)
            self.register_buffer(f"cg_{i_node}", cg, persistent=False)
            self.pieces.append((i_node, ir1.dim, cg.shape[1] // ir1.dim))
            self.classes.append(classes)
        # all paths, piece by piece and class by class: the order of receiver_messages' weights
        piece_paths = [n for classes in self.classes for _, _, paths in classes for n in paths]
        self.register_buffer(
            "piece_paths", torch.tensor(piece_paths, dtype=torch.long), persistent=False
        )
        # e3nn output order: block-major (one block per instruction), then channel, component
        self.output_columns = [
            (*position[n], self.irreps_mid[instructions[n][2]].ir.dim)
            for n in range(len(instructions))
        ]

    def _piece_coupling(
        self, i_node: int, instructions: list[tuple[int, int, int, str, bool]]
    ) -> tuple[torch.Tensor, list[tuple[int, int, list[int]]]]:
        """The scaled Clebsch–Gordan matrix ``G [D_edges, d₁·S]`` of all paths from node irrep
        ``i_node`` and its classes ``(first column, d₃, instruction indices)``.

        The columns are grouped by output dimension d₃, so that each class of the product
        ``[.., C, S]`` is weighted by one broadcast multiplication. Path n into output block
        i_out carries the factor ``α = sqrt(d₃ / n_paths_into(i_out))`` (module docstring).
        """
        ir1 = self.irreps_nodes[i_node].ir
        paths_into = [0] * len(self.irreps_mid)
        for ins in instructions:
            paths_into[ins[2]] += 1
        edge_offsets = [0]
        for _, ir in self.irreps_edges:
            edge_offsets.append(edge_offsets[-1] + ir.dim)
        by_dim: dict[int, list[int]] = {}
        for n, ins in enumerate(instructions):
            if ins[0] == i_node:
                by_dim.setdefault(self.irreps_mid[ins[2]].ir.dim, []).append(n)
        s = sum(d3 * len(paths) for d3, paths in by_dim.items())
        g = torch.zeros(self.irreps_edges.dim, ir1.dim, s, dtype=torch.float64)
        classes = []
        k = 0
        for d3, paths in sorted(by_dim.items()):
            classes.append((k, d3, paths))
            for n in paths:
                i_edge, i_out = instructions[n][1], instructions[n][2]
                ir2, ir3 = self.irreps_edges[i_edge].ir, self.irreps_mid[i_out].ir
                alpha = math.sqrt(ir3.dim / paths_into[i_out])
                c = o3.wigner_3j(ir1.l, ir2.l, ir3.l, dtype=torch.float64)  # [d1, d2, d3]
                if self.wigner_float32 and min(ir1.l, ir2.l, ir3.l) > 0:
                    c = c.float().double()
                rows = slice(edge_offsets[i_edge], edge_offsets[i_edge + 1])
                g[rows, :, k : k + d3] = alpha * c.permute(1, 0, 2)
                k += d3
        return g.reshape(self.irreps_edges.dim, ir1.dim * s), classes

    def receiver_messages(
        self,
        h: torch.Tensor,
        y: torch.Tensor,
        w: torch.Tensor,
        layout: NeighbourLayout,
    ) -> list[torch.Tensor]:
        """Messages summed over each receiver's incoming edges, per piece ``[N, C, S_p]``.

        ``h [N, irreps_nodes.dim]`` are the node features (gathered here at the senders),
        ``y [N·K, D_edges]`` the harmonics in the layout's slot order and ``w [N, P, C, K]``
        the weights with the paths in ``piece_paths`` order (node irrep, then output
        dimension d₃) and the K neighbour slots last; zeros in empty slots. An interaction
        block writes its radial MLP's output directly in this layout
        (:meth:`InteractionBlock.radial_weights`). The same messages as
        :meth:`receiver_message_classes`, arranged per piece (:meth:`pieces_of`).
        """
        return self.pieces_of(self.receiver_message_classes(h, y, w, layout))

    def receiver_message_classes(
        self,
        h: torch.Tensor,
        y: torch.Tensor,
        w: torch.Tensor,
        layout: NeighbourLayout,
    ) -> list[torch.Tensor]:
        """Messages summed per receiver, one ``[N, n·C, d₃]`` tensor per class of n paths
        (rows: path, then channel), piece by piece, class by class; arguments as
        :meth:`receiver_messages`.

        For a class of n paths with output dimension d₃ and node irrep dimension d₁, the
        messages are ``A [N·n, C, K·d₁] @ Z [N·n, K·d₁, d₃]`` with ``A = w ⊗ h_sender`` and
        ``Z`` the CG-contracted harmonics: a matrix product over each receiver's neighbours.
        The per-edge tensor ``[E, C, S]`` is never formed, in the forward nor in the backward
        pass, and every large operand is produced contiguous (no reordering copies).
        """
        n_nodes, k_max = layout.num_nodes, layout.max_neighbours
        c = self.channels
        if layout.num_edges == 0:
            return [
                h.new_zeros((n_nodes, len(paths) * c, d3))
                for classes in self.classes
                for _, d3, paths in classes
            ]
        blocks = torch.split(h, [stop - start for start, stop in self.node_slices], dim=-1)
        channels_last = self.channels_last(layout)
        if channels_last:
            # read as [N, K, P, C] (a view; contiguous when the radial MLP wrote it so, see
            # InteractionBlock.radial_weights), split along P: the backward pass then gathers
            # the weight gradients in that order, which the MLP's matrix product reads as is
            w = w.permute(0, 3, 1, 2)
        path_dim = 2 if channels_last else 1
        w_pieces = torch.split(
            w, [sum(len(p) for _, _, p in cl) for cl in self.classes], dim=path_dim
        )
        out = []
        for (i_node, d1, s), classes, w_piece in zip(
            self.pieces, self.classes, w_pieces, strict=True
        ):
            z = torch.matmul(y, getattr(self, f"cg_{i_node}").to(y.dtype))
            z = z.reshape(n_nodes, k_max, d1, s)
            w_classes = torch.split(w_piece, [len(paths) for _, _, paths in classes], dim=path_dim)
            z_classes = torch.split(z, [len(paths) * d3 for _, d3, paths in classes], dim=-1)
            if channels_last:  # see _channels_last_classes
                x_cl = blocks[i_node].reshape(-1, c, d1).transpose(1, 2).contiguous()
                x_cl = x_cl.index_select(0, layout.padded_senders).reshape(n_nodes, k_max, d1, c)
                x_cl = x_cl.transpose(1, 2).contiguous()  # [N, d1, K, C]
                out += self._channels_last_classes(classes, w_classes, z_classes, x_cl)
                continue
            # senders' features gathered channel-major: x [C, N·K, d1] viewed as [N, C, K, d1]
            x = blocks[i_node].reshape(-1, c, d1).transpose(0, 1)
            x = x.index_select(1, layout.padded_senders).reshape(c, n_nodes, k_max, d1)
            x = x.permute(1, 0, 2, 3)
            for (_, d3, paths), wp, zc in zip(classes, w_classes, z_classes, strict=True):
                n = len(paths)
                # A [N, n, C, K, d1] = w [N, n, C, K, 1] · x [N, 1, C, K, d1]
                a = (wp.unsqueeze(-1) * x.unsqueeze(1)).reshape(n_nodes * n, c, k_max * d1)
                zc = zc.reshape(n_nodes, k_max, d1, n, d3)
                zc = zc.permute(0, 3, 1, 2, 4).reshape(n_nodes * n, k_max * d1, d3)
                out.append(torch.bmm(a, zc).reshape(n_nodes, n * c, d3))
        return out

    @staticmethod
    def _channels_last_classes(
        classes: list[tuple[int, int, list[int]]],
        w_classes: tuple[torch.Tensor, ...],
        z_classes: tuple[torch.Tensor, ...],
        x: torch.Tensor,
    ) -> list[torch.Tensor]:
        """The class messages of one piece with the channels as the innermost axis (training,
        and layouts that ask for it: the parts of a batch padded by degree, whose single
        backward pass it also makes cheaper).

        ``x [N, d1, K, C]`` are the senders' features, ``w_classes [N, K, n, C]`` and
        ``z_classes [N, K, d1, n·d3]`` as in :meth:`receiver_message_classes`. The same sums,
        ``Aᵀ [N·n, d1·K, C] = w ⊗ x`` and ``Zᵀ [N·n, d3, d1·K] @ Aᵀ``: with C innermost, the
        reductions that the backward pass of the broadcast product needs (over d1 for the
        weights, over the n paths for the features) add whole contiguous ``[K, C]`` slabs
        instead of a few strided elements, which makes the double backward pass of a
        training step (forces in the loss) markedly cheaper.
        """
        n_nodes, d1, k_max, c = x.shape
        out = []
        for (_, d3, paths), wp, zc in zip(classes, w_classes, z_classes, strict=True):
            n = len(paths)
            w_cl = wp.transpose(1, 2).unsqueeze(2)  # [N, n, 1, K, C], a view
            a = (w_cl * x.unsqueeze(1)).reshape(n_nodes * n, d1 * k_max, c)
            zt = zc.reshape(n_nodes, k_max, d1, n, d3).permute(0, 3, 4, 2, 1)
            m = torch.bmm(zt.reshape(n_nodes * n, d3, d1 * k_max), a)  # [N·n, d3, C]
            out.append(m.reshape(n_nodes, n, d3, c).transpose(2, 3).reshape(n_nodes, n * c, d3))
        return out

    def channels_last(self, layout: NeighbourLayout) -> bool:
        """Whether :meth:`receiver_message_classes` takes the channels-innermost path
        (:meth:`_channels_last_classes`): in training, and for layouts that ask for it."""
        return self.training or layout.channels_last

    def pieces_of(self, classes: list[torch.Tensor]) -> list[torch.Tensor]:
        """Class tensors ``[N, n·C, d₃]`` (:meth:`receiver_message_classes`) → one
        ``[N, C, S_p]`` tensor per piece (columns: class, path, component)."""
        c = self.channels
        it = iter(classes)
        out = []
        for piece_classes in self.classes:
            parts = []
            for _, d3, paths in piece_classes:
                m = next(it)
                n_nodes, n = m.shape[0], len(paths)
                parts.append(m.reshape(n_nodes, n, c, d3).transpose(1, 2).reshape(n_nodes, c, -1))
            out.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1))
        return out

    def bytes_per_receiver(self, max_neighbours: int, itemsize: int) -> int:
        """Size of the largest intermediates of :meth:`receiver_messages` per receiver node,
        bytes: the products ``A`` of all classes, ``K · C · Σ n·d₁``."""
        total = sum(
            len(paths) * d1
            for (_, d1, _), classes in zip(self.pieces, self.classes, strict=True)
            for _, _, paths in classes
        )
        return max_neighbours * self.channels * total * itemsize

    def to_irreps(self, pieces: list[torch.Tensor]) -> torch.Tensor:
        """Pieces ``[N, C, S_p]`` → ``[N, irreps_mid.dim]`` (e3nn layout)."""
        n = pieces[0].shape[0]
        blocks = [pieces[p][:, :, k : k + d3].reshape(n, -1) for p, k, d3 in self.output_columns]
        return torch.cat(blocks, dim=-1)
