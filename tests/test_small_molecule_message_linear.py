"""The interaction's linear map on the message classes equals e3nn's Linear on the messages.

:class:`~ase_equi.model.message_linear.MessageLinear` must give what the e3nn layer gives on
the tensor product's output in e3nn's layout (the reference implementation), rearranged into
channels; a whole model must give the same energies and forces with it as with e3nn's path.
"""

from __future__ import annotations

import pytest
import torch
from ase.build import molecule

from ase_equi import MaceModel, ModelConfig
from ase_equi.graph.build import atoms_to_graph
from ase_equi.model.gradients import energy_forces_stress
from ase_equi.model.interaction import InteractionBlock, irreps_to_channels


@pytest.mark.parametrize("node_irreps", ["4x0e", "4x0e+4x1o"])
def test_message_linear_equals_e3nn_linear(node_irreps):
    torch.manual_seed(0)
    block = InteractionBlock(
        node_irreps, "0e+1o+2e+3o", 8, "4x0e+4x1o+4x2e+4x3o", node_irreps, 2, 3.0, (8,)
    ).double()
    assert block.message_linear is not None
    tp = block.conv_tp
    classes = [
        torch.randn(5, len(paths) * tp.channels, d3, dtype=torch.float64)
        for piece in tp.classes
        for _, d3, paths in piece
    ]
    got = block.message_linear(classes, block.linear.weight)
    reference = block.linear(tp.to_irreps(tp.pieces_of(classes)))
    expected = irreps_to_channels(reference, block.target_irreps)
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("density", [False, True])
def test_model_gives_the_same_forces_without_the_fused_map(density):
    torch.manual_seed(1)
    config = ModelConfig(
        elements=(1, 6, 8),
        reference_energies=(-1.0, -2.0, -3.0),
        channels=8,
        max_L=1,
        max_ell=3,
        correlation=3,
        radial_mlp=(16,),
        r_max=4.0,
        density_normalisation=density,
    )
    model = MaceModel(config).double()
    graph = atoms_to_graph(molecule("CH3CH2OH"), config.elements, config.r_max)
    fused = energy_forces_stress(model, graph)
    for block in model.interactions:
        assert block.message_linear is not None or not block.residual
        block.message_linear = None
    plain = energy_forces_stress(model, graph)
    for key in ("node_energies", "forces"):
        torch.testing.assert_close(fused[key], plain[key], rtol=1e-12, atol=1e-12)
