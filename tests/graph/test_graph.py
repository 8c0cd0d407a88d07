"""What a graph carries from neighbours/ to model/ (who may import whom is checked for every
stage in ``tests/test_architecture.py``).

Also the calculator's one graph source: one Verlet list, explicit position checks, the chunk
bound reaching the model on the graph.
"""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest
import torch
from ase.build import molecule
from conftest import make_structure

from ase_equi import EquivariantCalculator
from ase_equi.graph import Graph, ResidentGraph, atoms_to_graph, batch_graphs
from ase_equi.model.gradients import energy_forces_stress
from ase_equi.neighbours import VerletNeighbourList


def test_energy_forces_stress_takes_a_graph_and_what_to_differentiate():
    parameters = inspect.signature(energy_forces_stress).parameters
    assert list(parameters) == ["model", "graph", "forces", "stress", "training", "flat_cells"]
    keyword_only = [p for p, v in parameters.items() if v.kind is v.KEYWORD_ONLY]
    assert keyword_only == ["forces", "stress", "training", "flat_cells"]


def _verlet_lists(calc: EquivariantCalculator) -> set[int]:
    """ids of the Verlet lists the calculator holds, directly or one object down."""
    found = set()
    for value in vars(calc).values():
        for inner in [value, *getattr(value, "__dict__", {}).values()]:
            if isinstance(inner, VerletNeighbourList):
                found.add(id(inner))
    return found


@pytest.mark.parametrize("resident", [False, True], ids=["host", "resident"])
def test_one_verlet_list_per_calculator(loaded_model, resident):
    atoms = make_structure("bulk")
    calc = EquivariantCalculator(loaded_model, skin=0.5, resident_graph=resident)
    atoms.calc = calc
    atoms.get_forces()
    assert len(_verlet_lists(calc)) == 1
    calc.set(skin=0.3)
    (only,) = _verlet_lists(calc)
    verlet = calc.graph_source.neighbours
    assert id(verlet) == only and verlet.skin == 0.3
    for step in range(3):  # the one list is the one asked at every geometry
        atoms.positions[0, 0] += 0.01
        atoms.get_forces()
        assert verlet.calls == step + 1


@pytest.mark.parametrize("resident", [False, True], ids=["host", "resident"])
def test_non_finite_position_named_after_a_good_step(loaded_model, resident):
    atoms = make_structure("bulk")
    atoms.calc = EquivariantCalculator(loaded_model, skin=0.5, resident_graph=resident)
    atoms.get_forces()
    atoms.positions[2] = [0.0, np.inf, 0.0]
    with pytest.raises(ValueError, match="positions contain NaN or infinity at atom 2"):
        atoms.get_forces()


def test_chunk_bound_reaches_the_model_on_the_graph(loaded_model):
    atoms = make_structure("bulk")
    calc = EquivariantCalculator(loaded_model, chunk_mib=64)
    seen = []
    hook = calc.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs.get("max_chunk_bytes")), with_kwargs=True
    )
    try:
        atoms.calc = calc
        atoms.get_potential_energy()
    finally:
        hook.remove()
    assert seen == [64 * 2**20]


def test_derivatives_asked_once_stay_asked(loaded_model):
    atoms = make_structure("bulk")
    atoms.calc = calc = EquivariantCalculator(loaded_model)
    atoms.get_potential_energy()
    assert calc.derivatives == set()
    atoms.get_forces()
    assert calc.derivatives == {"forces"}
    atoms.positions[0, 0] += 0.01
    atoms.get_potential_energy()  # forces come with it: one model call per geometry in MD
    assert "forces" in calc.results


def _water_graph() -> Graph:
    return atoms_to_graph(molecule("H2O"), (1, 8), 3.0)


def test_stress_of_a_cell_without_volume_is_refused_with_or_without_host_volumes(loaded_model):
    model = loaded_model.model
    config = loaded_model.config
    graph = atoms_to_graph(make_structure("molecule"), config.elements, config.r_max)
    assert graph.volumes == (0.0,)
    for g in (graph, dataclasses.replace(graph, volumes=None)):
        with pytest.raises(ValueError, match="zero volume"):
            energy_forces_stress(model, g, forces=True, stress=True)


def test_batches_and_moves_keep_what_a_graph_carries():
    water, box = _water_graph(), _water_graph()
    box = dataclasses.replace(
        box, cell=8.0 * torch.eye(3, dtype=box.cell.dtype)[None], volumes=(512.0,)
    )
    joined = batch_graphs([water, box])
    assert joined.volumes == (0.0, 512.0) and joined.num_graphs == 2
    assert batch_graphs([water, dataclasses.replace(box, volumes=None)]).volumes is None
    resident = ResidentGraph((1, 8), 3.0, 0.5, dtype=torch.float64, device="cpu")
    kept = resident.update(molecule("H2O"))
    assert kept.layout is not None and kept.groups is not None
    moved = kept.to("cpu")
    assert moved.layout is None and moved.groups is None and moved.volumes == kept.volumes
