"""How on-the-fly learning retrains after a reference call: the loss weights the parent ended
with, and the learning rate of each call from the model's error on the labelled structure
(:class:`~ase_equi.learning_retraining.RefitRate`), checked by hand and in the loop."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from ase.calculators.emt import EMT
from test_learning_rigidity import PARENT_FACTORS, SMALL, info, labelled_frames, start

import ase_equi.training.trainer as trainer
from ase_equi import MaceModel, save_model
from ase_equi.io.rigidity_section import write_rigidity
from ase_equi.learning import learn_on_the_fly
from ase_equi.learning_retraining import RETRAIN_LR, RefitRate, retraining_config
from ase_equi.learning_rigidity import refit_rigidity
from ase_equi.model.prediction_rigidity import LastLayerRigidity, feature_dim
from ase_equi.training.config import TrainConfig

WEIGHTS = ("energy_weight", "forces_weight", "stress_weight")
STAGES = [
    {"settings": {"lr": 1e-2, "energy_weight": 10.0, "forces_weight": 100.0, "stress_weight": 1e3}},
    {"settings": {"lr": 2e-4, "energy_weight": 1e3, "forces_weight": 100.0, "stress_weight": 1e4}},
]
CARD = {
    "name": "staged",
    "training_stages": STAGES,
    "test_errors": {"forces_rmse": 50.0},
    "test_error_units": {"forces": "meV/Å"},
}


def staged_parent(tmp_path, card: dict):
    """A tiny model with an LLPR section and ``card``."""
    torch.manual_seed(41)
    model = MaceModel(SMALL).double()
    path = save_model(model, tmp_path / "staged", card=card)
    eye = torch.eye(feature_dim(model), dtype=torch.float64)
    parent = LastLayerRigidity(eye, eye, *PARENT_FACTORS, info=info(model, 0, 0))
    write_rigidity(path, refit_rigidity(model, parent, labelled_frames(3, seed=1), data="three"))
    return path


@pytest.fixture
def seen(monkeypatch):
    """The TrainConfig of every retraining (each run for one epoch only)."""
    configs: list[TrainConfig] = []
    original = trainer.train

    def spy(model, frames, config, **kwargs):
        configs.append(config)
        return original(model, frames, dataclasses.replace(config, epochs=1), **kwargs)

    monkeypatch.setattr(trainer, "train", spy)
    return configs


def test_the_rate_is_the_last_stages_times_the_error_ratio_within_the_stages_rates():
    rate = RefitRate.from_card(CARD, ceiling=1.0)  # no ceiling below the first stage's rate
    assert rate == RefitRate(first=1e-2, last=2e-4, test_force_rmse=0.05)
    # 2e-4 × e / 0.05 eV/Å, by hand; floor at the last stage's rate, cap at the first's
    assert rate(0.5) == pytest.approx(2e-3, rel=1e-12)
    assert rate(0.125) == pytest.approx(5e-4, rel=1e-12)
    assert rate(0.01) == 2e-4 and rate(0.0) == 2e-4
    assert rate(10.0) == 1e-2
    in_ev = {**CARD, "test_errors": {"forces_rmse": 0.05}, "test_error_units": {"forces": "eV/Å"}}
    assert RefitRate.from_card(in_ev, ceiling=1.0) == rate


def test_the_cap_is_the_first_stages_rate_at_most_the_fixed_rate_never_below_the_last():
    """Default ceiling RETRAIN_LR = 5e-3: the first stage's 1e-2 is capped there (a 20x-wrong
    model retrains at 5e-3); a ceiling above the first stage's rate leaves it; a last stage
    above the ceiling makes the rate that stage's at every error."""
    assert RETRAIN_LR == 5e-3
    rate = RefitRate.from_card(CARD)
    assert rate == RefitRate(first=5e-3, last=2e-4, test_force_rmse=0.05)
    assert rate(10.0) == 5e-3 and rate(0.5) == pytest.approx(2e-3, rel=1e-12)
    assert RefitRate.from_card(CARD, ceiling=3e-3).first == 3e-3
    late = [STAGES[0], {"settings": {**STAGES[1]["settings"], "lr": 8e-3}}]
    fast = RefitRate.from_card({**CARD, "training_stages": late})
    assert fast == RefitRate(first=8e-3, last=8e-3, test_force_rmse=0.05)
    assert fast(0.01) == fast(10.0) == 8e-3
    for bad in (0.0, -1e-3, float("nan"), float("inf"), True, "5e-3"):
        with pytest.raises(ValueError, match="ceiling must be a number > 0"):
            RefitRate.from_card(CARD, ceiling=bad)


