"""Committees in model/: the batched (vmapped) committee and the shallow ensemble against their
members evaluated one by one with the plain model code."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import ELEMENTS, R_MAX, make_structure, tiny_config

from ase_equi import MaceModel
from ase_equi.graph import atoms_to_graph
from ase_equi.model.committee import Committee, member_derivatives, member_spread
from ase_equi.model.gradients import energy_forces_stress
from ase_equi.model.shallow_ensemble import ShallowEnsemble

TOL = 1e-10


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal to ``TOL`` (eV, eV/Å, eV/Å³) in float64."""
    np.testing.assert_allclose(actual.detach(), expected.detach(), atol=TOL, rtol=0)


@pytest.fixture(scope="module")
def members() -> list[MaceModel]:
    """Three tiny models: other seeds, and other E0 and shifts (which may differ in a committee)."""
    out = []
    for seed in range(3):
        torch.manual_seed(100 + seed)
        cfg = tiny_config(reference_energies=(-0.3 - 0.01 * seed, -0.5), shift=0.02 * seed)
        out.append(MaceModel(cfg).double().eval().requires_grad_(False))
    return out


def graph_of(name: str):
    atoms = make_structure(name)
    return atoms_to_graph(atoms, ELEMENTS, R_MAX, dtype=torch.float64)


@pytest.mark.parametrize("name", ["bulk", "small_cell"])
def test_batched_committee_equals_members_one_by_one(members, name):
    graph = graph_of(name)
    batched = member_derivatives(Committee(members), graph, forces=True, stress=True)
    for m, member in enumerate(members):
        alone = energy_forces_stress(member, graph, forces=True, stress=True)
        close(batched["member_energy"][m], alone["energy"])
        close(batched["member_node_energies"][m], alone["node_energies"])
        close(batched["member_forces"][m], alone["forces"])
        close(batched["member_stress"][m], alone["stress"])


def test_committee_mean_is_the_members_mean(members):
    """The committee as one model (what the calculator uses without uncertainty): its energy,
    forces and stress are the mean of the members' own."""
    graph = graph_of("bulk")
    mean = energy_forces_stress(Committee(members), graph, forces=True, stress=True)
    alone = [energy_forces_stress(m, graph, forces=True, stress=True) for m in members]
    for key in ("energy", "forces", "stress"):
        expected = torch.stack([a[key] for a in alone]).mean(0)
        close(mean[key], expected)


def test_member_spread_divides_by_m_minus_1():
    values = torch.tensor([[1.0, 4.0], [2.0, 0.0], [6.0, 2.0]], dtype=torch.float64)
    mean, std = member_spread(values)
    np.testing.assert_allclose(std, np.std(values.numpy(), axis=0, ddof=1), rtol=1e-14)
    assert not np.allclose(std, np.std(values.numpy(), axis=0, ddof=0))
    np.testing.assert_allclose(mean, [3.0, 2.0])


def test_shallow_ensemble_members_are_models_with_their_own_readout(members):
    """Member k of a shallow ensemble equals a plain model whose last readout is readout k."""
    torch.manual_seed(7)
    ensemble = ShallowEnsemble(copy.deepcopy(members[0]), 3).double()
    graph = graph_of("bulk")
    out = member_derivatives(ensemble, graph, forces=True, stress=True)
    readouts = [ensemble.trunk.readouts[-1], *ensemble.member_readouts]
    for k, readout in enumerate(readouts):
        plain = copy.deepcopy(ensemble.trunk)
        plain.readouts[-1] = copy.deepcopy(readout)
        alone = energy_forces_stress(plain, graph, forces=True, stress=True)
        close(out["member_energy"][k], alone["energy"])
        close(out["member_forces"][k], alone["forces"])
        close(out["member_stress"][k], alone["stress"])
    assert float(out["member_energy"].std(0)) > 1e-6  # the members do differ


def test_committee_refuses_members_of_other_architectures(members):
    other = MaceModel(tiny_config(r_max=R_MAX + 0.5)).double()
    with pytest.raises(ValueError, match=r"member 1 .*r_max: 3.5 vs 4.0"):
        Committee([members[0], other])
    with pytest.raises(ValueError, match="at least 2"):
        Committee(members[:1])


def test_committee_restacks_after_a_dtype_change(members):
    committee = Committee([copy.deepcopy(m) for m in members[:2]])
    graph = graph_of("small_cell")
    committee(
        graph.element_index,
        torch.zeros(0, 3, dtype=torch.float64),
        graph.senders[:0],
        graph.receivers[:0],
        graph.batch,
        1,
    )
    committee.float()
    out = energy_forces_stress(
        committee,
        atoms_to_graph(make_structure("small_cell"), ELEMENTS, R_MAX, dtype=torch.float32),
    )
    assert out["forces"].dtype == torch.float32


@pytest.mark.parametrize("kind", ["full", "shallow"])
def test_mean_derivatives_alone_equal_the_mean_of_the_members(members, kind):
    """``each=False`` (energy spread only): the mean forces and stress from one backward pass
    equal the mean of every member's own."""
    torch.manual_seed(8)
    model = Committee(members) if kind == "full" else ShallowEnsemble(copy.deepcopy(members[0]), 3)
    graph = graph_of("small_cell")
    each = member_derivatives(model.double(), graph, forces=True, stress=True)
    mean = member_derivatives(model, graph, forces=True, stress=True, each=False)
    assert "member_forces" not in mean
    close(mean["forces"], each["member_forces"].mean(0))
    close(mean["stress"], each["member_stress"].mean(0))
    close(mean["member_energy"], each["member_energy"])
