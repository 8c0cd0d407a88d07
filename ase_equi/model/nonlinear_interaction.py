"""Residual non-linear message passing (the interaction layer of MACE-MH-0 / MH-1).

Compared with :mod:`ase_equi.model.interaction`, this layer

- lets the radial MLP see the elements of both ends of an edge: its input is the Bessel
  features B(r_sr) concatenated with learned embeddings of the sender's and the receiver's
  element, ``[B | a(z_s) | b(z_r)]``; the MLP has biases and a LayerNorm before every SiLU;
- runs the tensor product on features mapped to reduced *edge irreps*
  :math:`\\tilde h = W_\\mathrm{up} h` (fewer channels than the hidden features);
- normalises by a learned density of the receiver's neighbours,
  :math:`\\alpha + \\beta \\rho_r`, :math:`\\rho_r = \\sum_s u(r_{sr}) \\tanh(d(\\cdot)^2)`;
- adds a linear residual of :math:`\\tilde h` and applies a gated non-linearity and a last
  linear map:

.. math::

    m_r = W_2\\, \\mathrm{Gate}\\Big( \\frac{W_1 \\sum_{s} w_{sr} \\cdot (\\tilde h_s \\otimes
          Y(\\hat r_{sr}))}{\\alpha + \\beta \\rho_r} + W_\\mathrm{res} \\tilde h_r \\Big),
    \\qquad w_{sr} = u(r_{sr})\\, \\mathrm{MLP}([B(r_{sr}) | a(z_s) | b(z_r)]),

with u the polynomial envelope (multiplied onto the MLP outputs, not onto its inputs: MACE's
``apply_cutoff=False``; with ``apply_cutoff=True`` the Bessel features carry the envelope).
The self-connection is element-independent, :math:`\\mathrm{sc}_i = W_\\mathrm{sc} h_i`.
This is the mathematics of mace-torch's ``RealAgnosticResidualNonLinearInteractionBlock``
(Batatia et al., arXiv:2510.25380), with the sum organised per receiver as in the other
blocks (:class:`~ase_equi.model.tensor_product.ChannelwiseTensorProduct`).
"""

from __future__ import annotations

import torch
from e3nn import o3

from ..graph.layout import NeighbourLayout
from .chunking import node_ranges, run_chunk
from .gated_nonlinearity import GatedNonLinearity
from .interaction import channelwise_instructions, irreps_to_channels
from .tensor_product import ChannelwiseTensorProduct

__all__ = ["LayerNormMLP", "NonLinearInteractionBlock"]


