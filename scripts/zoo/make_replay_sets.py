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

from ase_equi.data import read_frames, read_structures, split_frames

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
from train_strain_pairs import LATER_DATA, STAGE5_DATA  # noqa: E402
from train_zoo import RECIPES, STAGE4_DATA, training_frames  # noqa: E402

NAMES = ("metals", "molecules-pbe", "silicon-xtb")


def data_chain(name: str) -> list[str]:
    """The data files of zoo model ``name``'s stages, in order: the recipe's set (stage 1–3),
    then stage 4's (``train_zoo.STAGE4_DATA``), stage 5's (``train_strain_pairs.STAGE5_DATA``)
    and the later sets (``train_strain_pairs.LATER_DATA``), each beginning with the frames of
    the one before."""
    chain = [RECIPES[name]["data"]]
    for table in (STAGE4_DATA, STAGE5_DATA):
        if name in table:
            chain.append(table[name])
    return chain + list(LATER_DATA.get(name, {}))


def kept_frames(name: str, data: str) -> Path:
    """Data file ``data`` of ``name``'s chain as trained on: for a recipe that leaves frames
    out (silicon's short contacts), the kept frames, rebuilt as that stage's run did."""
    recipe = RECIPES[name]
    if "min_contact" not in recipe:
        return ROOT / "data" / data
    stage = data_chain(name).index(data)
    folder = ROOT / "runs" / (f"{name}-v2" if stage == 0 else f"{name}-v2-stage{stage + 3}")
    return Path(training_frames(dict(recipe, data=data), folder))


def training_data(name: str) -> Path:
    """The data file zoo model ``name`` was trained on: the file after the arrow of the card's
    ``data_generation`` (as trained on, see :func:`kept_frames`)."""
    card = json.loads((ROOT / "models" / f"{name}.json").read_text())["card"]
    path = ROOT / card["data_generation"].split("→")[-1].strip()
    if name in RECIPES and path.name in data_chain(name):
        return kept_frames(name, path.name)
    return path


def frame_bounds(name: str) -> list[int]:
    """The frame counts of the data sets before the one zoo model ``name`` was trained on in
    its chain (:func:`data_chain`): where stages 4 and 5 extended the split they inherited
    (``extended_split``). Empty for a model trained on its recipe's set."""
    card = json.loads((ROOT / "models" / f"{name}.json").read_text())["card"]
    data = Path(card["data_generation"].split("→")[-1].strip()).name
    if name not in RECIPES or data not in data_chain(name):
        return []
    earlier = data_chain(name)[: data_chain(name).index(data)]
    return [len(read_frames(kept_frames(name, d))) for d in earlier]


def rebuilt_split(frames: list, settings: dict, bounds: list[int]) -> dict[str, list[int]]:
    """:func:`split_frames` with the card's seed and fractions over each segment of ``frames``
    between ``bounds`` (indices shifted), as stages 4 and 5 extend the split they inherit."""
    options = {k: settings[k] for k in ("valid_fraction", "test_fraction", "seed")}
    edges = [0, *bounds, len(frames)]
    split: dict[str, list[int]] = {}
    for start, stop in zip(edges[:-1], edges[1:], strict=True):
        part = split_frames(frames[start:stop], **options)
        for kind, ids in part.items():
            split.setdefault(kind, []).extend(start + k for k in ids)
    return split


def card_split(name: str) -> tuple[dict[str, list[int]], Path, list]:
    """The split of zoo model ``name``'s training run, rebuilt from the seed and fractions on
    its card (frame indices per kind, as :func:`split_frames` gives them; a stage-4 or -5
    model's as :func:`rebuilt_split` extends it), checked against the card's split sizes and
    against the run's own ``split.json`` when the run is on this machine; the data file and
    its frames."""
    card = json.loads((ROOT / "models" / f"{name}.json").read_text())["card"]
    path = training_data(name)
    frames = read_frames(path)
    split = rebuilt_split(frames, card["training"]["settings"], frame_bounds(name))
    sizes = card["training_data"]
    if (len(split["train"]), len(split["test"])) != (sizes["n_train"], sizes["n_test"]):
        raise SystemExit(f"{name}: the rebuilt split does not match the card's split sizes")
    recorded = ROOT / card["card_script"].split("--run ")[-1].strip() / "split.json"
    if recorded.exists():  # the training run is on this machine: the lists must be its own
        kept = json.loads(recorded.read_text())
        if any(sorted(kept[k]) != sorted(split[k]) for k in ("train", "valid", "test")):
            raise SystemExit(f"{name}: the rebuilt split differs from {recorded}")
    return split, path, frames


def training_split(name: str) -> tuple[dict[str, list[int]], list]:
    """:func:`card_split` and the data's labelled Atoms in the order of its indices."""
    split, path, frames = card_split(name)
    images = [s.atoms for s in read_structures(path)]
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
