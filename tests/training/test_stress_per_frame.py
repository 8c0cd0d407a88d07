"""Stress labels are used per frame: a batch mixing bulk cells and molecules keeps the bulk
frames' stress labels (evaluated one by one as the reference)."""

from __future__ import annotations

import pytest
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from conftest import emt_structures

from ase_equi.data import read_frames
from ase_equi.model.config import ModelConfig
from ase_equi.training.checkpoint import new_model
from ase_equi.training.evaluation import LabelledSet
from ase_equi.training.loss import squared_error_sums

TINY = ModelConfig(
    elements=(13, 29),
    reference_energies=(0.0, 0.0),
    r_max=3.5,
    num_bessel=4,
    channels=4,
    max_ell=1,
    correlation=2,
    radial_mlp=(8,),
)


def _mixed_set():
    bulk = emt_structures(2)
    molecule = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.4]])
    molecule.calc = SinglePointCalculator(molecule, energy=0.5, forces=[[0, 0, -1], [0, 0, 1]])
    model = new_model(TINY, 0).double()
    frames = read_frames([bulk[0], molecule, bulk[1]])
    return model, LabelledSet.for_model(frames, model)


def test_mixed_batch_keeps_every_stress_label():
    model, data = _mixed_set()
    groups = data.stress_groups([0, 1, 2])
    assert groups == [([0, 2], True), ([1], False)]
    mixed = data.evaluate(model, batch_size=3).summary()
    one_by_one = data.evaluate(model, batch_size=1).summary()
    assert mixed["stress_count"] == 18  # both bulk frames, 9 components each
    for key in ("energy_mae", "forces_mae", "stress_mae", "stress_rmse"):
        assert mixed[key] == pytest.approx(one_by_one[key], rel=1e-10)


def test_training_loss_of_a_mixed_batch_has_the_stress_term():
    """The summed squared stress error of a mixed batch equals that of its bulk frames alone."""
    model, data = _mixed_set()
    parts = [squared_error_sums(p, b) for b, p in data.predictions(model, [0, 1, 2])]
    stress_sq = sum(float(p["stress"][0]) for p in parts)
    stress_n = sum(float(p["stress"][1]) for p in parts)
    alone = [squared_error_sums(p, b) for b, p in data.predictions(model, [0, 2])]
    assert stress_n == 18
    assert stress_sq == pytest.approx(float(alone[0]["stress"][0]), rel=1e-12)
    assert stress_sq > 0
    # no stress weight: one pass, stress not computed
    assert data.stress_groups([0, 1, 2], weight=0.0) == [([0, 1, 2], False)]
    assert torch.is_tensor(parts[0]["energy"][0])
