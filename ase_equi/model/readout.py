"""Per-atom energies from the invariant (0e) part of the node features.

Every layer t contributes an energy :math:`E_i^{(t)} = \\mathrm{readout}_t(h_i^{(t)})`; the
readouts of all layers but the last are linear, the last one is a small MLP
(linear → SiLU → linear). Only scalar (0e) channels can reach a 0e output, so the readouts are
rotation invariant by construction.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from e3nn import nn, o3


class LinearReadout(torch.nn.Module):
    """``[n_nodes, irreps_in.dim] -> [n_nodes]`` (eV, before scale and shift)."""

    def __init__(self, irreps_in: o3.Irreps) -> None:
        super().__init__()
        self.linear = o3.Linear(o3.Irreps(irreps_in), o3.Irreps("0e"))

    def forward(self, node_features: torch.Tensor) -> torch.Tensor:
        return self.linear(node_features).squeeze(-1)


class NonLinearReadout(torch.nn.Module):
    """``[n_nodes, irreps_in.dim] -> [n_nodes]`` through ``readout_hidden`` SiLU scalars."""

    def __init__(self, irreps_in: o3.Irreps, readout_hidden: int = 16) -> None:
        super().__init__()
        hidden_irreps = o3.Irreps(f"{readout_hidden}x0e")
        self.linear_1 = o3.Linear(o3.Irreps(irreps_in), hidden_irreps)
        self.non_linearity = nn.Activation(hidden_irreps, [torch.nn.functional.silu])
        self.linear_2 = o3.Linear(hidden_irreps, o3.Irreps("0e"))

    def forward(self, node_features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.non_linearity(self.linear_1(node_features))).squeeze(-1)


def make_readout(irreps: o3.Irreps, readout_hidden: int, *, last: bool) -> torch.nn.Module:
    """The readout of one layer: the MLP for the last layer, linear for the others."""
    return NonLinearReadout(irreps, readout_hidden) if last else LinearReadout(irreps)


def make_readouts(layer_irreps: Sequence[o3.Irreps], readout_hidden: int) -> list[torch.nn.Module]:
    """One readout per layer: linear for all but the last, the MLP for the last."""
    last = len(layer_irreps) - 1
    return [
        make_readout(irreps, readout_hidden, last=t == last)
        for t, irreps in enumerate(layer_irreps)
    ]
