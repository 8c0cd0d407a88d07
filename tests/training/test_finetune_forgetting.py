"""Fine-tuning against forgetting: replay favouring the new data's elements, a slower shared
trunk (learning-rate groups), and both recorded in the report and the card."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from conftest import emt_structures
from test_finetune import FAST, _shifted, parent  # noqa: F401  (the parent fixture)

from ase_equi import load_model
from ase_equi.data import Frame, read_frames
from ase_equi.training.adaptation import predict_energies
from ase_equi.training.finetune import FinetuneConfig, finetune
from ase_equi.training.finetune_defaults import head_lr_scale, resolve_rules
from ase_equi.training.optimiser import parameter_groups
from ase_equi.training.replay import select_replay


def _pool(n_ni: int, n_other: int) -> list[Frame]:
    kinds = ["Ni2Cu2"] * n_ni + ["Cu4", "Al4", "Ag2Au2"] * n_other
    return [Frame(Atoms(s), 0.0, index=k) for k, s in enumerate(kinds[: n_ni + n_other])]


def _with_ni(frames: list[Frame]) -> int:
    return sum("Ni" in f.atoms.get_chemical_symbols() for f in frames)


def test_replay_favours_the_new_data_elements():
    pool = _pool(n_ni=6, n_other=30)
    # a uniform sample of 10 would hold 10 · 6/36 ≈ 1.7 nickel frames; the rule asks for 5
    chosen = select_replay(pool, count=10, favour=["Ni"], favour_share=0.5, seed=4)
    assert len(chosen) == 10 and _with_ni(chosen) == 5
    assert [f.index for f in chosen] == sorted(f.index for f in chosen)
    # the share rounds up; fewer favoured frames than asked: all of them, the rest others
    assert _with_ni(select_replay(pool, count=7, favour=["Ni"], favour_share=0.5)) == 4
    assert _with_ni(select_replay(pool, count=20, favour=[28], favour_share=0.5)) == 6
    # too few other frames: topped up with favoured ones (count is always met)
    small = _pool(n_ni=6, n_other=2)
    picked = select_replay(small, count=7, favour=["Ni"], favour_share=0.5)
    assert len(picked) == 7 and _with_ni(picked) == 5
    # share 0: the plain seeded sample, as before
    plain = select_replay(pool, count=10, seed=4)
    assert select_replay(pool, count=10, seed=4, favour=["Ni"], favour_share=0.0) == plain
    with pytest.raises(ValueError, match="'Qq' is not an element"):
        select_replay(pool, count=3, favour=["Qq"], favour_share=0.5)


def test_parameter_groups_follow_the_scale():
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    net[0].bias.requires_grad_(False)
    one = parameter_groups(net, 0.01)
    assert len(one) == 1 and one[0]["lr"] == 0.01
    assert [id(p) for p in one[0]["params"]] == [
        id(net[0].weight),
        id(net[1].weight),
        id(net[1].bias),
    ]
    groups = parameter_groups(net, 0.01, lambda name: 1.0 if name.startswith("1.") else 0.25)
    assert [g["lr"] for g in groups] == [0.01, 0.0025]  # the full-rate group first
    assert [len(g["params"]) for g in groups] == [2, 1]
    scale = head_lr_scale(0.1, ("readouts.",))
    assert (scale("readouts.1.w"), scale("interactions.0.w")) == (1.0, 0.1)
    # the share rule: favour the new data's elements with two heads only
    two, one = resolve_rules(FinetuneConfig()), resolve_rules(FinetuneConfig(multihead=False))
    assert (two.replay_new_element_share, two.head_layers, two.trunk_lr_scale) == (0.5, 1, 0.3)
    assert (one.replay_new_element_share, one.head_layers, one.trunk_lr_scale) == (0, 0, 1.0)
    given = resolve_rules(FinetuneConfig(head_layers=0, trunk_lr_scale=1.0))
    assert (given.head_layers, given.trunk_lr_scale) == (0, 1.0)  # the user's values win
    with pytest.raises(ValueError, match="head_layers = 1 needs multihead=True"):
        resolve_rules(FinetuneConfig(multihead=False, head_layers=1))
    assert (
        resolve_rules(FinetuneConfig(replay_new_element_share=0.2)).replay_new_element_share == 0.2
    )
    with pytest.raises(ValueError, match="trunk_lr_scale is out of range"):
        FinetuneConfig(trunk_lr_scale=1.5)
    with pytest.raises(ValueError, match="replay_new_element_share is out of range"):
        FinetuneConfig(replay_new_element_share=-0.1)


def test_trunk_at_rate_zero_keeps_the_parent_exactly(parent, tmp_path):  # noqa: F811
    """trunk_lr_scale=0: shared layers and the parent's head are not moved, even with replay
    on the parent's head, while the new head learns; the settings are on the card."""
    replay_file = tmp_path / "parent-data.xyz"
    ase.io.write(replay_file, emt_structures(6, seed=17))
    frames = read_frames(_shifted(emt_structures(6, seed=31), {13: 0.2, 29: -0.1}, 1.2))
    probe = read_frames(emt_structures(4, seed=33))
    result = finetune(
        parent,
        frames,
        out=tmp_path / "ft",
        epochs=1,
        lr=1e-2,
        replay_data=str(replay_file),
        parent_test_data=str(replay_file),
        trunk_lr_scale=0.0,
        level_of_theory="EMT x1.2",
        **FAST,
    )
    old = load_model(parent).model
    tuned = load_model(result.model_path, head="parent").model
    for name, value in old.state_dict().items():
        if name not in ("reference_energies", "scale", "shift"):
            assert torch.equal(tuned.state_dict()[name], value), name
    before = predict_energies(old, probe)
    np.testing.assert_allclose(predict_energies(tuned, probe), before, atol=1e-9, rtol=0)
    new_head = load_model(result.model_path).model
    assert np.abs(predict_energies(new_head, probe) - before).max() > 1e-3  # it learned
    settings = load_model(result.model_path).card["finetuning"]["settings"]
    assert settings["trunk_lr_scale"] == 0.0 and settings["replay_new_element_share"] == 0.5
    replay = result.report["replay"]
    assert replay["new_element_share"] == 0.5
    # every EMT frame holds Cu or Al, both in the new data: all replayed frames count
    assert replay["with_new_data_elements"] == replay["count"] > 0


