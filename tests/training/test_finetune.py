"""Fine-tuning: loss goes down, exact E0 refit, frozen blocks, resume, new element, bad data."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import torch
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from conftest import broken_emt_structures, emt_structures
from test_training import TINY, Killed, _loss_on, _states_equal

from ase_equi import load_model
from ase_equi.cli import main
from ase_equi.data import read_frames
from ase_equi.training import LossWeights, TrainConfig, train
from ase_equi.training.finetune import (
    add_elements,
    finetune,
    measure_errors,
    predict_energies,
    refit_reference_energies,
)
from ase_equi.training.trainer import load_checkpoint

FAST = dict(batch_size=2, valid_fraction=0.2, test_fraction=0.2, plots=False, seed=1)
LOT = dict(level_of_theory="EMT, scaled labels (test)")


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A tiny Al/Cu model briefly trained on EMT, saved as a model file (the 'zoo parent')."""
    out = tmp_path_factory.mktemp("parent")
    cfg = TrainConfig(epochs=10, lr=2e-2, output_dir=str(out), **FAST)
    result = train(TINY, read_frames(emt_structures(8, seed=3)), cfg, name="parent")
    return result.model_path


def _shifted(images, shift: dict[int, float], scale: float = 1.0):
    """EMT labels moved to a 'new level of theory': energies + per-element constants, forces
    and stress scaled."""
    out = []
    for atoms in images:
        r = atoms.calc.results
        new = atoms.copy()
        energy = r["energy"] * scale + sum(shift[int(z)] for z in atoms.numbers)
        new.calc = SinglePointCalculator(
            new, energy=energy, forces=r["forces"] * scale, stress=r["stress"] * scale
        )
        out.append(new)
    return out


def test_finetune_lowers_the_loss_on_new_data(parent, tmp_path, capsys):
    frames = read_frames(_shifted(emt_structures(10, seed=5), {13: 0.3, 29: -0.2}, 1.15))
    model = load_model(parent).model
    weights = LossWeights()
    before = _loss_on(model, frames, weights)
    capsys.readouterr()
    result = finetune(parent, frames, out=tmp_path / "ft", epochs=6, lr=2e-2, **FAST, **LOT)
    assert "epoch 6/6" in capsys.readouterr().err  # progress from Python too (verbose=True)
    after = _loss_on(result.model.double(), frames, weights)
    print(f"loss on the new data: {before:.4g} before, {after:.4g} after")
    assert after < 0.85 * before
    assert set(result.report["new_test"]["before"]) == set(result.report["new_test"]["after"])
    errors = [measure_errors(m, frames)["energy_rmse"] for m in (model, result.model)]
    assert errors[1] < errors[0]
    card = load_model(result.model_path).card
    assert card["parent"]["name"] == "parent"
    assert card["parent"]["weights_sha256"] == result.report["parent_sha256"] != ""
    assert (tmp_path / "ft" / "finetune_report.md").exists()


def test_e0_refit_solves_the_least_squares_exactly(parent):
    model = load_model(parent).model
    e0 = model.reference_energies.detach().numpy().copy()
    shift = {13: 0.731, 29: -1.254}
    images = emt_structures(6, seed=7)
    frames = read_frames(images)
    # labels = the parent's own energies + a per-element constant: the refit must find it
    energies = predict_energies(model, frames)
    for f, e in zip(frames, energies, strict=True):
        f.energy = float(e + sum(shift[int(z)] for z in f.atoms.numbers))
    new = refit_reference_energies(model, frames).values
    np.testing.assert_allclose(new, e0 + np.array([shift[13], shift[29]]), atol=1e-10)


def test_frozen_blocks_stay_bit_identical(parent, tmp_path):
    frames = read_frames(_shifted(emt_structures(8, seed=9), {13: 0.0, 29: 0.0}, 1.2))
    before = load_model(parent).model.state_dict()
    result = finetune(
        parent,
        frames,
        out=tmp_path / "ft",
        epochs=2,
        lr=1e-2,
        refit_e0=False,
        multihead=False,
        freeze=("embedding", "interactions", "products"),
        **FAST,
        **LOT,
    )
    after = result.model.double().state_dict()
    frozen = ("node_embedding.", "interactions.", "products.")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "nothing was trained"
    assert all(k.startswith("readouts.") for k in changed), changed
    assert not any(k.startswith(frozen) for k in changed)


def test_killed_finetune_resumes_with_identical_state(parent, tmp_path):
    frames = read_frames(_shifted(emt_structures(10, seed=11), {13: 0.1, 29: 0.2}, 1.1))
    options = dict(epochs=2, lr=5e-3, checkpoint_every=1, replay_data=None, **FAST, **LOT)
    whole = finetune(parent, frames, out=tmp_path / "whole", **options)

    def kill(info):
        if info["event"] == "step" and info["step"] == 4:
            raise Killed

    with pytest.raises(Killed):
        finetune(parent, frames, out=tmp_path / "killed", progress=kill, **options)
    resumed = finetune(parent, frames, out=tmp_path / "killed", **options)
    assert resumed.train_result.resumed_from_step == 4
    a = load_checkpoint(tmp_path / "whole/checkpoints/last.pt")
    b = load_checkpoint(tmp_path / "killed/checkpoints/last.pt")
    a["train_config"].pop("output_dir"), b["train_config"].pop("output_dir")
    _states_equal(a, b)
    for p, q in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)


