"""The channel-wise tensor product: e3nn's "uvu" product per edge, and the per-receiver
(padded neighbour) contraction the model uses equal to that per-edge product plus a scatter.

The slow per-edge forms live in ``reference_paths.py`` (test-only code).
"""

from __future__ import annotations

import pytest
import torch
from e3nn import o3
from reference_paths import edge_messages, edge_tensor_product, receiver_messages_from_edges

from ase_equi.graph.layout import NeighbourLayout
from ase_equi.model.interaction import channelwise_instructions
from ase_equi.model.tensor_product import ChannelwiseTensorProduct


@pytest.mark.parametrize(
    ("nodes", "max_ell", "target"),
    [
        ("4x0e", 3, "4x0e+4x1o+4x2e+4x3o"),  # first layer
        ("3x0e+3x1o", 2, "3x0e+3x1o+3x2e+3x1e"),  # later layer, several paths per output
    ],
)
def test_edge_product_equals_e3nn_uvu_tensor_product(nodes, max_ell, target):
    """Same numbers as e3nn's ``TensorProduct`` with the same instructions and weight layout
    (the layout MACE files store), an independent implementation of the same product."""
    torch.manual_seed(1)
    nodes, edges = o3.Irreps(nodes), o3.Irreps.spherical_harmonics(max_ell)
    mid, instructions = channelwise_instructions(nodes, edges, o3.Irreps(target))
    tp = ChannelwiseTensorProduct(nodes, edges, mid, instructions).double()
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # e3nn bakes its 3j symbols in the default dtype
    try:
        e3nn_tp = o3.TensorProduct(
            nodes, edges, mid, instructions, shared_weights=False, internal_weights=False
        )
    finally:
        torch.set_default_dtype(default)
    assert e3nn_tp.weight_numel == tp.weight_numel
    n_edges = 11
    h = torch.randn(n_edges, nodes.dim, dtype=torch.float64)
    y = torch.randn(n_edges, edges.dim, dtype=torch.float64)
    w = torch.randn(n_edges, tp.weight_numel, dtype=torch.float64)
    torch.testing.assert_close(
        edge_tensor_product(tp, h, y, w), e3nn_tp(h, y, w), rtol=1e-12, atol=1e-12
    )


