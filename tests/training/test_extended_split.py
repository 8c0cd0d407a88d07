"""A run on data with frames appended keeps every earlier frame's role (train/valid/test)."""

from __future__ import annotations

import json

import pytest
from conftest import emt_structures
from test_training import TINY

from ase_equi.data import read_frames
from ase_equi.training import TrainConfig, train
from ase_equi.training.checkpoint import extended_split

SETTINGS = dict(epochs=1, batch_size=4, valid_fraction=0.2, test_fraction=0.2, plots=False)


def test_appended_frames_are_split_and_old_roles_kept(tmp_path):
    old, new = emt_structures(10, seed=1), emt_structures(10, seed=2)
    cfg = TrainConfig(**SETTINGS, output_dir=str(tmp_path / "first"))
    train(TINY, old, cfg)
    previous = json.loads((tmp_path / "first/split.json").read_text())
    frames = read_frames(old + new)
    split = extended_split(previous, frames, cfg)
    for role in ("train", "valid", "test"):
        assert split[role][: len(previous[role])] == previous[role]
        assert all(k >= 10 for k in split[role][len(previous[role]) :])
    added = sorted(k for role in ("train", "valid", "test") for k in split[role] if k >= 10)
    assert added == list(range(10, 20))
    assert len([k for k in split["test"] if k >= 10]) == 2  # 20 % of the 10 new frames

    out = tmp_path / "second"
    out.mkdir()
    (out / "split.json").write_text(json.dumps(split))
    result = train(TINY, old + new, TrainConfig(**{**SETTINGS, "output_dir": str(out)}))
    assert json.loads((out / "split.json").read_text()) == split  # accepted as it is
    assert result.model_path is not None


def test_refuses_changed_frames_and_other_settings(tmp_path):
    old = emt_structures(10, seed=1)
    cfg = TrainConfig(**SETTINGS, output_dir=str(tmp_path / "first"))
    train(TINY, old, cfg)
    previous = json.loads((tmp_path / "first/split.json").read_text())
    changed = emt_structures(10, seed=1)
    changed[3].positions[0, 0] += 1e-6
    with pytest.raises(ValueError, match="do not begin with the previous run's 10 frames"):
        extended_split(previous, read_frames(changed + emt_structures(4, seed=2)), cfg)
    with pytest.raises(ValueError, match="do not begin with the previous run's 10 frames"):
        extended_split(previous, read_frames(old[:8]), cfg)
    other = TrainConfig(**{**SETTINGS, "seed": 3})
    with pytest.raises(ValueError, match="made with seed=0, this run asks for 3"):
        extended_split(previous, read_frames(old), other)