def _with_nickel(n: int, seed: int):
    images = emt_structures(n, seed=seed)
    for k, atoms in enumerate(images):
        if k % 2 == 0:
            atoms.numbers[1] = 28
        atoms.calc = EMT()
        atoms.calc = SinglePointCalculator(
            atoms,
            energy=atoms.get_potential_energy(),
            forces=atoms.get_forces(),
            stress=atoms.get_stress(),
        )
    return images


def test_a_new_element_is_added_and_the_old_ones_kept(parent, tmp_path):
    model = load_model(parent).model
    extended = add_elements(model, [28], seed=0)
    assert extended.config.elements == (13, 29, 28)
    old_frames = read_frames(emt_structures(4, seed=13))
    np.testing.assert_allclose(  # Al/Cu predictions unchanged by the new element's weights
        predict_energies(extended, old_frames), predict_energies(model, old_frames), atol=1e-12
    )
    frames = read_frames(_with_nickel(10, seed=15))
    result = finetune(parent, frames, out=tmp_path / "ft", epochs=2, lr=5e-3, **FAST, **LOT)
    assert result.model.config.elements == (13, 29, 28)
    assert result.report["new_elements"] == ["Ni"]
    e0 = dict(
        zip(result.model.config.elements, result.model.config.reference_energies, strict=True)
    )
    assert e0[28] != 0.0  # fitted by the E0 refit, not left at zero


def test_replay_frames_train_only_and_count(parent, tmp_path):
    replay_file = tmp_path / "parent-data.xyz"
    ase.io.write(replay_file, emt_structures(6, seed=17))
    frames = read_frames(_shifted(emt_structures(10, seed=19), {13: 0.05, 29: 0.0}, 1.1))
    result = finetune(
        parent,
        frames,
        out=tmp_path / "ft",
        epochs=1,
        replay_data=str(replay_file),
        replay_count=4,
        replay_weight=0.5,
        parent_test_data=str(replay_file),
        **FAST,
        **LOT,
    )
    assert result.report["n_replay"] == 4
    assert "parent_test" in result.report
    split = (tmp_path / "ft" / "split.json").read_text()
    import json

    split = json.loads(split)
    assert split["replay"] == [10, 11, 12, 13]
    assert set(split["replay"]) <= set(split["train"])
    assert not set(split["replay"]) & (set(split["test"]) | set(split["valid"]))


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing forces", r"frame 1 has no forces under 'forces'. Keys found"),
        ("nan position", r"frame 1: positions contain NaN or inf at atom 2"),
        ("nan energy", r"frame 1: energy is nan"),
        ("forces shape", r"frame 1: forces have shape \(3, 3\), expected \(4, 3\)"),
        ("unknown element", r"frame 1: .*Z=0"),
    ],
)
def test_bad_data_names_the_frame(parent, tmp_path, kind, message):
    images = broken_emt_structures(kind if kind != "unknown element" else "none")
    if kind == "unknown element":
        images[1].numbers[0] = 0  # 'X', no element
    with pytest.raises(ValueError, match=message):
        finetune(parent, images, out=tmp_path / "ft", epochs=1, **FAST, **LOT)


def test_bad_data_file_names_the_file_and_frame(parent, tmp_path):
    path = tmp_path / "bad.xyz"
    ase.io.write(path, broken_emt_structures("missing forces"))
    with pytest.raises(ValueError, match=r"frame 1 of .*bad.xyz has no forces under 'forces'"):
        finetune(parent, str(path), out=tmp_path / "ft", epochs=1, **FAST, **LOT)


def test_unknown_option_and_unknown_parent(parent, tmp_path):
    with pytest.raises(TypeError, match="unknown options \\['epoch'\\]"):
        finetune(parent, [], out=tmp_path, epoch=3)
    with pytest.raises(TypeError, match="writes to out=, not output_dir"):  # not dropped
        finetune(parent, [], out=tmp_path, output_dir=tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="neither a model file nor a zoo model"):
        finetune("no-such-model", [], out=tmp_path)


def test_cli_finetune(parent, tmp_path, capsys):
    data = tmp_path / "new.xyz"
    ase.io.write(data, _shifted(emt_structures(8, seed=21), {13: 0.1, 29: 0.1}, 1.05))
    code = main(
        [
            "finetune",
            "--from",
            str(parent),
            "--data",
            str(data),
            "--out",
            str(tmp_path / "run"),
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--plots",
            "false",
            "--freeze",
            "embedding",
            "--name",
            "mine",
            "--level-of-theory",
            "EMT x1.05",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "Fine-tuning report" in out
    assert load_model(tmp_path / "run" / "mine.json").card["parent"]["name"] == "parent"


def test_finetune_help_shows_the_finetuning_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "TrainConfig.lr (default 0.005)" in text  # not training's 0.01
    assert "TrainConfig.epochs (default 50)" in text and "(default cosine)" in text


def test_quiet_finetune_prints_nothing(parent, tmp_path, capsys):
    frames = read_frames(_shifted(emt_structures(6, seed=23), {13: 0.0, 29: 0.1}, 1.0))
    finetune(parent, frames, out=tmp_path / "ft", epochs=1, verbose=False, **FAST, **LOT)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
