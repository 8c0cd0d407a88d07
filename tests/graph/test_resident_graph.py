"""The device-resident graph (GPU path, exercised on CPU): same physics, no host reads in a step."""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import pytest
import torch
from conftest import STRUCTURES, make_structure

from ase_equi import EquivariantCalculator
from ase_equi.graph import HostGraph, ResidentGraph
from ase_equi.model.gradients import energy_forces_stress


@pytest.mark.parametrize("device_list", [False, True], ids=["host-list", "torch-list"])
@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_resident_graph_gives_the_filtered_results(loaded_model, name, device_list):
    """Unfiltered skin edges have zero weight: energies, forces, stress as with the filtered
    graph, over steps that reuse the graph and steps that rebuild it; with the neighbour list
    from matscipy on the host or from torch (what a GPU uses)."""
    atoms = make_structure(name)
    filtered = EquivariantCalculator(loaded_model, dtype="float64", skin=0.8)
    resident = EquivariantCalculator(loaded_model, dtype="float64", skin=0.8, resident_graph=True)
    assert isinstance(resident.graph_source, ResidentGraph)
    assert isinstance(filtered.graph_source, HostGraph)
    config = loaded_model.config
    resident.graph_source = ResidentGraph(
        config.elements,
        config.r_max,
        0.8,
        dtype=torch.float64,
        device="cpu",
        device_list=device_list,
    )
    stress = atoms.cell.rank == 3
    rng = np.random.default_rng(5)
    extra_edges = 0
    for step in range(8):
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        results = []
        for calc in (filtered, resident):
            atoms.calc = calc
            got = {
                "energy": atoms.get_potential_energy(),
                "energies": atoms.get_potential_energies(),
                "forces": atoms.get_forces(),
            }
            if stress:
                got["stress"] = atoms.get_stress()
            results.append(got)
        for key, value in results[0].items():
            np.testing.assert_allclose(
                results[1][key], value, rtol=1e-10, atol=1e-10, err_msg=f"{name} step {step} {key}"
            )
        graph = resident.graph_source.graph
        kept = filtered.graph_source.neighbours.update(atoms).senders.shape[0]
        extra_edges = max(extra_edges, graph.senders.shape[0] - kept)
    source = resident.graph_source
    assert source.uploads < source.neighbours.calls  # the graph was reused
    if len(atoms) > 1 or atoms.cell.rank == 3:
        assert extra_edges > 0  # the skin edges really were in the graph, with zero weight


@contextlib.contextmanager
def no_host_reads():
    """Fail on every Python-level read of a tensor value to the host (on a GPU, each would
    wait for the device): ``item``, ``tolist``, ``numpy``, truth values and conversions to
    Python numbers, and the ops whose output size depends on the data (``unique``,
    ``nonzero``)."""

    def refuse(name):
        def method(*args, **kwargs):
            raise AssertionError(f"host read in the step: {name}")

        return method

    patched = {
        (torch.Tensor, name): refuse(f"Tensor.{name}")
        for name in ("item", "tolist", "numpy", "__bool__", "__int__", "__float__", "nonzero")
    }
    patched.update({(torch, name): refuse(f"torch.{name}") for name in ("unique", "nonzero")})
    saved = {key: getattr(*key) for key in patched}
    try:
        for (owner, name), value in patched.items():
            setattr(owner, name, value)
        yield
    finally:
        for (owner, name), value in saved.items():
            setattr(owner, name, value)


def test_a_resident_step_reads_nothing_back(loaded_model):
    atoms = make_structure("bulk")
    resident = ResidentGraph(
        loaded_model.config.elements,
        loaded_model.config.r_max,
        0.8,
        dtype=torch.float64,
        device="cpu",
    )
    graph = resident.update(atoms)  # a build may read sizes back
    atoms.positions += 0.01
    graph = resident.update(atoms)
    assert resident.uploads == 1
    with no_host_reads():
        out = energy_forces_stress(loaded_model.model, graph, forces=True, stress=True)
    assert torch.isfinite(out["forces"]).all() and torch.isfinite(out["stress"]).all()

    # the guard does catch the reads of the ordinary path (layout and groups built per call)
    with pytest.raises(AssertionError, match="host read"), no_host_reads():
        ordinary = dataclasses.replace(graph, layout=None, groups=None, volumes=None)
        energy_forces_stress(loaded_model.model, ordinary, forces=True, stress=True)


def test_resident_graph_errors(loaded_model):
    atoms = make_structure("bulk")
    calc = EquivariantCalculator(loaded_model, dtype="float64", resident_graph=True)
    atoms.calc = calc
    atoms.get_forces()
    atoms.positions[1] = np.nan
    with pytest.raises(ValueError, match="(?i)nan|finite"):
        atoms.get_forces()
    with pytest.raises(ValueError, match="skin"):
        ResidentGraph((29,), 3.5, 0.0, dtype=torch.float64, device="cpu")
