"""Multi-head models: heads with their own readouts and constants, saved, loaded, selected."""

from __future__ import annotations

import json

import pytest
import torch
from ase.build import bulk

from ase_equi import EquivariantCalculator
from ase_equi.errors import ModelFileError
from ase_equi.graph import atoms_to_graph
from ase_equi.io.model_file import read_model_file, save_model
from ase_equi.model.config import ModelConfig
from ase_equi.model.gradients import energy_forces_stress
from ase_equi.model.mace import MaceModel

BASE = dict(
    elements=(29,),
    reference_energies=(-1.0,),
    channels=4,
    max_ell=1,
    correlation=2,
    radial_mlp=(8,),
    r_max=4.0,
)


def _structure():
    atoms = bulk("Cu", cubic=True)
    atoms.rattle(0.1, seed=1)
    return atoms


def _energy(model, atoms):
    graph = atoms_to_graph(atoms, model.config.elements, model.config.r_max)
    return float(energy_forces_stress(model, graph, forces=False)["energy"][0])


def _two_single_head_models():
    """Two single-head models with the same trunk, different readouts and E0: the reference
    each head of the joined model must reproduce (members evaluated one by one)."""
    a = MaceModel(ModelConfig(**BASE)).double()
    torch.manual_seed(7)
    b = MaceModel(ModelConfig(**{**BASE, "reference_energies": (-2.5,)})).double()
    state = b.state_dict()
    for key, value in a.state_dict().items():
        if not key.startswith("readouts.") and key not in ("reference_energies",):
            state[key] = value
    b.load_state_dict(state)
    return a, b


def _joined(a, b):
    cfg = ModelConfig(**BASE, heads=("parent", "new"))
    model = MaceModel(cfg).double()
    state = model.state_dict()
    for key, value in a.state_dict().items():
        if key in ("reference_energies", "scale", "shift"):
            state[key] = torch.stack([value, b.state_dict()[key]])
        else:
            state[key] = value
    for key, value in b.state_dict().items():
        if key.startswith("readouts."):
            state["head_readouts.0." + key.removeprefix("readouts.")] = value
    model.load_state_dict(state)
    return model


def test_each_head_equals_its_single_head_model_after_save_and_load(tmp_path):
    a, b = _two_single_head_models()
    atoms = _structure()
    e_a, e_b = _energy(a, atoms), _energy(b, atoms)
    assert abs(e_a - e_b) > 1.0  # different E0 and readouts
    model = _joined(a, b)
    model.active_head = 1
    path = save_model(model, tmp_path / "two", card={"name": "two"})
    header = json.loads(path.read_text())
    assert list(header["heads"]) == ["parent", "new"] and header["default_head"] == "new"
    for head, expected in ((None, e_b), ("new", e_b), ("parent", e_a)):
        loaded = read_model_file(path, head=head)
        assert loaded.heads == ["parent", "new"]
        assert _energy(loaded.model, atoms) == pytest.approx(expected, abs=1e-10)
    calc = EquivariantCalculator(path, head="parent")
    assert calc.get_potential_energy(atoms) == pytest.approx(e_a, abs=1e-10)
    with pytest.raises(ModelFileError, match="no head 'other'"):
        read_model_file(path, head="other")


def test_single_head_config_and_state_unchanged():
    cfg = ModelConfig(**BASE)
    assert "heads" not in cfg.to_dict()  # headers (and their hashes) of old files unchanged
    keys = set(MaceModel(cfg).state_dict())
    assert not any(k.startswith("head_readouts") for k in keys)
    with pytest.raises(ValueError, match="duplicates"):
        ModelConfig(**BASE, heads=("a", "a"))
