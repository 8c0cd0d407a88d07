"""Heads that own their last interaction layer (``ModelConfig.head_layers``): the parent's head
keeps the parent's last layer while the new head trains its own copy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk

from ase_equi import EquivariantCalculator
from ase_equi.graph import atoms_to_graph
from ase_equi.io.model_file import read_model_file, save_model
from ase_equi.model.config import ModelConfig
from ase_equi.model.gradients import energy_forces_stress
from ase_equi.model.mace import MaceModel
from ase_equi.training.finetune_defaults import head_lr_scale
from ase_equi.training.multihead import add_head, head_prefixes, learning_head
from ase_equi.training.parent_pull import pull_for_finetune

BASE = dict(
    elements=(13, 29),
    reference_energies=(-0.5, -1.0),
    channels=4,
    max_ell=1,
    correlation=2,
    radial_mlp=(8,),
    r_max=4.0,
)
CONSTANTS = {"reference_energies": np.array([-0.5, -1.0]), "scale": 1.0, "shift": 0.0}


def _atoms():
    atoms = bulk("Cu", cubic=True) * (2, 1, 1)
    atoms.numbers[[1, 4]] = 13
    atoms.rattle(0.1, seed=2)
    return atoms


def _energy_forces(model, atoms):
    graph = atoms_to_graph(atoms, model.config.elements, model.config.r_max)
    out = energy_forces_stress(model, graph)
    return float(out["energy"][0].detach()), out["forces"].detach().numpy()


def _parent(seed=0):
    torch.manual_seed(seed)
    return MaceModel(ModelConfig(**BASE)).double()


def _perturb(params, size, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(size * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def test_config_refuses_head_layers_without_heads_or_beyond_the_layers():
    assert "head_layers" not in ModelConfig(**BASE).to_dict()  # old headers unchanged
    for bad in (dict(head_layers=1), dict(heads=("a", "b"), head_layers=3)):
        with pytest.raises(ValueError, match="head_layers"):
            ModelConfig(**BASE, **bad)
    with pytest.raises(ValueError, match="head_layers"):
        ModelConfig(**BASE, heads=("a", "b"), head_layers=-1)
    cfg = ModelConfig(**BASE, heads=("a", "b"), head_layers=1)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_both_heads_start_as_the_parent_and_the_new_layer_moves_only_the_new_head(tmp_path):
    parent, atoms = _parent(), _atoms()
    e_parent, f_parent = _energy_forces(parent, atoms)
    two = add_head(parent, CONSTANTS, ("parent", "new"), head_layers=1)
    assert any(k.startswith("head_interactions.0.0.") for k in two.state_dict())
    assert any(k.startswith("head_products.0.0.") for k in two.state_dict())
    for head in (0, 1):
        two.active_head = head
        e, f = _energy_forces(two, atoms)
        assert e == pytest.approx(e_parent, abs=1e-12)
        np.testing.assert_allclose(f, f_parent, atol=1e-12)
    # the new head's own last layer changes: the new head moves, the parent's head does not
    own = [
        p
        for k, p in two.named_parameters()
        if k.startswith(("head_interactions.", "head_products."))
    ]
    _perturb(own, 0.2, seed=3)
    two.active_head = 1
    e_new, f_new = _energy_forces(two, atoms)
    assert abs(e_new - e_parent) > 1e-4 and np.abs(f_new - f_parent).max() > 1e-4
    two.active_head = 0
    e0, f0 = _energy_forces(two, atoms)
    assert e0 == pytest.approx(e_parent, abs=1e-12)
    np.testing.assert_allclose(f0, f_parent, atol=1e-12)
    # the file carries both heads with their own layers; head= selects
    two.active_head = 1  # saved as the default head
    path = save_model(two, tmp_path / "two", card={"name": "two"})
    for head, (e_want, f_want) in (("parent", (e_parent, f_parent)), ("new", (e_new, f_new))):
        loaded = read_model_file(path, head=head)
        e, f = _energy_forces(loaded.model, atoms)
        assert e == pytest.approx(e_want, abs=1e-10)
        np.testing.assert_allclose(f, f_want, atol=1e-10)
    calc = EquivariantCalculator(path)  # default: the new head
    assert calc.get_potential_energy(atoms) == pytest.approx(e_new, abs=1e-10)


def test_the_parent_head_owns_its_last_layer_in_the_pull_and_the_learning_rate(tmp_path):
    parent = _parent()
    two = add_head(parent, CONSTANTS, ("parent", "new"), head_layers=1)
    parent_head, new_head = head_prefixes(two.config)
    assert "interactions.1." in parent_head and "head_interactions.0." in new_head
    assert learning_head(two.config) == new_head  # the rates: full for the learning head only
    assert learning_head(parent.config) == ("readouts.",)  # one head: it learns
    pull, report = pull_for_finetune(two, parent, 2.0, tmp_path / "replay", replay=True)
    assert pull is not None
    _perturb(list(two.parameters()), 0.05, seed=4)
    pull(two).backward()
    for name, p in two.named_parameters():
        assert (p.grad is None) == name.startswith(new_head), name  # the new head: never pulled
    # without replay the parent's head (readouts and its own last layer) gets no data and
    # is not pulled: only the layers below are
    _, alone = pull_for_finetune(two, parent, 2.0, tmp_path / "alone", replay=False)
    below = sum(p.numel() for k, p in parent.named_parameters() if not k.startswith(parent_head))
    assert alone["pulled_weights"] == below and below < report["pulled_weights"]
    scale = head_lr_scale(0.1, new_head)
    assert scale("head_interactions.0.0.linear.weight") == 1.0
    assert scale("interactions.1.linear.weight") == 0.1
