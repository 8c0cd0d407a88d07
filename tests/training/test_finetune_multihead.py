"""Multi-head fine-tuning: the parent's head kept, defaults from the parent's card, replay
selection, the equation of state in the report, the level of theory asked for."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from conftest import emt_structures
from test_finetune import FAST, _shifted, parent  # noqa: F401  (the parent fixture)

from ase_equi import load_model
from ase_equi.cli import main
from ase_equi.data import Frame, read_frames
from ase_equi.training.adaptation import predict_energies
from ase_equi.training.finetune import finetune
from ase_equi.training.finetune_defaults import choose_train_options, weights_from_data
from ase_equi.training.finetune_eos import eos_report, find_volume_scan, fit_eos
from ase_equi.training.replay import select_replay


def test_parent_head_unchanged_when_the_shared_layers_are_frozen(parent, tmp_path):  # noqa: F811
    frames = read_frames(_shifted(emt_structures(6, seed=31), {13: 0.2, 29: -0.1}, 1.2))
    probe = read_frames(emt_structures(4, seed=33))
    result = finetune(
        parent,
        frames,
        out=tmp_path / "ft",
        epochs=1,
        lr=1e-2,
        replay_data=None,
        freeze=("embedding", "interactions", "products"),
        level_of_theory="EMT x1.2",
        **FAST,
    )
    heads = load_model(result.model_path).heads
    assert heads == ["parent", "finetuned"]
    assert load_model(result.model_path).head == "finetuned"  # the default: the new head
    parent_head = load_model(result.model_path, head="parent").model
    before = predict_energies(load_model(parent).model, probe)
    np.testing.assert_allclose(predict_energies(parent_head, probe), before, atol=1e-6, rtol=0)
    new_head = load_model(result.model_path).model
    assert np.abs(predict_energies(new_head, probe) - before).max() > 1e-3  # it learned
    card = load_model(result.model_path).card
    assert card["head_card"]["level_of_theory"] == "EMT x1.2"
    # defaults: the parent's own loss weights, read from its card
    settings = load_model(parent).card["training"]["settings"]
    for key in ("energy_weight", "forces_weight", "stress_weight"):
        assert result.report["defaults"][key]["value"] == settings[key]
        assert "parent" in result.report["defaults"][key]["from"]


def test_defaults_from_card_data_and_user():
    frames = read_frames(emt_structures(6, seed=35))
    card = {
        "training": {"settings": {"energy_weight": 10, "forces_weight": 100, "stress_weight": 1000}}
    }
    options, source = choose_train_options(card, frames, {"lr": 0.5})
    assert (options["energy_weight"], options["stress_weight"], options["lr"]) == (10, 1000, 0.5)
    assert source["lr"] == "given"
    # a staged parent (train_zoo.py --stage N): the weights of its last stage, what it ended with
    last = {"settings": {"energy_weight": 1e3, "forces_weight": 100, "stress_weight": 1e4}}
    staged = {"training": card["training"], "training_stages": [card["training"], last]}
    options, _ = choose_train_options(staged, frames, {})
    assert (options["energy_weight"], options["stress_weight"]) == (1e3, 1e4)
    # a last stage that does not state all three: the data's statistics, never a mix
    staged["training_stages"] = [card["training"], {"settings": {"energy_weight": 1e3}}]
    options, source = choose_train_options(staged, frames, {})
    assert "statistics" in source["energy_weight"]
    no_stress = [Frame(f.atoms, f.energy, f.forces) for f in frames]
    options, source = choose_train_options({}, no_stress, {})
    assert options["stress_weight"] == 0.0 and "no stress" in source["stress_weight"]
    assert "statistics" in source["energy_weight"]
    # the data rule: w_E = 100 var(F) / var(E/N after a per-element constant), here by hand
    f = np.concatenate([x.forces.ravel() for x in frames])
    n = np.array([[np.sum(x.atoms.numbers == z) for z in (13, 29)] for x in frames], float)
    e = np.array([x.energy for x in frames])
    r = e - n @ np.linalg.lstsq(n, e, rcond=None)[0]
    expected = np.clip(100 * np.var(f) / np.var(r / n.sum(1)), 1, 1e4)
    assert weights_from_data(frames)["energy_weight"] == pytest.approx(expected)


def test_replay_selection_by_element_type_and_count():
    frames = []
    for k, (symbols, kind) in enumerate(
        [("Cu4", "bulk"), ("Ni4", "bulk"), ("Cu2Ni2", "alloy"), ("Al4", "bulk"), ("Cu3", "md")] * 4
    ):
        frames.append(Frame(Atoms(symbols), 0.0, index=k, config_type=kind))
    chosen = select_replay(frames, elements=["Cu", "Ni"], config_types=["bulk", "alloy"])
    assert len(chosen) == 12
    assert all(set(f.atoms.get_chemical_symbols()) <= {"Cu", "Ni"} for f in chosen)
    assert {f.config_type for f in chosen} == {"bulk", "alloy"}
    few = select_replay(frames, elements=["Cu", "Ni"], count=5, seed=3)
    assert len(few) == 5 and few == select_replay(frames, elements=["Cu", "Ni"], count=5, seed=3)
    assert [f.index for f in few] == sorted(f.index for f in few)
    with pytest.raises(ValueError, match="'Xx' is not an element"):
        select_replay(frames, elements=["Xx"])


def _cu_scan():
    images = []
    for s in np.linspace(0.96, 1.04, 7):
        atoms = bulk("Cu", "fcc", a=3.59 * s, cubic=True)
        atoms.calc = EMT()
        atoms.calc = SinglePointCalculator(
            atoms,
            energy=atoms.get_potential_energy(),
            forces=atoms.get_forces(),
            stress=atoms.get_stress(),
        )
        images.append(atoms)
    return images


def test_eos_of_a_volume_scan_matches_emt():
    frames = read_frames(_cu_scan() + emt_structures(2, seed=37))
    scan = find_volume_scan(frames)
    assert len(scan) == 7
    fit = fit_eos(scan, np.array([f.energy for f in scan]))
    # EMT copper: a0 = 3.59 Å (ASE's EMT parameters), B about 134 GPa (the zoo card's reference)
    assert fit["a0"] == pytest.approx(3.59, abs=0.01)
    assert fit["B"] == pytest.approx(133.7, rel=0.03)
    assert (
        eos_report(emt_structures(3, seed=1) and read_frames(emt_structures(3)), None, None) is None
    )


def test_level_of_theory_is_asked_or_read_from_info_and_cli_replay_selection(
    parent,  # noqa: F811
    tmp_path,
    capsys,
):
    images = _shifted(emt_structures(6, seed=43), {13: 0.1, 29: 0.1}, 1.05)
    with pytest.raises(ValueError, match="level of theory of the new data is not stated"):
        finetune(parent, images, out=tmp_path / "a", epochs=1, **FAST)
    for atoms in images:
        atoms.info["level_of_theory"] = "EMT (info)"
    data = tmp_path / "new.xyz"
    ase.io.write(data, images)
    replay = tmp_path / "replay.xyz"
    parent_data = emt_structures(6, seed=41)
    for k, atoms in enumerate(parent_data):
        atoms.info["config_type"] = "bulk" if k % 2 else "md"
    ase.io.write(replay, parent_data)
    args = ["finetune", "--from", str(parent), "--data", str(data), "--out", str(tmp_path / "r")]
    args += ["--epochs", "1", "--batch-size", "2", "--plots", "false", "--name", "mine"]
    args += ["--replay-data", str(replay), "--replay-elements", "Al,Cu"]
    args += ["--replay-config-types", "bulk", "--replay-count", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "'count': 2" in out and "'config_types': ['bulk']" in out
    assert load_model(tmp_path / "r" / "mine.json").card["level_of_theory"] == "EMT (info)"
