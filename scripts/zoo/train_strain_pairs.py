"""Stage 5 of a zoo model: stage 4's data, split and settings, plus the strain-pair slope loss.

    export OMP_NUM_THREADS=1
    python scripts/zoo/train_strain_pairs.py metals [--weight 100] [--epochs 8] [--lr 2e-4]
    python scripts/zoo/make_card.py metals --run runs/metals-v2-stage5-w100 --check-only \\
        --out runs/metals-v2-stage5-w100/card

Stages 3 and 4 (``train_zoo.py``) fit each strained frame's stress to about 1 meV/Å³ and
still miss elastic constants by 4–6 % (metals: Ni C11, Al C11 and C12, Pt C44) or 13–17 %
(silicon): the slope dσ/dε between neighbouring strains is small against that noise.
:mod:`strain_pairs` adds a term on the slope itself, from pairs of training frames that are
one structure under two homogeneous strains (their reference stresses only). This script
trains stage 4's model further with it, with stage 4's settings but ``--lr`` and ``--epochs``
(a shorter continuation), and writes ``runs/NAME-v2-stage5-wW/`` (resumable: rerun the same
command). The split is stage 4's (copied), so no frame earlier stages were tested on is
trained on, and only training-split frames enter the pairs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from strain_pairs import StrainPairPenalty
from train_zoo import (
    COMMON_SETTINGS,
    RECIPES,
    STAGE4_DATA,
    STAGE4_DESCRIPTION,
    STAGES,
    training_frames,
)

from ase_equi import TrainConfig, load_model, train
from ase_equi.data import read_frames

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(STAGE4_DATA))
    parser.add_argument("--weight", type=float, default=100.0, help="of the slope term")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-4)
    args = parser.parse_args()
    name = args.name
    stage4 = ROOT / "runs" / f"{name}-v2-stage4"
    out = ROOT / "runs" / f"{name}-v2-stage5-w{args.weight:g}"
    recipe = dict(RECIPES[name], data=STAGE4_DATA[name])
    frames = read_frames(training_frames(recipe, stage4), elements=recipe["elements"])
    settings = {**COMMON_SETTINGS, **STAGES[4], "epochs": args.epochs, "lr": args.lr}
    config = TrainConfig(**settings, output_dir=str(out))
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "split.json").exists():
        shutil.copyfile(stage4 / "split.json", out / "split.json")
    split = json.loads((out / "split.json").read_text())
    model = load_model(stage4 / f"{name}.json", dtype=torch.float32).model
    penalty = StrainPairPenalty(
        frames,
        split["train"],
        weight=args.weight,
        elements=recipe["elements"],
        r_max=model.config.r_max,
    )
    print(
        f"strain pairs: {penalty.num_pairs} pairs of {penalty.num_frames} training frames in "
        f"{len(penalty.groups)} groups; weight {args.weight:g}",
        flush=True,
    )
    description = (
        f"{STAGE4_DESCRIPTION[name]}; stage 5: + strain-pair slope loss (weight "
        f"{args.weight:g}, scripts/zoo/train_strain_pairs.py)"
    )
    result = train(
        model,
        frames,
        config,
        name=name,
        level_of_theory=recipe["level_of_theory"],
        data_description=description,
        penalty=penalty,
    )
    print(f"model: {result.model_path}")


if __name__ == "__main__":
    main()