@pytest.mark.parametrize(
    "card",
    [
        {**CARD, "training_stages": STAGES[:1]},  # one training: no rate it ended with
        {k: v for k, v in CARD.items() if k != "training_stages"},
        {**CARD, "test_error_units": {"forces": "kcal/mol/Å"}},  # a unit it cannot convert
        {**CARD, "test_errors": {}},
        {**CARD, "training_stages": [STAGES[0], {"settings": {}}]},
        {},
    ],
)
def test_a_card_without_the_figures_gives_no_rate(card):
    assert RefitRate.from_card(card) is None


@pytest.mark.parametrize(
    "given, message",
    [
        (dict(first=1e-3, last=1e-2, test_force_rmse=0.1), "last .* above first"),
        (dict(first=1e-2, last=0.0, test_force_rmse=0.1), "last must be a number > 0"),
        (dict(first=1e-2, last=1e-3, test_force_rmse=float("nan")), "test_force_rmse must"),
        (dict(first=True, last=1e-3, test_force_rmse=0.1), "first must be a number > 0"),
    ],
)
def test_a_bad_rate_is_refused_by_name(given, message):
    with pytest.raises(ValueError, match=message):
        RefitRate(**given)


def test_each_retraining_runs_at_the_rate_of_the_models_error_on_its_structure(tmp_path, seen):
    """Default settings: every call's learning rate is the card's rate of the error of the
    model in use on the labelled structure (as logged), and setup.json states the rule."""
    path = staged_parent(tmp_path, CARD)
    learn_on_the_fly(start(), path, EMT(), out=tmp_path / "run", every=1, steps=3, replay=None)
    calls = json.loads((tmp_path / "run" / "calls.json").read_text())
    rate = RefitRate.from_card(CARD)
    assert len(calls) == len(seen) == 3
    for call, config in zip(calls, seen, strict=True):
        assert config.lr == call["lr"] == rate(call["force_rmse_before"])
    assert len({c["lr"] for c in calls}) > 1  # the errors, and with them the rates, differ
    setup = json.loads((tmp_path / "run" / "setup.json").read_text())
    assert setup["lr"] == rate.describe()


def test_a_fixed_rate_or_a_given_config_is_kept_at_every_call(tmp_path, seen):
    path = staged_parent(tmp_path, CARD)
    learn_on_the_fly(
        start(), path, EMT(), out=tmp_path / "a", every=1, steps=2, replay=None, refit_lr=3e-3
    )
    assert [c.lr for c in seen] == [3e-3, 3e-3]
    config = dataclasses.replace(retraining_config(parent_card=CARD), lr=7e-4)
    learn_on_the_fly(
        start(), path, EMT(), out=tmp_path / "b", every=1, steps=2, replay=None, train_config=config
    )
    assert [c.lr for c in seen[2:]] == [7e-4, 7e-4]
    assert json.loads((tmp_path / "b" / "setup.json").read_text())["lr"] == 7e-4


def test_a_parent_without_stages_retrains_at_the_fixed_rate(tmp_path, seen):
    path = staged_parent(tmp_path, {"name": "plain"})
    learn_on_the_fly(start(), path, EMT(), out=tmp_path / "run", every=1, steps=1, replay=None)
    assert [c.lr for c in seen] == [retraining_config().lr]


@pytest.mark.parametrize("bad", [0.0, -1e-3, float("inf"), "fast", True])
def test_a_bad_refit_lr_is_refused_before_any_step(tmp_path, bad):
    path = staged_parent(tmp_path, CARD)
    with pytest.raises(ValueError, match="refit_lr must be a number > 0 or a RefitRate"):
        learn_on_the_fly(start(), path, EMT(), out=tmp_path / "x", every=1, steps=2, refit_lr=bad)
    assert not (tmp_path / "x" / "state.json").exists()


def test_retraining_takes_the_loss_weights_the_parent_ended_with(tmp_path, seen):
    """A parent whose card has two training stages (10 : 100 : 1000, then 1000 : 100 : 10000):
    each retraining of the loop trains with the last stage's weights, as fine-tuning does, and
    setup.json says so; a parent without them trains with TrainConfig's."""
    path = staged_parent(tmp_path, CARD)
    learn_on_the_fly(start(), path, EMT(), out=tmp_path / "run", every=1, steps=2, replay=None)
    assert [tuple(getattr(c, w) for w in WEIGHTS) for c in seen] == [(1e3, 100.0, 1e4)] * 2
    setup = json.loads((tmp_path / "run" / "setup.json").read_text())
    assert setup["loss_weights"] == [1e3, 100.0, 1e4]
    plain = retraining_config(parent_card={"name": "no stages"})
    assert [getattr(plain, w) for w in WEIGHTS] == [getattr(TrainConfig(), w) for w in WEIGHTS]
