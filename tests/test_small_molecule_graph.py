"""HostGraph keeps what depends only on the atomic numbers or the edges between MD steps.

Every graph it returns must equal a fresh :func:`atoms_to_graph` build of the same atoms (same
tensors, and a layout and element groups equal to those the model would build), whether the
kept parts were reused or rebuilt after the numbers or the edges changed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule

from ase_equi.graph.build import HostGraph, atoms_to_graph
from ase_equi.graph.layout import ElementGroups, NeighbourLayout
from ase_equi.neighbours import VerletNeighbourList

ELEMENTS = (1, 6, 8)


def assert_same_graph(graph, atoms, r_max):
    fresh_list = VerletNeighbourList(r_max, skin=0.0).update(atoms)  # canonical edge order
    fresh = atoms_to_graph(atoms, ELEMENTS, r_max, dtype=torch.float64, neighbours=fresh_list)
    for name in ("positions", "cell", "atomic_numbers", "element_index", "senders", "receivers"):
        torch.testing.assert_close(getattr(graph, name), getattr(fresh, name), rtol=0, atol=0)
    torch.testing.assert_close(graph.shifts, fresh.shifts, rtol=0, atol=0)
    assert graph.volumes == fresh.volumes
    layout = NeighbourLayout(fresh.senders, fresh.receivers, len(atoms))
    assert graph.layout.max_neighbours == layout.max_neighbours
    assert torch.equal(graph.layout.slots, layout.slots)
    assert torch.equal(graph.layout.padded_senders, layout.padded_senders)
    groups = ElementGroups(fresh.element_index)
    assert graph.groups.present == groups.present
    assert [n.tolist() for n in graph.groups.nodes] == [n.tolist() for n in groups.nodes]


def test_host_graph_reuses_and_rebuilds_what_it_keeps():
    atoms = molecule("CH3CH2OH")
    source = HostGraph(ELEMENTS, 2.0, 0.5, dtype=torch.float64, device="cpu")
    first = source.update(atoms)
    assert_same_graph(first, atoms, 2.0)
    atoms.positions[0] += 0.01  # same edges within 2 Å: layout and groups kept
    second = source.update(atoms)
    assert_same_graph(second, atoms, 2.0)
    assert second.layout is first.layout and second.groups is first.groups
    atoms.positions[0] += np.array([3.0, 0.0, 0.0])  # an H pulled away: other edges
    third = source.update(atoms)
    assert_same_graph(third, atoms, 2.0)
    assert third.layout is not first.layout and third.groups is first.groups
    atoms.numbers[1] = 8  # the carbon becomes an oxygen: other element groups
    fourth = source.update(atoms)
    assert_same_graph(fourth, atoms, 2.0)
    assert fourth.groups is not first.groups


def test_like_copies_every_setting_with_its_own_list():
    """``HostGraph.like``: the settings it was made with (cutoff, skin, dtype, device, model
    name, memory bound) and a Verlet list of its own."""
    source = HostGraph(
        ELEMENTS, 2.5, 0.3, dtype=torch.float32, device="cpu", model_name="m", max_chunk_bytes=4096
    )
    other = HostGraph.like(source)
    assert other.neighbours is not source.neighbours
    assert (other.elements, other.r_max, other.neighbours.skin) == (ELEMENTS, 2.5, 0.3)
    assert (other.dtype, other.device, other.model_name) == (
        torch.float32,
        torch.device("cpu"),
        "m",
    )
    graph = other.update(molecule("CH3CH2OH"))
    assert graph.positions.dtype == torch.float32 and graph.max_chunk_bytes == 4096
    with pytest.raises(ValueError, match="element N .* is not in m"):
        other.update(molecule("NH3"))
