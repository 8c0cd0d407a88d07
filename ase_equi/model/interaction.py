"""Equivariant message passing: one interaction layer.

For every edge sender s → receiver r with vector r_sr, length |r_sr| and direction r̂_sr,

.. math::

    m_r = \\frac{1}{\\bar N} \\, W_\\mathrm{out} \\sum_{s \\in \\mathcal N(r)}
          R(|r_{sr}|) \\cdot \\big( W_\\mathrm{up} h_s \\otimes Y(\\hat r_{sr}) \\big)

where :math:`W_\\mathrm{up}` and :math:`W_\\mathrm{out}` are equivariant linear maps, ⊗ is a
channel-wise ("uvu") tensor product whose path weights R are produced per edge by a radial MLP
from the Bessel embedding, and :math:`\\bar N` is the average number of neighbours
(``avg_num_neighbors``). Messages go sender → receiver and are summed at the receiver.

A residual layer also returns the element-dependent self-connection
:math:`\\mathrm{sc}_i = W_{z_i} h_i` (a tensor product of h_i with the one-hot element vector),
which the product block adds back after the symmetric contraction. The non-residual layer (used
only as a first layer by some MACE models) applies the element-dependent map to the message
itself instead.
"""

from __future__ import annotations

import torch
from e3nn import nn, o3

from ..graph.layout import DegreeBuckets, NeighbourLayout
from .chunking import node_ranges, run_chunk
from .message_linear import MessageLinear, supports
from .tensor_product import ChannelwiseTensorProduct


def channelwise_instructions(
    irreps_nodes: o3.Irreps, irreps_edges: o3.Irreps, target: o3.Irreps
) -> tuple[o3.Irreps, list[tuple[int, int, int, str, bool]]]:
    """Paths of the channel-wise product ``irreps_nodes ⊗ irreps_edges`` that land in ``target``.

    Every allowed (node irrep, edge irrep, output irrep) triple keeps the node multiplicity
    ("uvu" mode). Output blocks are listed in e3nn's sorted irrep order (so the following linear
    layer sees sorted irreps), and the instructions are ordered by output block, which fixes the
    layout of the per-edge weight vector produced by the radial MLP.

    Returns
    -------
    irreps_mid, instructions:
        Output irreps of the tensor product (sorted, not simplified) and the e3nn instructions.

    Examples
    --------
    >>> mid, ins = channelwise_instructions(o3.Irreps("4x0e"), o3.Irreps("0e+1o"),
    ...                                     o3.Irreps("4x0e+4x1o"))
    >>> str(mid), [i[:3] for i in ins]
    ('4x0e+4x1o', [(0, 0, 0), (0, 1, 1)])
    """
    outputs: list[tuple[int, o3.Irrep]] = []  # one output block per path
    paths: list[tuple[int, int, int]] = []
    for i_node, (mul, ir_node) in enumerate(irreps_nodes):
        for i_edge, (_, ir_edge) in enumerate(irreps_edges):
            for ir_out in ir_node * ir_edge:
                if ir_out in target:
                    paths.append((i_node, i_edge, len(outputs)))
                    outputs.append((mul, ir_out))
    irreps_mid, order, _ = o3.Irreps(outputs).sort()
    instructions = sorted(
        ((i_node, i_edge, order[k], "uvu", True) for i_node, i_edge, k in paths),
        key=lambda ins: ins[2],
    )
    return irreps_mid, instructions


def irreps_to_channels(x: torch.Tensor, irreps: o3.Irreps) -> torch.Tensor:
    """Reshape e3nn layout ``[n, irreps.dim]`` to ``[n, channels, Σ_l (2l+1)]``.

    All irreps must share one multiplicity (the number of channels); the irrep blocks are
    concatenated along the last axis in the order of ``irreps``.
    """
    fields = []
    start = 0
    for mul, ir in irreps:
        fields.append(x[:, start : start + mul * ir.dim].reshape(x.shape[0], mul, ir.dim))
        start += mul * ir.dim
    return torch.cat(fields, dim=-1)