class LayerNormMLP(torch.nn.Module):
    """``[n, widths[0]] -> [n, widths[-1]]``: Linear (with bias) → LayerNorm → SiLU per hidden
    layer, a plain Linear last. The layers live in ``net`` (torch ``Sequential``)."""

    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = []
        for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(torch.nn.Linear(w_in, w_out))
            if i < len(widths) - 2:
                layers += [torch.nn.LayerNorm(w_out), torch.nn.SiLU()]
        self.net = torch.nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class NonLinearInteractionBlock(torch.nn.Module):
    """One residual non-linear message-passing layer.

    Parameters
    ----------
    node_irreps:
        Irreps of the incoming node features h (``"Cx0e"`` on the first layer).
    edge_irreps:
        The reduced irreps :math:`\\tilde h = W_\\mathrm{up} h` that enter the tensor product
        (one multiplicity E for all blocks, e.g. ``"16x0e+16x1o"``).
    sh_irreps:
        Irreps of the spherical harmonics Y.
    num_bessel:
        Number of Bessel features per edge.
    target_irreps:
        The message irreps (``C × Y`` irreps, sorted).
    hidden_irreps:
        Irreps of the self-connection (the layer's node features after the product).
    num_elements:
        Size of the one-hot element vector.
    radial_mlp:
        Hidden widths of the radial MLP.
    apply_cutoff:
        False: the envelope multiplies the MLP outputs (tensor-product weights and density
        terms); True: it multiplies the Bessel features (the caller passes them so) and the
        outputs are only masked to the real edges.

    Shapes
    ------
    ``forward(node_onehot [N, n_elements], node_features [N, node_irreps.dim],
    edge_sh [N·K, sh.dim], edge_radial [N·K, num_bessel], layout, edge_cutoff [N·K, 1])`` →
    ``(messages [N, C, Σ(2l+1)], sc [N, hidden_irreps.dim])``, edge features in the slot
    order of the :class:`NeighbourLayout`; ``edge_cutoff`` is the envelope (or 1) per slot and
    0 in the empty slots.
    """

    def __init__(
        self,
        node_irreps: o3.Irreps,
        edge_irreps: o3.Irreps,
        sh_irreps: o3.Irreps,
        num_bessel: int,
        target_irreps: o3.Irreps,
        hidden_irreps: o3.Irreps,
        num_elements: int,
        radial_mlp: tuple[int, ...] = (64, 64, 64),
        *,
        apply_cutoff: bool = False,
    ) -> None:
        super().__init__()
        node_irreps, edge_irreps = o3.Irreps(node_irreps), o3.Irreps(edge_irreps)
        sh_irreps, target_irreps = o3.Irreps(sh_irreps), o3.Irreps(target_irreps)
        element_irreps = o3.Irreps(f"{num_elements}x0e")
        n_scalars = node_irreps.count(o3.Irrep("0e"))
        self.target_irreps = target_irreps
        self.apply_cutoff = apply_cutoff

        self.source_embedding = o3.Linear(element_irreps, o3.Irreps(f"{n_scalars}x0e"))
        self.target_embedding = o3.Linear(element_irreps, o3.Irreps(f"{n_scalars}x0e"))
        self.linear_up = o3.Linear(node_irreps, edge_irreps)
        irreps_mid, instructions = channelwise_instructions(edge_irreps, sh_irreps, target_irreps)
        self.conv_tp = ChannelwiseTensorProduct(edge_irreps, sh_irreps, irreps_mid, instructions)
        edge_width = num_bessel + 2 * n_scalars
        self.radial_mlp = LayerNormMLP([edge_width, *radial_mlp, self.conv_tp.weight_numel])
        self.skip_tp = o3.Linear(node_irreps, o3.Irreps(hidden_irreps))
        self.gate = GatedNonLinearity(target_irreps)
        self.linear_res = o3.Linear(edge_irreps, self.gate.irreps_in)
        self.linear_1 = o3.Linear(irreps_mid, self.gate.irreps_in)
        self.linear_2 = o3.Linear(target_irreps, target_irreps)
        self.density_fn = LayerNormMLP([edge_width, 64, 1])
        self.alpha = torch.nn.Parameter(torch.tensor(20.0))
        self.beta = torch.nn.Parameter(torch.tensor(0.0))

    def summed_messages(
        self,
        h_up: torch.Tensor,
        edge_features: torch.Tensor,
        edge_cutoff: torch.Tensor,
        edge_sh: torch.Tensor,
        layout: NeighbourLayout,
    ) -> tuple[torch.Tensor, ...]:
        """Per receiver of ``layout``: the tensor-product messages per piece ``[N, E, S_p]``
        and, last, the density ``ρ [N, 1]``, from the edge features ``[N·K, B + 2S]``."""
        n, k = layout.num_nodes, layout.max_neighbours
        weights = self.radial_mlp(edge_features) * edge_cutoff  # [N·K, P·E]
        e = self.conv_tp.channels
        weights = weights.reshape(n, k, -1, e).index_select(2, self.conv_tp.piece_paths)
        weights = weights.permute(0, 2, 3, 1)  # [N, P, E, K], the layout receiver_messages reads
        density = torch.tanh(self.density_fn(edge_features) ** 2) * edge_cutoff  # [N·K, 1]
        density = density.reshape(n, k).sum(dim=1, keepdim=True)
        pieces = self.conv_tp.receiver_messages(h_up, edge_sh, weights, layout)
        return (*pieces, density)

    def forward(
        self,
        node_onehot: torch.Tensor,
        node_features: torch.Tensor,
        edge_sh: torch.Tensor,
        edge_radial: torch.Tensor,
        layout: NeighbourLayout,
        *,
        edge_cutoff: torch.Tensor,
        chunk_nodes: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Messages and self-connection of one layer (shapes in the class docstring).

        ``chunk_nodes``: evaluate the per-edge part for at most that many receivers at a time,
        recomputed in the backward pass (as :class:`~ase_equi.model.interaction.InteractionBlock`).
        """
        sc = self.skip_tp(node_features)
        h_up = self.linear_up(node_features)
        n, k = layout.num_nodes, layout.max_neighbours
        source = self.source_embedding(node_onehot).index_select(0, layout.padded_senders)
        target = self.target_embedding(node_onehot)  # [N, S], the same for a receiver's K slots
        target = target.unsqueeze(1).expand(n, k, target.shape[-1]).reshape(n * k, -1)
        edge_features = torch.cat([edge_radial, source, target], dim=-1)  # [N·K, B + 2S]
        if chunk_nodes is None or n <= chunk_nodes:
            out = self.summed_messages(h_up, edge_features, edge_cutoff, edge_sh, layout)
        else:
            chunks = [
                run_chunk(
                    self.summed_messages,
                    h_up,
                    edge_features[i * k : j * k],
                    edge_cutoff[i * k : j * k],
                    edge_sh[i * k : j * k],
                    layout.receiver_rows(i, j),
                )
                for i, j in node_ranges(n, chunk_nodes)
            ]
            out = tuple(torch.cat(parts) for parts in zip(*chunks, strict=True))
        *pieces, density = out
        messages = self.linear_1(self.conv_tp.to_irreps(list(pieces)))
        messages = messages / (density * self.beta + self.alpha) + self.linear_res(h_up)
        messages = self.linear_2(self.gate(messages))
        return irreps_to_channels(messages, self.target_irreps), sc
