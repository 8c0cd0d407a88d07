"""Evaluation in recomputed chunks of receivers: same numbers, less memory kept for backward."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import make_structure

from ase_equi import EquivariantCalculator
from ase_equi.graph import atoms_to_graph
from ase_equi.model.gradients import energy_forces_stress


def _bulk():
    atoms = make_structure("bulk").repeat((2, 2, 1))  # 16 atoms of two elements
    atoms.rattle(0.05, seed=7)
    return atoms


@pytest.mark.parametrize("chunk_mib", [1e-3, 0.2])  # one receiver per chunk; a few per chunk
def test_chunked_calls_give_the_same_results(loaded_model, chunk_mib):
    atoms = _bulk()
    whole = EquivariantCalculator(loaded_model, dtype="float64", chunk_mib=None)
    chunked = EquivariantCalculator(loaded_model, dtype="float64", chunk_mib=chunk_mib)
    graph = atoms_to_graph(atoms, loaded_model.config.elements, loaded_model.config.r_max)
    k = int(torch.bincount(graph.receivers).max())
    chunk = loaded_model.model.chunk_nodes(len(atoms), k, chunked.max_chunk_bytes, torch.float64)
    assert chunk is not None and 1 <= chunk < len(atoms)  # really chunked
    results = []
    for calc in (whole, chunked):
        atoms.calc = calc
        results.append((atoms.get_potential_energies(), atoms.get_forces(), atoms.get_stress()))
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


def _saved_bytes(model, graph, max_chunk_bytes):
    """Bytes of the distinct tensors autograd keeps for the backward pass of a forces call."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        bounded = dataclasses.replace(graph, max_chunk_bytes=max_chunk_bytes)
        energy_forces_stress(model, bounded, forces=True)
    return sum(storages.values())


def test_chunking_bounds_what_is_kept_for_backward(loaded_model):
    atoms = _bulk().repeat((2, 2, 2))  # 128 atoms
    graph = atoms_to_graph(atoms, loaded_model.config.elements, loaded_model.config.r_max)
    model = loaded_model.model
    whole = _saved_bytes(model, graph, None)
    chunked = _saved_bytes(model, graph, 2**16)
    assert chunked < 0.5 * whole, (chunked, whole)


def test_no_chunks_below_the_threshold(loaded_model):
    model = loaded_model.model
    assert model.chunk_nodes(100, 30, None, torch.float64) is None
    per_node_bound = model.chunk_nodes(2, 30, 1, torch.float64)  # forced: one node a chunk
    assert per_node_bound == 1
    whole = 10**9
    assert model.chunk_nodes(100, 30, whole, torch.float64) is None  # everything fits