def test_cli_passes_the_replay_and_trunk_options(monkeypatch, tmp_path):
    import ase_equi.training.finetune as module
    from ase_equi.cli import main

    seen = {}

    def fake(model, data, **options):
        seen.update(options)
        return module.FinetuneResult(model=None, train_result=None, report={}, model_path=None)

    monkeypatch.setattr(module, "finetune", fake)
    argv = ["finetune", "--from", "metals", "--data", "x.xyz", "--out", str(tmp_path)]
    argv += ["--trunk-lr-scale", "0.25", "--replay-new-element-share", "0.75"]
    argv += ["--parent-pull", "10", "--head-layers", "0"]
    assert main(argv) == 0
    assert (seen["trunk_lr_scale"], seen["replay_new_element_share"]) == (0.25, 0.75)
    assert seen["head_layers"] == 0
    assert seen["parent_pull"] == 10.0
    assert "replay_weight" not in seen  # unset: the balance rule decides


def test_train_lr_scale_zero_freezes_a_block(tmp_path):
    """train()'s ``lr_scale``: a learning-rate factor 0 keeps a block bit-identical while the
    rest trains."""
    from test_training import TINY

    from ase_equi.training import TrainConfig, train

    frames = read_frames(emt_structures(4, seed=41))

    def run(name, **hooks):
        cfg = TrainConfig(
            output_dir=str(tmp_path / name), epochs=1, lr=1e-2, plots=False, batch_size=2
        )
        return train(TINY, frames, cfg, verbose=False, **hooks)

    start = run("none", lr_scale=lambda name: 0.0).model.state_dict()  # nothing moves
    part = run("part", lr_scale=lambda name: 0.0 if name.startswith("products.") else 1.0)
    after = part.model.state_dict()
    assert all(torch.equal(after[k], start[k]) for k in start if k.startswith("products."))
    assert any(not torch.equal(after[k], start[k]) for k in start if k.startswith("interactions."))


def test_resume_with_other_lr_scale_is_refused(tmp_path):
    """A checkpoint written with one set of learning-rate factors is not resumed with others
    (the optimiser's saved groups would silently keep the old rates); the same ones resume."""
    from test_training import TINY

    from ase_equi.training import TrainConfig, train

    frames = read_frames(emt_structures(4, seed=43))

    def run(epochs, factor):
        cfg = TrainConfig(output_dir=str(tmp_path), epochs=epochs, plots=False, batch_size=2)
        scale = lambda name: factor if name.startswith("products.") else 1.0  # noqa: E731
        return train(TINY, frames, cfg, verbose=False, lr_scale=scale)

    run(1, 0.5)
    with pytest.raises(ValueError, match=r"learning-rate factors \[1.0, 0.5\].*\[1.0, 0.25\]"):
        run(2, 0.25)
    assert run(2, 0.5).history[-1]["epoch"] == 2


def test_resume_with_other_frame_weights_is_refused(tmp_path):
    """A run is not resumed when its frames' loss weights changed (e.g. another replay weight
    of a fine-tune: same frames, other weights), nor silently trained on with the new ones;
    the same weights resume."""
    import dataclasses

    from test_training import TINY

    from ase_equi.training import TrainConfig, train

    frames = read_frames(emt_structures(4, seed=44))

    def run(epochs, weight):
        cfg = TrainConfig(output_dir=str(tmp_path), epochs=epochs, plots=False, batch_size=2)
        weighted = [*frames[:3], dataclasses.replace(frames[3], weight=weight)]
        return train(TINY, weighted, cfg, verbose=False)

    run(1, 1.5)
    with pytest.raises(ValueError, match="other data, frame weights or heads"):
        run(2, 2.0)
    assert run(2, 1.5).history[-1]["epoch"] == 2