class InteractionBlock(torch.nn.Module):
    """One message-passing layer.

    Parameters
    ----------
    node_irreps:
        Irreps of the incoming node features h (e.g. ``"128x0e"`` on the first layer).
    edge_irreps:
        Irreps of the spherical harmonics Y, e.g. ``"1x0e+1x1o+1x2e+1x3o"``.
    num_bessel:
        Number of Bessel radial basis functions feeding the radial MLP
        (``ModelConfig.num_bessel``).
    target_irreps:
        Irreps kept from the tensor product (``channels × Y`` irreps), the message irreps.
    hidden_irreps:
        Irreps of the self-connection output (the layer's node-feature irreps after product).
    num_elements:
        Size of the one-hot element vector.
    avg_num_neighbors:
        Normalisation :math:`\\bar N` of the neighbour sum.
    radial_mlp:
        Hidden widths of the radial MLP (SiLU, no biases).
    residual:
        Residual layer (self-connection returned separately) or not (self-connection applied
        to the message).

    Shapes
    ------
    ``forward(node_onehot [n_nodes, n_elements], node_features [n_nodes, node_irreps.dim],
    edge_sh [N·K, edge_irreps.dim], edge_radial [N·K, num_bessel], layout)`` →
    ``(messages [n_nodes, channels, Σ(2l+1)], sc [n_nodes, hidden_irreps.dim] | None)``, with
    the edge features in the slot order of the :class:`NeighbourLayout` (K slots per node).
    """

    def __init__(
        self,
        node_irreps: o3.Irreps,
        edge_irreps: o3.Irreps,
        num_bessel: int,
        target_irreps: o3.Irreps,
        hidden_irreps: o3.Irreps,
        num_elements: int,
        avg_num_neighbors: float,
        radial_mlp: tuple[int, ...] = (64, 64, 64),
        *,
        residual: bool = True,
    ) -> None:
        super().__init__()
        node_irreps, edge_irreps = o3.Irreps(node_irreps), o3.Irreps(edge_irreps)
        target_irreps, hidden_irreps = o3.Irreps(target_irreps), o3.Irreps(hidden_irreps)
        element_irreps = o3.Irreps(f"{num_elements}x0e")
        self.residual = residual
        self.avg_num_neighbors = float(avg_num_neighbors)
        self.target_irreps = target_irreps

        self.linear_up = o3.Linear(node_irreps, node_irreps)
        irreps_mid, instructions = channelwise_instructions(node_irreps, edge_irreps, target_irreps)
        self.conv_tp = ChannelwiseTensorProduct(node_irreps, edge_irreps, irreps_mid, instructions)
        self.radial_mlp = nn.FullyConnectedNet(
            [num_bessel, *radial_mlp, self.conv_tp.weight_numel], torch.nn.functional.silu
        )
        self.linear = o3.Linear(irreps_mid, target_irreps)
        # the same map straight from the tensor product's classes, in the channel layout
        fused = residual and supports(self.conv_tp, self.linear)
        self.message_linear = MessageLinear(self.conv_tp, self.linear) if fused else None
        if residual:
            self.skip_tp = o3.FullyConnectedTensorProduct(
                node_irreps, element_irreps, hidden_irreps
            )
        else:
            self.skip_tp = o3.FullyConnectedTensorProduct(
                target_irreps, element_irreps, target_irreps
            )

    def normalisation(
        self, edge_radial: torch.Tensor, layout: NeighbourLayout
    ) -> torch.Tensor | float:
        """Divisor of the summed messages: here the constant :math:`\\bar N`
        (``avg_num_neighbors``); a per-receiver ``[N, 1]`` in the density-normalised block."""
        return self.avg_num_neighbors

    def radial_hidden(self, edge_radial: torch.Tensor) -> torch.Tensor:
        """The radial MLP up to its last (linear) layer: ``[N·K, num_bessel] -> [N·K, hidden]``."""
        x = edge_radial
        for layer in list(self.radial_mlp.children())[:-1]:
            x = layer(x)
        return x

    def radial_weights(self, hidden: torch.Tensor, layout: NeighbourLayout) -> torch.Tensor:
        """Tensor-product weights ``[N, P, C, K]`` from the MLP's last hidden layer, in the
        layout of :meth:`ChannelwiseTensorProduct.receiver_messages`.

        The last (linear) layer of ``radial_mlp`` with its output columns reordered and the slot
        axis moved last: applied as ``W[:, columns]ᵀ @ hiddenᵀ`` per receiver, so that the
        product comes out in that layout. Reordering the small weight matrix instead of the
        large output saves a copy and, in the backward pass, a zero-filled scatter of the
        output's size. Where the tensor product takes its channels-innermost path (training,
        degree buckets), the product is ``hidden @ W[:, columns]`` instead, ``[N, K, P, C]`` in
        memory and returned as a ``[N, P, C, K]`` view, which that path reads, and whose
        gradient it returns, without a reordering copy.
        """
        last = list(self.radial_mlp.children())[-1]
        # e3nn's last layer: x @ weight / sqrt(h_in var_in / var_out), no activation
        scale = (last.h_in * last.var_in / last.var_out) ** -0.5
        c = self.conv_tp.channels
        weight = last.weight.reshape(last.h_in, -1, c).index_select(1, self.conv_tp.piece_paths)
        weight = (weight * scale).reshape(last.h_in, -1)  # [hidden, P·C]
        n, k = layout.num_nodes, layout.max_neighbours
        if self.conv_tp.channels_last(layout):
            # slots outer, channels inner: the order the channels-innermost product reads
            # without a copy, forward and backward; returned as a [N, P, C, K] view
            out = torch.matmul(hidden, weight)  # [N·K, P·C]
            return out.reshape(n, k, self.conv_tp.weight_numel // c, c).permute(0, 2, 3, 1)
        hidden_t = hidden.reshape(n, k, last.h_in).transpose(1, 2)
        out = torch.matmul(weight.transpose(0, 1), hidden_t)  # [N, P·C, K]
        return out.reshape(n, self.conv_tp.weight_numel // c, c, k)

    def summed_messages(
        self,
        h: torch.Tensor,
        edge_radial: torch.Tensor,
        edge_sh: torch.Tensor,
        layout: NeighbourLayout,
    ) -> list[torch.Tensor]:
        """Tensor-product messages summed per receiver, ``[N, n·C, d₃]`` per class of paths
        (:meth:`ChannelwiseTensorProduct.receiver_message_classes`), from the radial features
        and harmonics in slot order."""
        weights = self.radial_weights(self.radial_hidden(edge_radial), layout)  # [N, P, C, K]
        return self.conv_tp.receiver_message_classes(h, edge_sh, weights, layout)

    def _bucketed_messages(
        self,
        h: torch.Tensor,
        edge_radial: torch.Tensor,
        edge_sh: torch.Tensor,
        layout: DegreeBuckets,
        chunk_nodes: int | None,
    ) -> tuple[list[torch.Tensor], torch.Tensor | float]:
        """:meth:`summed_messages` and :meth:`normalisation` bucket by bucket of a
        :class:`DegreeBuckets` layout (each padded to its own largest degree), in node order."""
        if chunk_nodes is not None and layout.num_nodes > chunk_nodes:
            raise ValueError("a DegreeBuckets layout is evaluated without chunks of receivers")
        summed, norms = [], []
        for part, first, stop in layout.parts:
            radial, sh = edge_radial[first:stop], edge_sh[first:stop]
            summed.append(self.summed_messages(h, radial, sh, part))
            norms.append(self.normalisation(radial, part))
        classes = [layout.unsort(torch.cat(parts)) for parts in zip(*summed, strict=True)]
        if isinstance(norms[0], torch.Tensor):
            return classes, layout.unsort(torch.cat(norms))  # type: ignore[arg-type]
        return classes, norms[0]

    def forward(
        self,
        node_onehot: torch.Tensor,
        node_features: torch.Tensor,
        edge_sh: torch.Tensor,
        edge_radial: torch.Tensor,
        layout: NeighbourLayout,
        *,
        chunk_nodes: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Messages and self-connection of one layer.

        ``edge_sh`` and ``edge_radial`` are in the slot order of ``layout`` (``layout.pad``
        of the per-edge tensors, ``[N·K, ...]``), so that the radial MLP writes the
        tensor-product weights directly in that order; empty slots have zero radial features
        and so zero weights (the MLP has no biases).

        ``chunk_nodes``: evaluate the messages for at most that many receivers at a time, and
        recompute them in the backward pass instead of keeping their intermediates
        (checkpointing), so that memory is bounded by one chunk; None: all at once.
        """
        sc = self.skip_tp(node_features, node_onehot) if self.residual else None
        h = self.linear_up(node_features)
        n, k = layout.num_nodes, layout.max_neighbours
        if isinstance(layout, DegreeBuckets):
            summed, norm = self._bucketed_messages(h, edge_radial, edge_sh, layout, chunk_nodes)
        elif chunk_nodes is None or n <= chunk_nodes:
            summed = self.summed_messages(h, edge_radial, edge_sh, layout)
        else:
            # the radial MLP too: its activations, [N·K, hidden] per layer, are kept otherwise
            chunks = [
                run_chunk(
                    self.summed_messages,
                    h,
                    edge_radial[i * k : j * k],
                    edge_sh[i * k : j * k],
                    layout.receiver_rows(i, j),
                )
                for i, j in node_ranges(n, chunk_nodes)
            ]
            summed = [torch.cat(parts) for parts in zip(*chunks, strict=True)]
        if not isinstance(layout, DegreeBuckets):
            norm = self.normalisation(edge_radial, layout)  # a number or [N, 1]
        if self.message_linear is not None:  # [N, C, Σ(2l+1)] directly
            if isinstance(norm, torch.Tensor):
                norm = norm.unsqueeze(-1)  # [N, 1, 1]
            return self.message_linear(summed, self.linear.weight) / norm, sc
        messages = self.linear(self.conv_tp.to_irreps(self.conv_tp.pieces_of(summed))) / norm
        if not self.residual:
            messages = self.skip_tp(messages, node_onehot)
        return irreps_to_channels(messages, self.target_irreps), sc
