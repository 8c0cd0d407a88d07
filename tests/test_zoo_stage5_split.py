"""``scripts/zoo/train_strain_pairs.py`` on a machine without stage 4's run folder: the split is
the installed zoo model's, rebuilt from its card, and the frames that stage 5's data append to
the zoo model's data get roles of their own (they used to get none, and were never trained on).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
from conftest import emt_structures

from ase_equi.data import read_frames, split_frames
from ase_equi.training import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "zoo"))
import make_card
import make_replay_sets
import train_strain_pairs

FRACTIONS = dict(valid_fraction=0.2, test_fraction=0.2, seed=0)


@pytest.fixture
def zoo(tmp_path, monkeypatch):
    """An installed zoo model's card (settings) and its data: 10 frames, split by its seed."""
    old = read_frames(emt_structures(10, seed=1))
    rebuilt = split_frames(old, **FRACTIONS)
    card = {"card": {"training": {"settings": dict(FRACTIONS, epochs=1)}}}
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "metals.json").write_text(json.dumps(card))
    monkeypatch.setattr(train_strain_pairs, "ROOT", tmp_path)
    monkeypatch.setattr(make_replay_sets, "card_split", lambda name: (rebuilt, None, old))
    return old, rebuilt


def test_appended_frames_get_roles_and_the_zoo_roles_are_kept(zoo, tmp_path):
    old, rebuilt = zoo
    frames = old + read_frames(emt_structures(10, seed=2))
    config = TrainConfig(**FRACTIONS, epochs=1, output_dir=str(tmp_path / "out"))
    split = train_strain_pairs.zoo_split("metals", frames, config, tmp_path / "out")
    roles = ("train", "valid", "test", "isolated")
    every = sorted(k for role in roles for k in split[role])
    assert every == list(range(20))  # each frame exactly once
    for role in roles:
        assert split[role][: len(rebuilt[role])] == rebuilt[role]
    added = split_frames(frames[10:], **FRACTIONS)
    assert [k for k in split["train"] if k >= 10] == [10 + k for k in added["train"]]
    assert json.loads((tmp_path / "out" / "split.json").read_text()) == split
    # the training's own check accepts the written split for these frames
    from ase_equi.training.checkpoint import load_or_make_split

    assert load_or_make_split(tmp_path / "out", frames, 20, config, write=False) == split


def test_weighted_frames_are_the_zoo_frames_and_other_data_are_refused(zoo, tmp_path):
    old, _ = zoo
    config = TrainConfig(**FRACTIONS, epochs=1, output_dir=str(tmp_path / "a"))
    weighted = [dataclasses.replace(f, weight=20.0) for f in old]  # --eos-weight
    split = train_strain_pairs.zoo_split("metals", weighted, config, tmp_path / "a")
    assert sorted(k for r in ("train", "valid", "test") for k in split[r]) == list(range(10))
    other = read_frames(emt_structures(12, seed=3))
    with pytest.raises(SystemExit, match="do not begin with the zoo model's 10 frames"):
        train_strain_pairs.zoo_split("metals", other, config, tmp_path / "b")
    reseeded = TrainConfig(**{**FRACTIONS, "seed": 4}, epochs=1, output_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match="made with seed=0, this run asks for 4"):
        train_strain_pairs.zoo_split("metals", old, reseeded, tmp_path / "c")


def _run_with_split(folder: Path, roles: dict[str, list[int]], n_frames: int) -> Path:
    folder.mkdir(parents=True)
    split = {"train": [], "valid": [], "test": [], "isolated": [], "replay": [], **roles}
    (folder / "split.json").write_text(json.dumps({**split, "n_frames": n_frames}))
    return folder


