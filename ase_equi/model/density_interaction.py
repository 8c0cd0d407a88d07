"""Density-normalised message passing: a learned neighbour density instead of avg_num_neighbors.

The interaction of :mod:`ase_equi.model.interaction` divides the summed messages by one
constant, the average number of neighbours :math:`\\bar N`. This layer divides them, receiver
by receiver, by a smooth count of that receiver's own neighbours,

.. math::

    m_r = \\frac{W_\\mathrm{out} \\sum_{s \\in \\mathcal N(r)} R(|r_{sr}|) \\cdot
          \\big( W_\\mathrm{up} h_s \\otimes Y(\\hat r_{sr}) \\big)}{1 + \\rho_r},
    \\qquad \\rho_r = \\sum_{s \\in \\mathcal N(r)} \\tanh\\!\\big( (w \\cdot B(r_{sr}))^2 \\big),

where B is the edge's radial embedding (Bessel basis times envelope, so each term vanishes at
the cutoff) and w a learned vector (``density_fn``: one e3nn linear layer, no bias, scaled by
1/√num_bessel). Each neighbour counts between 0 and 1, so ρ_r ≤ number of neighbours and the
messages stay bounded in dense and sparse environments alike, the normalisation of the MACE-MP-0b,
MPA-0, OMAT-0 and MATPES models (mace-torch's ``RealAgnosticDensityInteractionBlock`` and its
residual variant).
"""

from __future__ import annotations

import torch
from e3nn import nn

from ..graph.layout import NeighbourLayout
from .interaction import InteractionBlock

__all__ = ["DensityInteractionBlock"]


class DensityInteractionBlock(InteractionBlock):
    """:class:`InteractionBlock` normalised by the learned density 1 + ρ_r.

    Takes the same arguments (``avg_num_neighbors`` is kept but not used) and returns the same
    shapes; ``residual`` chooses the residual variant (self-connection returned separately) or
    the plain one (self-connection applied to the normalised message).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        num_bessel = int(next(iter(self.radial_mlp.children())).h_in)  # the MLP's input width
        self.density_fn = nn.FullyConnectedNet([num_bessel, 1], torch.nn.functional.silu)

    def normalisation(self, edge_radial: torch.Tensor, layout: NeighbourLayout) -> torch.Tensor:
        """``1 + ρ_r`` ``[N, 1]`` from the radial features in slot order ``[N·K, num_bessel]``
        (an empty slot has zero features and so adds nothing)."""
        per_edge = torch.tanh(self.density_fn(edge_radial) ** 2)  # [N·K, 1]
        n, k = layout.num_nodes, layout.max_neighbours
        return per_edge.reshape(n, k).sum(dim=1, keepdim=True) + 1.0
