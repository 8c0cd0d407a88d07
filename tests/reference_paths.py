"""Slow reference forms of the model's fast paths, used only by tests.

The model evaluates the channel-wise tensor product per receiver
(:meth:`~ase_equi.model.tensor_product.ChannelwiseTensorProduct.receiver_messages`), without
ever forming the per-edge messages. The functions here form them, edge by edge, from the same
Clebsch–Gordan buffers, so that tests can check the fast path against a plain per-edge product
plus a scatter, and the per-edge product against e3nn's ``TensorProduct``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ase_equi.graph.layout import NeighbourLayout
    from ase_equi.model.tensor_product import ChannelwiseTensorProduct


def piece_columns(tp: ChannelwiseTensorProduct, piece: int) -> torch.Tensor:
    """Instruction (weight) index of each of the S_p columns of piece ``piece``, ``[S_p]``."""
    columns = [n for _, d3, paths in tp.classes[piece] for n in paths for _ in range(d3)]
    return torch.tensor(columns, dtype=torch.long)


def edge_messages(
    tp: ChannelwiseTensorProduct,
    h: torch.Tensor,
    senders: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor,
) -> list[torch.Tensor]:
    """Messages of every edge, per piece ``[E, C, S_p]``, before any sum over receivers.

    ``h [n_nodes, irreps_nodes.dim]`` node features, gathered at ``senders [E]``;
    ``y [E, irreps_edges.dim]`` harmonics; ``w [E, weight_numel]`` weights in e3nn's order
    (instruction-major, then channel).
    """
    e, c = senders.shape[0], tp.channels
    w = w.reshape(e, tp.weight_numel // c, c).transpose(1, 2)  # [E, C, n_instructions]
    blocks = torch.split(h, [stop - start for start, stop in tp.node_slices], dim=-1)
    pieces = []
    for i_node, d1, s in tp.pieces:
        x = blocks[i_node].index_select(0, senders).reshape(e, c, d1)
        z = torch.matmul(y, getattr(tp, f"cg_{i_node}").to(y.dtype)).reshape(e, d1, s)
        pieces.append(torch.bmm(x, z) * w.index_select(2, piece_columns(tp, i_node)))
    return pieces


def receiver_messages_from_edges(
    tp: ChannelwiseTensorProduct,
    h: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor,
    layout: NeighbourLayout,
) -> list[torch.Tensor]:
    """The fast path fed with per-edge data: ``y [E, D_edges]`` and ``w [E, weight_numel]``
    (e3nn's order) are padded into the layout's slots and the weights reordered to
    ``[N, P, C, K]`` (the order an interaction block's radial MLP writes directly)."""
    w, y = layout.pad(w), layout.pad(y)
    n, k, c = layout.num_nodes, layout.max_neighbours, tp.channels
    w = w.reshape(n, k, tp.weight_numel // c, c).index_select(2, tp.piece_paths)
    return tp.receiver_messages(h, y, w.permute(0, 2, 3, 1), layout)


def edge_tensor_product(
    tp: ChannelwiseTensorProduct, h: torch.Tensor, y: torch.Tensor, w: torch.Tensor
) -> torch.Tensor:
    """e3nn's ``TensorProduct.forward(x, y, weight)`` signature: ``h [E, irreps_nodes.dim]``
    already per edge → ``[E, irreps_mid.dim]``."""
    senders = torch.arange(h.shape[0], device=h.device)
    return tp.to_irreps(edge_messages(tp, h, senders, y, w))