def test_card_names_the_data_a_run_was_trained_on(tmp_path, monkeypatch):
    """The card names the set of the chain with as many frames as the run's split covers: the
    recipe's (9 frames), or an earlier one (6) when the split leaves the frames after it
    without a role, with a sentence saying so; any other split is refused."""
    import ase.io

    counts = {"silicon-gfn1xtb-v2.xyz.xz": 4, "silicon-gfn1xtb-v3.xyz.xz": 6}
    counts["silicon-gfn1xtb-v4.xyz.xz"] = 9
    files = {}
    for data, count in counts.items():
        files[data] = tmp_path / f"{count}.xyz"
        ase.io.write(files[data], emt_structures(count, seed=1), format="extxyz")
    monkeypatch.setattr(make_replay_sets, "kept_frames", lambda name, data: files[data])
    recipe = {**make_card.RECIPES["silicon-xtb"], **make_card.STAGE5["silicon-xtb"]}

    old_roles = {"train": [0, 2, 3, 5], "valid": [1], "test": [4]}
    run = _run_with_split(tmp_path / "gap", old_roles, n_frames=9)
    data, note = make_card.trained_data("silicon-xtb", run, recipe)
    assert data["data"] == make_card.STAGE4["silicon-xtb"]["data"]
    assert data["generate"] == make_card.STAGE4["silicon-xtb"]["generate"]
    assert "6 frames only" in note and "no role to the 3 frames" in note

    whole = _run_with_split(tmp_path / "whole", {**old_roles, "train": [0, 2, 3, 5, 6, 7, 8]}, 9)
    assert make_card.trained_data("silicon-xtb", whole, recipe) == (recipe, "")

    holes = _run_with_split(tmp_path / "holes", {**old_roles, "train": [0, 2, 3, 6]}, 9)
    with pytest.raises(SystemExit, match="frames without a role among the first 6"):
        make_card.trained_data("silicon-xtb", holes, recipe)
    seven = _run_with_split(tmp_path / "seven", {**old_roles, "train": [0, 2, 3, 5, 6]}, 9)
    with pytest.raises(SystemExit, match="covers 7 of 9 frames, and no data set"):
        make_card.trained_data("silicon-xtb", seven, recipe)


def test_card_names_a_later_set(tmp_path, monkeypatch):
    """A metals run on set v5 (``train_strain_pairs.py --data``) gets set v5 and the command
    that makes it on its card."""
    import ase.io

    chain = make_replay_sets.data_chain("metals")
    assert chain[-1] == "metals-emt-v5.xyz.xz"
    files = {}
    for count, data in enumerate(chain, start=2):
        files[data] = tmp_path / f"{count}.xyz"
        ase.io.write(files[data], emt_structures(count, seed=1), format="extxyz")
    monkeypatch.setattr(make_replay_sets, "kept_frames", lambda name, data: files[data])
    recipe = {**make_card.RECIPES["metals"], **make_card.STAGE5["metals"]}
    n = len(chain) + 1
    run = _run_with_split(tmp_path / "v5", {"train": list(range(n - 1)), "test": [n - 1]}, n)
    data, note = make_card.trained_data("metals", run, recipe)
    assert (data["data"], note) == ("data/metals-emt-v5.xyz.xz", "")
    assert data["generate"].startswith(make_card.STAGE5["metals"]["generate"] + "; ")
    assert data["generate"].endswith("python scripts/zoo/generate_metals_v5.py")


def test_a_start_run_trained_unweighted_extends_to_weighted_eos_frames(tmp_path):
    """``--start RUN --eos-weight X`` where RUN trained every frame at weight 1: RUN's roles,
    frame for frame, under the fingerprint of the reweighted frames (a split fingerprints the
    frames as trained), which the training's own check accepts; other data stay refused."""
    import train_zoo

    from ase_equi.training.checkpoint import load_or_make_split

    plain = read_frames(emt_structures(10, seed=1))
    start = tmp_path / "start"
    start_cfg = TrainConfig(**FRACTIONS, epochs=1, output_dir=str(start))
    start_split = load_or_make_split(start, plain, 10, start_cfg, write=True)
    weighted = [
        dataclasses.replace(f, weight=20.0) if k % 3 == 0 else f for k, f in enumerate(plain)
    ]
    out = tmp_path / "out"
    config = TrainConfig(**FRACTIONS, epochs=1, output_dir=str(out))
    with pytest.raises(ValueError, match="do not begin with the previous run's 10 frames"):
        train_zoo.extend_split(start, weighted, config)  # what the script did before
    folder = train_strain_pairs.reweighted_start(start, weighted, plain, out)
    split = train_zoo.extend_split(folder, weighted, config)
    for role in ("train", "valid", "test", "isolated"):
        assert split[role] == start_split[role]
    assert load_or_make_split(out, weighted, 10, config, write=False) == split
    # unweighted runs, and a start run with other data, take the start folder as it is
    assert train_strain_pairs.reweighted_start(start, plain, plain, tmp_path / "o2") == start
    other = read_frames(emt_structures(10, seed=3))
    heavy = [dataclasses.replace(f, weight=20.0) for f in other]
    assert train_strain_pairs.reweighted_start(start, heavy, other, tmp_path / "o3") == start
