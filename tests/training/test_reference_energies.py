"""Reference energies E0: fits never invent what the data do not determine.

Physics: a per-element constant added to every label moves only the E0 combinations the data's
compositions span. Water alone spans (2, 0, 1) in (H, C, O): the minimum change of E0 is the
projection of the shift onto that direction, and carbon must not move at all.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from conftest import emt_structures, tiny_config

from ase_equi import load_model, save_model
from ase_equi.data import Frame, read_frames
from ase_equi.data.statistics import reference_energy_fit
from ase_equi.errors import AseEquiError
from ase_equi.model.config import ModelConfig
from ase_equi.model.mace import MaceModel
from ase_equi.training import TrainConfig, train
from ase_equi.training.finetune import finetune, predict_energies, refit_reference_energies

H, C, O = 1, 6, 8
FAST = dict(batch_size=2, valid_fraction=0.0, test_fraction=0.25, plots=False, seed=1)


def _tiny_model(elements, e0, seed=0):
    torch.manual_seed(seed)
    return MaceModel(tiny_config(elements=elements, reference_energies=e0)).double().eval()


def _waters(n: int) -> list[Atoms]:
    out = []
    for k in range(n):
        w = molecule("H2O")
        w.rattle(0.05, seed=k)
        out.append(w)
    return out


def test_water_alone_moves_only_2h_plus_o_and_keeps_carbon():
    e0 = (-13.6, -1027.3, -2038.5)  # H, C, O (eV), the 'parent'
    model = _tiny_model((H, C, O), e0)
    shift = -3.0  # new level of theory: each water molecule 3 eV lower
    frames = [Frame(w, 0.0) for w in _waters(4)]
    for f, e in zip(frames, predict_energies(model, frames), strict=True):
        f.energy = float(e) + shift
    fit = refit_reference_energies(model, frames)
    delta = fit.values - np.array(e0)
    assert fit.values[1] == e0[1]  # carbon: in no frame, kept exactly
    assert 2 * delta[0] + delta[2] == pytest.approx(shift, abs=1e-9)
    # minimum change: δ along the only determined direction (2, 0, 1), |(2, 0, 1)|² = 5
    np.testing.assert_allclose(delta, shift / 5 * np.array([2.0, 0.0, 1.0]), atol=1e-9)
    assert fit.summary() == {"H": "partly fitted", "C": "kept", "O": "partly fitted"}
    # the failure: CH4 came out 2,223 eV too low; now it moves by 4 δ_H only
    assert abs(4 * delta[0] + delta[1]) < 5.0  # 4 × 1.2 eV, not 2,223 eV


def test_elements_absent_from_the_data_keep_their_e0_exactly():
    e0 = (-0.31, -0.42, -0.53)  # Al, Ni, Cu
    model = _tiny_model((13, 28, 29), e0)
    images = [bulk("Cu", "fcc", a=3.6 + 0.02 * k, cubic=True) for k in range(3)]
    frames = [Frame(a, 0.0) for a in images]
    for f, e in zip(frames, predict_energies(model, frames), strict=True):
        f.energy = float(e) + 0.75 * len(f.atoms)  # +0.75 eV per Cu atom
    fit = refit_reference_energies(model, frames)
    assert fit.values[0] == e0[0] and fit.values[1] == e0[1]  # bit for bit
    assert fit.values[2] == pytest.approx(e0[2] + 0.75, abs=1e-10)
    assert fit.kept == [13, 28] and fit.fitted == [29]


def test_new_elements_absorb_the_shift_before_the_parent_values_move():
    """Parent knows H and O; NaOH frames add Na. Only E_Na + E_O + E_H is determined: the
    parent's H and O stay, Na takes the whole residual."""
    frames = [Frame(Atoms("NaOH", positions=[[0, 0, 0], [2.0, 0, 0], [2.9, 0, 0]]), -100.0)]
    prior = np.array([-13.6, -2039.0, np.nan])  # H, O, Na (new)
    fit = reference_energy_fit(frames, [H, O, 11], prior)
    np.testing.assert_allclose(fit.values, [-13.6, -2039.0, -100.0 + 13.6 + 2039.0])


def test_without_a_prior_an_element_in_no_frame_is_refused():
    frames = [Frame(Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.3]]), -1.0)]
    with pytest.raises(AseEquiError, match=r"no training frame contains Al \(Z=13\)"):
        reference_energy_fit(frames, [13, 29])


def test_train_fits_e0_when_the_config_has_none(tmp_path):
    config = ModelConfig(
        elements=(13, 29),
        r_max=3.5,
        num_bessel=4,
        channels=4,
        max_ell=1,
        correlation=2,
        radial_mlp=(8,),
    )
    assert config.reference_energies is None
    frames = read_frames(emt_structures(5))
    cfg = TrainConfig(epochs=1, output_dir=str(tmp_path / "run"), **FAST)
    result = train(config, frames, cfg, verbose=False)
    assert len(result.config.reference_energies) == 2
    assert all(np.isfinite(result.config.reference_energies))
    assert result.reference_energies == {"Al": "fitted", "Cu": "fitted"}
    assert "TrainResult(Al-Cu model" in repr(result) and "Parameter" not in repr(result)


def test_finetune_keeps_absent_e0_and_reports_before_after_the_refit(tmp_path):
    e0 = (-0.31, -0.42, -0.53)  # Al, Ni, Cu
    parent = save_model(
        _tiny_model((13, 28, 29), e0), tmp_path / "models" / "parent", card={"name": "parent"}
    )
    images = [bulk("Cu", "fcc", a=3.55 + 0.02 * k, cubic=True) for k in range(8)]
    for k, a in enumerate(images):
        a.rattle(0.03, seed=k)
    frames = [Frame(a, 0.0, np.zeros((len(a), 3))) for a in images]
    for f, e in zip(frames, predict_energies(load_model(parent).model, frames), strict=True):
        f.energy = float(e) + 2.0 * len(f.atoms)  # the parent's energies, 2 eV/atom higher
    result = finetune(
        parent,
        frames,
        out=tmp_path / "ft",
        epochs=1,
        lr=1e-4,
        verbose=False,
        level_of_theory="t",
        **FAST,
    )
    got = dict(
        zip(result.model.config.elements, result.model.config.reference_energies, strict=True)
    )
    assert got[13] == e0[0] and got[28] == e0[1]
    assert got[29] == pytest.approx(e0[2] + 2.0, abs=1e-9)
    e0_report = result.report["reference_energies"]
    assert {s: v["status"] for s, v in e0_report.items()} == {
        "Al": "kept",
        "Ni": "kept",
        "Cu": "fitted",
    }
    test = result.report["new_test"]
    # 'before' is the parent after the refit: it reproduces the labels (to rounding)
    assert test["before"]["energy_mae"] < 1e-6  # meV/atom
    assert test["parent_as_is"]["energy_mae"] == pytest.approx(2000.0, rel=1e-9)
    card = load_model(result.model_path).card
    assert card["parent"]["file"] == "parent.json" and card["parent"]["name"] == "parent"
    assert len(card["parent"]["weights_sha256"]) == 64
    assert str(tmp_path) not in json.dumps(card)  # no path of this machine in the card
    assert card["finetuning"]["reference_energies"]["Al"]["status"] == "kept"
    assert "| Al |" in (tmp_path / "ft" / "finetune_report.md").read_text()
    assert repr(result).startswith("FinetuneResult(from parent, E0 1 fitted / 2 kept")