def test_receiver_messages_equal_edge_products_summed_per_receiver():
    torch.manual_seed(0)
    nodes = o3.Irreps("4x0e+4x1o")
    edges = o3.Irreps.spherical_harmonics(3)
    target = o3.Irreps("4x0e+4x1o+4x2e+4x3o")
    mid, instructions = channelwise_instructions(nodes, edges, target)
    tp = ChannelwiseTensorProduct(nodes, edges, mid, instructions).double()
    n_nodes, n_edges = 7, 40
    senders = torch.randint(0, n_nodes, (n_edges,))
    receivers = torch.randint(0, n_nodes - 1, (n_edges,))  # the last node receives nothing
    h = torch.randn(n_nodes, nodes.dim, dtype=torch.float64, requires_grad=True)
    y = torch.randn(n_edges, edges.dim, dtype=torch.float64, requires_grad=True)
    w = torch.randn(n_edges, tp.weight_numel, dtype=torch.float64, requires_grad=True)

    per_edge = edge_messages(tp, h, senders, y, w)
    reference = [
        torch.zeros(n_nodes, *p.shape[1:], dtype=p.dtype).index_add(0, receivers, p)
        for p in per_edge
    ]
    layout = NeighbourLayout(senders, receivers, n_nodes)
    assert layout.max_neighbours == int(torch.bincount(receivers).max())
    got = receiver_messages_from_edges(tp, h, y, w, layout)
    for a, b in zip(got, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert all(float(p[-1].detach().abs().max()) == 0.0 for p in got)  # no edges, no message

    # gradients agree too (what forces are made of)
    probe = [torch.randn_like(p) for p in got]

    def projected(pieces):
        return sum((p * q).sum() for p, q in zip(pieces, probe, strict=True))

    g1 = torch.autograd.grad(projected(got), (h, y, w))
    g2 = torch.autograd.grad(projected(reference), (h, y, w))
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_receiver_messages_without_edges():
    nodes, edges = o3.Irreps("2x0e"), o3.Irreps.spherical_harmonics(1)
    mid, instructions = channelwise_instructions(nodes, edges, o3.Irreps("2x0e+2x1o"))
    tp = ChannelwiseTensorProduct(nodes, edges, mid, instructions)
    empty = torch.zeros(0, dtype=torch.long)
    layout = NeighbourLayout(empty, empty, 3)
    out = receiver_messages_from_edges(
        tp, torch.randn(3, 2), torch.zeros(0, 4), torch.zeros(0, tp.weight_numel), layout
    )
    # one piece per node irrep (here 2x0e): 0e ⊗ (0e + 1o) → 0e + 1o, 1 + 3 columns
    assert [tuple(p.shape) for p in out] == [(3, 2, 4)]
    assert all(float(p.abs().sum()) == 0.0 for p in out)


def test_cached_contracted_weights_follow_weight_changes(loaded_model):
    """The calculator's cache of weight×coupling contractions is refreshed when weights change."""
    import copy

    from ase.build import bulk

    from ase_equi import EquivariantCalculator
    from ase_equi.io.model_file import LoadedModel

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.numbers[0] = 13
    model = copy.deepcopy(loaded_model.model)
    calc = EquivariantCalculator(LoadedModel(model, loaded_model.config), skin=0.0)
    atoms.calc = calc
    before = atoms.get_potential_energy()
    with torch.no_grad():
        model.products[0].contractions[0].weights[1].mul_(1.5)  # in place: version bumps
    atoms.rattle(1e-3, seed=1)
    changed = atoms.get_potential_energy()
    fresh = copy.deepcopy(model)  # no cache: computes the contraction from scratch
    for p in fresh.parameters():
        p.requires_grad_(True)
    atoms.calc = EquivariantCalculator(LoadedModel(fresh, loaded_model.config))
    assert changed == pytest.approx(atoms.get_potential_energy(), rel=1e-12, abs=1e-12)
    assert abs(changed - before) > 1e-6


def test_product_precontracts_only_the_elements_present(monkeypatch):
    """A structure of some elements contracts only those elements' product weights (an
    89-element model must not hold 89 elements' tensors for benzene), the least recently used
    leave a bounded cache, and the numbers equal a recomputation for every element."""
    import copy

    from ase.build import bulk
    from conftest import tiny_config

    from ase_equi import EquivariantCalculator, MaceModel
    from ase_equi.io.model_file import LoadedModel
    from ase_equi.model import product

    torch.manual_seed(7)
    elements = (13, 28, 29, 46, 47)  # Al, Ni, Cu, Pd, Ag
    config = tiny_config(elements=elements, reference_energies=(0.0,) * len(elements))
    model = MaceModel(config).to(torch.float64)
    for p in model.parameters():
        p.requires_grad_(False)
    contraction = model.products[0].contractions[0]
    monkeypatch.setattr(product, "CONTRACTED_CACHE_ELEMENTS", 2)

    def energy(symbols: list[str], m: MaceModel) -> float:
        atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
        atoms.set_chemical_symbols(symbols)
        atoms.rattle(0.02, seed=3)
        atoms.calc = EquivariantCalculator(LoadedModel(m, config), skin=0.0)
        return atoms.get_potential_energy()

    def reference(symbols: list[str]) -> float:
        fresh = copy.deepcopy(model)  # trainable: contracted at every call, no cache
        for p in fresh.parameters():
            p.requires_grad_(True)
        return energy(symbols, fresh)

    cached = lambda: list(contraction.__dict__["_contracted_cache"][1])  # noqa: E731
    alcu = ["Al", "Cu", "Cu", "Al"]
    assert energy(alcu, model) == pytest.approx(reference(alcu), rel=1e-12, abs=1e-12)
    assert cached() == [0, 2]  # element indices of Al and Cu only
    ni = ["Ni"] * 4
    assert energy(ni, model) == pytest.approx(reference(ni), rel=1e-12, abs=1e-12)
    assert cached() == [2, 1]  # Al (least recently used) left; the bound is 2
    mixed = ["Ni", "Pd", "Ag", "Al"]  # more elements than the bound: all of them kept
    assert energy(mixed, model) == pytest.approx(reference(mixed), rel=1e-12, abs=1e-12)
    assert sorted(cached()) == [0, 1, 3, 4]
