"""The MACE-MH blocks: gate, residual non-linear interaction, float32 Wigner symbols, config.

References are independent of the code under test: e3nn's ``normalize2mom``, ``nn.Gate`` and
``TensorProduct`` (built in float32, as a float32 MACE file's are), rotations and finite
differences of a whole model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.fd import calculate_numerical_forces
from e3nn import nn, o3
from e3nn.math import normalize2mom
from helpers import random_rotation, rotated

from ase_equi import EquivariantCalculator, MaceModel, ModelConfig
from ase_equi.graph.layout import NeighbourLayout
from ase_equi.io.model_file import LoadedModel
from ase_equi.model.gated_nonlinearity import ACTIVATION_CONSTANTS, GatedNonLinearity
from ase_equi.model.interaction import channelwise_instructions
from ase_equi.model.tensor_product import ChannelwiseTensorProduct


@pytest.mark.parametrize(
    ("name", "function"), [("silu", torch.nn.functional.silu), ("sigmoid", torch.sigmoid)]
)
def test_activation_constants_are_e3nns(name, function):
    assert ACTIVATION_CONSTANTS[name] == normalize2mom(function).cst


def test_gate_equals_e3nn_gate():
    irreps = o3.Irreps("4x0e+3x1o+2x2e")
    ours = GatedNonLinearity(irreps)
    gated = o3.Irreps("3x1o+2x2e")
    reference = nn.Gate(
        "4x0e", [torch.nn.functional.silu], "5x0e", [torch.sigmoid], gated
    )  # input: scalars, gates, gated, sorted and simplified as ours
    assert ours.irreps_in == reference.irreps_in.simplify()
    x = torch.randn(
        7, ours.irreps_in.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=1e-14)


def test_float32_wigner_symbols_equal_a_float32_e3nn_product():
    nodes, edges = o3.Irreps("3x0e+3x1o"), o3.Irreps.spherical_harmonics(3)
    mid, instructions = channelwise_instructions(nodes, edges, o3.Irreps("3x0e+3x1o+3x2e+3x3o"))
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:  # e3nn builds its symbols in the default dtype: float32, as a float32 MACE file has
        rounded = o3.TensorProduct(
            nodes, edges, mid, instructions, shared_weights=False, internal_weights=False
        )
    finally:
        torch.set_default_dtype(default)
    rounded = rounded.double()
    exact = ChannelwiseTensorProduct(nodes, edges, mid, instructions).double()
    ours = ChannelwiseTensorProduct(nodes, edges, mid, instructions, wigner_float32=True).double()
    g = torch.Generator().manual_seed(2)
    senders, receivers = torch.tensor([1, 2, 0, 0]), torch.tensor([0, 0, 1, 2])
    layout = NeighbourLayout(senders, receivers, 3)
    h = torch.randn(3, nodes.dim, dtype=torch.float64, generator=g)
    y = torch.randn(4, edges.dim, dtype=torch.float64, generator=g)
    w = torch.randn(4, ours.weight_numel, dtype=torch.float64, generator=g)
    expected = torch.zeros(3, mid.dim, dtype=torch.float64).index_add(
        0, receivers, rounded(h[senders], y, w)
    )

    def summed(tp):
        k = layout.max_neighbours
        wp = layout.pad(w).reshape(3, k, -1, tp.channels).index_select(2, tp.piece_paths)
        pieces = tp.receiver_messages(h, layout.pad(y), wp.permute(0, 2, 3, 1), layout)
        return tp.to_irreps(pieces)

    torch.testing.assert_close(summed(ours), expected, rtol=0, atol=1e-14)
    assert (summed(exact) - expected).abs().max() > 1e-9  # the rounding is visible


MH_OPTIONS = dict(
    nonlinear_interaction=True,
    edge_channels=3,
    edge_irreps_first=True,
    agnostic_product=True,
    apply_cutoff=False,
    pair_repulsion=True,
    distance_transform="Agnesi",
)


def test_config_keeps_mh_options_and_leaves_out_defaults():
    cfg = ModelConfig(elements=(1, 8), reference_energies=(-1.0, -2.0), **MH_OPTIONS)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    plain = ModelConfig(elements=(1, 8), reference_energies=(-1.0, -2.0)).to_dict()
    assert not {"nonlinear_interaction", "edge_channels", "apply_cutoff"} & set(plain)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"apply_cutoff": False}, "apply_cutoff"),
        ({"edge_channels": 4}, "edge_channels"),
        ({"nonlinear_interaction": True, "edge_irreps_first": True}, "edge_irreps_first"),
        ({"nonlinear_interaction": True, "density_normalisation": True}, "density_normalisation"),
    ],
)
def test_config_refuses_options_without_their_block(options, named):
    with pytest.raises(ValueError, match=named):
        ModelConfig(elements=(1,), reference_energies=(-1.0,), **options)


@pytest.fixture(scope="module")
def mh_model():
    cfg = ModelConfig(
        elements=(1, 8),
        reference_energies=(-1.0, -2.0),
        channels=4,
        max_L=1,
        max_ell=2,
        correlation=2,
        radial_mlp=(8,),
        r_max=3.5,
        **MH_OPTIONS,
    )
    torch.manual_seed(3)
    model = MaceModel(cfg).double()
    with torch.no_grad():  # away from the initialisation (alpha 20, beta 0, tiny embeddings)
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return LoadedModel(model=model.eval(), config=cfg, card={"name": "mh"}, source="test")


def _water_pair() -> Atoms:
    return Atoms(
        "OH2OH2",
        positions=[
            [0, 0, 0],
            [0.96, 0, 0],
            [-0.24, 0.93, 0],
            [2.8, 0.3, 0.2],
            [3.3, 1.0, 0.5],
            [0.5, 0.2, 0.1],
        ],
    )  # the last H is 0.52 Å from the first O: ZBL range


def test_mh_model_forces_are_minus_the_energy_gradient(mh_model):
    atoms = _water_pair()
    atoms.calc = EquivariantCalculator(mh_model)
    forces = atoms.get_forces()
    numerical = calculate_numerical_forces(atoms, eps=1e-5)
    np.testing.assert_allclose(forces, numerical, atol=1e-7 * max(1.0, np.abs(forces).max()))


def test_mh_model_is_rotation_invariant(mh_model):
    atoms = _water_pair()
    atoms.calc = EquivariantCalculator(mh_model)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    rotation = random_rotation(4)
    turned = rotated(atoms, rotation)
    turned.calc = EquivariantCalculator(mh_model)
    assert turned.get_potential_energy() == pytest.approx(energy, abs=1e-10)
    np.testing.assert_allclose(turned.get_forces(), forces @ rotation.T, atol=1e-10)
