"""Write each zoo model's replay set and test set (shipped beside the model, used by fine-tuning).

For zoo model NAME trained on DATA, the split of its training run is rebuilt exactly
(``split_frames`` with the seed and fractions recorded on the card: the test errors on the card
are reproduced on it), then

- ``models/NAME-replay.xyz.xz``: a seeded sample of at most ``--count`` frames of the
  **training** split (never a validation or test frame);
- ``models/NAME-test.xyz.xz``: the whole test split (what the card's test errors were
  measured on), for measuring forgetting after fine-tuning.

Frames are written as read (labels, ``config_type`` and the other ``info`` keys kept).

    python scripts/zoo/make_replay_sets.py            # all zoo models
    python scripts/zoo/make_replay_sets.py metals --count 300
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import ase.io
import numpy as np

from ase_equi.data import read_frames, split_frames

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
from train_zoo import RECIPES, STAGE4_DATA, training_frames  # noqa: E402

NAMES = ("metals", "molecules-pbe", "silicon-xtb")


def training_data(name: str) -> Path:
    """The data file zoo model ``name`` was trained on: the file after the arrow of the card's
    ``data_generation``; for a v2 recipe of ``train_zoo.py`` that leaves frames out (silicon's
    short contacts), the kept frames, rebuilt the same way (also for its stage-4 data)."""
    card = json.loads((ROOT / "models" / f"{name}.json").read_text())["card"]
    path = ROOT / card["data_generation"].split("→")[-1].strip()
    recipe = RECIPES.get(name, {})
    if "min_contact" not in recipe:
        return path
    if path.name == recipe.get("data"):
        return Path(training_frames(recipe, ROOT / "runs" / f"{name}-v2"))
    if path.name == STAGE4_DATA.get(name):
        stage4 = dict(recipe, data=path.name)
        return Path(training_frames(stage4, ROOT / "runs" / f"{name}-v2-stage4"))
    return path


def base_frame_count(name: str) -> int | None:
    """For a model trained on its recipe's stage-4 data (``train_zoo.STAGE4_DATA``), the number
    of leading frames that are the recipe's own (kept) data, whose split stage 4 kept as it was
    (``train_zoo.stage4_split``); ``None`` for a model trained on one data set."""
    card = json.loads((ROOT / "models" / f"{name}.json").read_text())["card"]
    if Path(card["data_generation"].split("→")[-1].strip()).name != STAGE4_DATA.get(name):
        return None
    base = training_frames(RECIPES[name], ROOT / "runs" / f"{name}-v2")
    return len(read_frames(base))


def rebuilt_split(frames: list, settings: dict, n_base: int | None) -> dict[str, list[int]]:
    """:func:`split_frames` with the card's seed and fractions; with ``n_base``, over the first
    ``n_base`` frames and then over the rest (indices shifted), as stage 4 extends a split."""
    options = {k: settings[k] for k in ("valid_fraction", "test_fraction", "seed")}
    if n_base is None:
        return split_frames(frames, **options)
    split = split_frames(frames[:n_base], **options)
    added = split_frames(frames[n_base:], **options)
    return {kind: split[kind] + [n_base + k for k in added[kind]] for kind in split}


def training_split(name: str) -> tuple[dict[str, list[int]], list]:
    """The split of zoo model ``name``'s training run, rebuilt from the seed and fractions on
    its card (frame indices per kind, as :func:`split_frames` gives them; a stage-4 model's
    as :func:`rebuilt_split` extends it), and the data's labelled Atoms in the order of those
    indices."""
    card = json.loads((ROOT / "models" / f"{name}.json").read_text())["card"]
    path = training_data(name)
    frames = read_frames(path)
    split = rebuilt_split(frames, card["training"]["settings"], base_frame_count(name))
    sizes = card["training_data"]
    if (len(split["train"]), len(split["test"])) != (sizes["n_train"], sizes["n_test"]):
        raise SystemExit(f"{name}: the rebuilt split does not match the card's split sizes")
    recorded = ROOT / card["card_script"].split("--run ")[-1].strip() / "split.json"
    if recorded.exists():  # the training run is on this machine: the lists must be its own
        kept = json.loads(recorded.read_text())
        if any(sorted(kept[k]) != sorted(split[k]) for k in ("train", "valid", "test")):
            raise SystemExit(f"{name}: the rebuilt split differs from {recorded}")
    images = ase.io.read(path, ":")
    return split, [images[frame.index] for frame in frames]


def write_sets(name: str, count: int, seed: int = 0) -> dict[str, int]:
    """Write ``NAME-replay.xyz.xz`` and ``NAME-test.xyz.xz``; returns the frame counts."""
    split, images = training_split(name)
    train = split["train"] + split["isolated"]  # isolated atoms fix E0: always rehearsed
    rng = np.random.default_rng(seed)
    chosen = train if len(train) <= count else sorted(rng.choice(train, count, replace=False))
    out = {}
    for kind, ids in (("replay", chosen), ("test", split["test"])):
        target = ROOT / "models" / f"{name}-{kind}.xyz.xz"
        ase.io.write(target, [images[k] for k in ids], format="extxyz")
        out[kind] = len(ids)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", default=list(NAMES))
    parser.add_argument("--count", type=int, default=300, help="replay frames per model")
    args = parser.parse_args()
    for name in args.names:
        print(name, write_sets(name, args.count))


if __name__ == "__main__":
    main()
