"""The training fast paths compute the same numbers as the paths they replace.

A training step differentiates the loss (energies, forces and stress) with respect to the
weights, through the forces: every fast path must give the same loss and the same gradients
as the reference computation, to floating-point rounding (float64 here).
"""

from __future__ import annotations

import pytest
import torch
from ase.build import bulk

from ase_equi import MaceModel, ModelConfig
from ase_equi.graph import atoms_to_graph, batch_graphs
from ase_equi.model.gradients import energy_forces_stress


def _model() -> MaceModel:
    torch.manual_seed(0)
    config = ModelConfig(
        elements=(13, 29),
        reference_energies=(0.1, 0.2),
        channels=8,
        max_ell=2,
        max_L=1,
        correlation=3,
        radial_mlp=(16,),
        r_max=4.0,
    )
    return MaceModel(config).double()


def _graph(model: MaceModel):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.numbers[::3] = 13
    atoms.rattle(0.05, seed=1)
    return batch_graphs([atoms_to_graph(atoms, model.config.elements, 4.0, dtype=torch.float64)])


def _loss_and_gradients(model: MaceModel, graph) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A loss on energy, forces and stress, and its gradient with respect to every weight."""
    out = energy_forces_stress(model, graph, forces=True, stress=True, training=True)
    loss = out["energy"].sum() ** 2 + out["forces"].pow(2).sum() + out["stress"].pow(2).sum()
    params = [p for p in model.parameters() if p.requires_grad]
    return loss, list(torch.autograd.grad(loss, params, allow_unused=True))


def test_channels_last_tensor_product_gives_the_eval_path_loss_and_gradients():
    """In training mode the tensor product runs with the channels innermost; in eval mode
    (what the calculator uses, tested against per-edge e3nn products) it does not."""
    model = _model()
    graph = _graph(model)
    loss_train, grads_train = _loss_and_gradients(model.train(), graph)
    loss_eval, grads_eval = _loss_and_gradients(model.eval(), graph)
    assert loss_train.item() == pytest.approx(loss_eval.item(), rel=1e-12)
    for got, want in zip(grads_train, grads_eval, strict=True):
        assert (got is None) == (want is None)
        if want is not None:
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def _mixed_frames() -> list:
    """Two labelled bulk cells (stress labels) and a cluster without a cell, EMT labels."""
    from ase.calculators.emt import EMT

    from ase_equi.data import Frame

    frames = []
    for k, atoms in enumerate(
        [
            bulk("Cu", "fcc", a=3.6, cubic=True),
            bulk("Al", "fcc", a=4.05, cubic=True),
            bulk("Cu", "fcc", a=3.6, cubic=True)[:3],
        ]
    ):
        atoms.rattle(0.05, seed=k)
        if k == 2:
            atoms.pbc, atoms.cell = False, [0.0, 0.0, 0.0]
        atoms.calc = EMT()
        stress = atoms.get_stress() if k < 2 else None
        frames.append(
            Frame(
                atoms.copy(),
                float(atoms.get_potential_energy()),
                atoms.get_forces(),
                stress,
                index=k,
            )
        )
    return frames


def test_one_training_pass_gives_the_two_pass_loss_and_gradients():
    """A training batch mixing cells (stress labels) and a cluster: one pass with the cluster's
    stress masked equals a stress pass over the cells plus a pass over the cluster."""
    from ase_equi.training.evaluation import LabelledSet
    from ase_equi.training.loss import LossWeights, weighted_loss

    model = _model().train()
    data = LabelledSet.for_model(_mixed_frames(), model)
    weights = LossWeights(energy=10.0, forces=100.0, stress=1000.0)
    params = [p for p in model.parameters() if p.requires_grad]
    ids = [0, 2, 1]
    assert len(data.stress_groups(ids, 1.0)) == 2  # the reference: two passes
    assert len(data.stress_groups(ids, 1.0, one_pass=True)) == 1

    one = weighted_loss(data.error_sums(model, ids, training=True), weights)
    grads_one = torch.autograd.grad(one, params, allow_unused=True)
    parts = [
        _sums_of_pass(data, model, group, with_stress)
        for group, with_stress in data.stress_groups(ids, 1.0)
    ]
    two_sums = {q: (sum(p[q][0] for p in parts), sum(p[q][1] for p in parts)) for q in parts[0]}
    two = weighted_loss(two_sums, weights)
    grads_two = torch.autograd.grad(two, params, allow_unused=True)
    assert torch.isfinite(one)
    assert one.item() == pytest.approx(two.item(), rel=1e-12)
    for got, want in zip(grads_one, grads_two, strict=True):
        if want is not None:
            assert torch.isfinite(got).all()
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def _sums_of_pass(data, model, group, with_stress):
    """Squared-error sums of one forward pass over ``group`` (stress only if ``with_stress``)."""
    from ase_equi.training.loss import squared_error_sums

    batch = data.batch(group)
    pred = energy_forces_stress(model, batch.graph, stress=with_stress, training=True)
    return squared_error_sums(pred, batch)
