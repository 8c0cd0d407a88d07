"""Batched evaluation with receivers padded bucket by bucket of in-degree (``DegreeBuckets``):
every edge in exactly one slot, the fewest padded rows, and the model's numbers unchanged."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from conftest import tiny_config

from ase_equi.batched import graphs_of, with_degree_buckets
from ase_equi.evaluate import evaluate
from ase_equi.graph.build import batch_graphs
from ase_equi.graph.layout import DegreeBuckets, NeighbourLayout
from ase_equi.io.model_file import LoadedModel
from ase_equi.model.gradients import energy_forces_stress
from ase_equi.model.mace import MaceModel


def _mixed_batch() -> list[Atoms]:
    """Bulk, a slab in a box, a molecule and a lone atom: in-degrees from 0 to the bulk's."""
    cell = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    cell.rattle(0.05, seed=1)
    slab = fcc111("Al", size=(2, 2, 2), vacuum=4.0)
    slab.rattle(0.05, seed=2)
    cluster = molecule("CH4")  # elements swapped for the model's
    cluster.numbers = [13, 29, 29, 13, 29]
    cluster.positions *= 2.2
    return [cell, slab, cluster, Atoms("Cu", [[0.0, 0.0, 0.0]])]


def _random_graph(seed: int, n: int = 12, e: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    senders = torch.randint(0, n, (e,), generator=g)
    receivers = torch.randint(0, n - 2, (e,), generator=g)  # two nodes receive nothing
    return senders, receivers


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_edge_lands_in_one_slot_of_its_receivers_bucket(seed):
    senders, receivers = _random_graph(seed)
    n = 12
    buckets = DegreeBuckets(senders, receivers, n, rows_per_bucket=0)
    values = torch.arange(1.0, receivers.shape[0] + 1)  # edge e carries e + 1, empty slots 0
    padded = buckets.pad(values)
    assert padded.shape == (buckets.rows,)
    assert sorted(padded[padded > 0].tolist()) == values.tolist()  # each edge exactly once
    degree = torch.bincount(receivers, minlength=n)
    seen = []
    for part, first, stop in buckets.parts:
        k = part.max_neighbours
        rows = padded[first:stop].reshape(part.num_nodes, k)
        nodes = buckets.order[len(seen) : len(seen) + part.num_nodes]
        seen += nodes.tolist()
        for node, row in zip(nodes.tolist(), rows, strict=True):
            edges = (row[row > 0] - 1).long()
            assert (receivers[edges] == node).all()  # the slots of a node hold its own edges
            assert len(edges) == degree[node]  # ... all of them
        senders_b = part.padded_senders.reshape(part.num_nodes, k)
        filled = rows > 0
        assert torch.equal(senders_b[filled], senders[(rows[filled] - 1).long()])
    assert sorted(seen) == list(range(n))
    # unsort puts per-receiver values in bucket order back in node order
    assert torch.equal(buckets.unsort(buckets.order.double()), torch.arange(n).double())


@pytest.mark.parametrize("max_buckets", [1, 2, 3])
def test_bucket_cuts_minimise_padded_rows(max_buckets):
    """The cuts against every way of splitting the sorted degrees into ≤ max_buckets runs."""
    senders, receivers = _random_graph(5, n=10, e=30)
    penalty = 3
    buckets = DegreeBuckets(
        senders, receivers, 10, max_buckets=max_buckets, rows_per_bucket=penalty
    )
    degrees = sorted(torch.bincount(receivers, minlength=10).tolist())

    def cost(cuts):
        bounds = [0, *cuts, len(degrees)]
        runs = list(itertools.pairwise(bounds))
        return sum((b - a) * degrees[b - 1] + penalty for a, b in runs)

    best = min(
        cost(cuts)
        for r in range(max_buckets)
        for cuts in itertools.combinations(range(1, len(degrees)), r)
    )
    got = sum(p.num_nodes * p.max_neighbours + penalty for p, _, _ in buckets.parts)
    assert got == best
    assert len(buckets.parts) <= max_buckets


def _tiny(**overrides) -> LoadedModel:
    torch.manual_seed(7)
    config = tiny_config(**overrides)
    return LoadedModel(MaceModel(config).double().eval(), config)


@pytest.mark.parametrize("density", [False, True])
def test_bucketed_batch_gives_the_numbers_of_one_padding(density):
    """Energies, forces and stress of a mixed batch, several buckets against one padding."""
    loaded = _tiny(density_normalisation=density)
    graphs = [g for g in graphs_of(_mixed_batch(), loaded) if g is not None]
    joined = batch_graphs(graphs)
    bucketed = with_degree_buckets(joined)
    forced = DegreeBuckets(  # one bucket per distinct in-degree
        joined.senders, joined.receivers, joined.num_atoms, max_buckets=64, rows_per_bucket=0
    )
    assert len(forced.parts) >= 3 and forced.parts[0][0].max_neighbours == 0  # the lone atom
    plain = energy_forces_stress(loaded.model, joined, stress=True, flat_cells="nan")
    assert joined.layout is None  # the model pads every receiver to the batch's largest degree
    for layout in (bucketed.layout, forced):
        graph = type(joined)(**{**vars(bucketed), "layout": layout})
        out = energy_forces_stress(loaded.model, graph, stress=True, flat_cells="nan")
        for key in ("node_energies", "forces"):
            torch.testing.assert_close(out[key], plain[key], atol=1e-12, rtol=0)
        torch.testing.assert_close(
            out["stress"], plain["stress"], atol=1e-12, rtol=0, equal_nan=True
        )
    assert plain["forces"].abs().max() > 1e-3  # not trivially zero


def test_evaluate_pads_each_batch_by_degree(loaded_model, monkeypatch):
    import ase_equi.batched as batched

    layouts = []
    original = batched.energy_forces_stress

    def spy(model, graph, **kwargs):
        layouts.append(type(graph.layout))
        return original(model, graph, **kwargs)

    monkeypatch.setattr(batched, "energy_forces_stress", spy)
    evaluate(_mixed_batch(), loaded_model, batch_size=4, verbose=False)
    assert layouts == [DegreeBuckets]


def test_buckets_refuse_chunks_of_receivers(loaded_model):
    graphs = graphs_of(_mixed_batch()[:2], loaded_model)
    graph = with_degree_buckets(batch_graphs([g for g in graphs if g is not None]))
    graph.max_chunk_bytes = 1  # would split the receivers into chunks
    with pytest.raises(ValueError, match="DegreeBuckets layout is evaluated without chunks"):
        energy_forces_stress(loaded_model.model, graph)
    assert isinstance(graph.layout, NeighbourLayout)
    np.testing.assert_equal(graph.layout.num_nodes, graph.num_atoms)
