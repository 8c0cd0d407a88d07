"""Stage 5 of a zoo model: stage 4's settings, plus losses on stress slopes and defect energies.

    export OMP_NUM_THREADS=1
    python scripts/zoo/generate_metals_v4.py       # metals: set v4 (set v3 + EOS and hosts)
    python scripts/zoo/generate_silicon_v4.py      # silicon: set v4 (set v3 + hosts)
    python scripts/zoo/train_strain_pairs.py metals          # → runs/metals-v2-stage5/
    python scripts/zoo/make_card.py metals --run runs/metals-v2-stage5 --check-only \\
        --out runs/metals-v2-stage5/card

Stages 3 and 4 (``train_zoo.py``) fit each strained frame's stress to about 1 meV/Å³ and
still miss elastic constants by 4–6 % (metals: Ni C11, Al C11 and C12, Pt C44) or 13–17 %
(silicon), and every metal's vacancy energy by 0.5–5 %, always low: the slope dσ/dε between
neighbouring strains, and the 1 eV difference between a defect cell and its host, are small
against the per-frame noise the loss tolerates. This stage trains stage 4's model further with
two more terms, both built from pairs of training-split frames and their reference labels only:

- :mod:`strain_pairs`: the slope of the stress between homogeneously strained copies of one
  structure (``--weight``; steps up to ``--max-strain``, so the equation-of-state frames of set
  v4 pin the secant bulk modulus too);
- :mod:`defect_pairs`: the formation energy of a defect cell against its perfect host in the
  same cell (``--defect-weight``; sets v4 add the hosts of the earlier sets' defect cells).

Settings: stage 4's (energy:forces:stress 1000:100:10000, cosine, batch 4) with ``--lr`` and
``--epochs`` (a shorter continuation). Data: ``STAGE5_DATA`` (sets v4, whose first frames are
set v3's); the split is stage 4's, extended frame for frame to the new frames
(:func:`~ase_equi.training.checkpoint.extended_split`), so no frame earlier stages were tested
on is trained on. Resumable: rerun the same command.

Other starts, data and cutoffs (``benchmarks/results/2026-12-01-zoo-cutoff.md``): ``--start
RUN`` trains RUN's model instead of stage 4's, on RUN's split extended to the data
(``--start models``: the installed zoo model, on its split rebuilt from its card and
extended); ``--data FILE`` trains on a later set that begins with the stage-5 set's frames
(``LATER_DATA``: metals set v5, adatoms), its new frames split by the same seed; ``--r-max
R`` keeps every learned weight of it but sets the cutoff to R (the Bessel wave numbers nπ/R,
the envelope, and avg_num_neighbors measured anew on the training split); ``--num-bessel N``
widens the radial basis to N functions (the new ones start at zero weight, so the start is
the same function at the same cutoff; ``scripts/zoo/al_radial_resolution.py`` for why);
``--loss-weights 1`` or ``2`` takes those stages' energy:forces:stress weights instead of
stage 4's; ``--weight 0`` and ``--defect-weight 0`` leave the pair terms out. For example,
a 6 Å model in two steps::

    python scripts/zoo/train_strain_pairs.py metals --start runs/metals-v2-stage5 --r-max 6.0 \
        --loss-weights 1 --weight 0 --defect-weight 0 --lr 5e-3 --epochs 15 --out RUN1
    python scripts/zoo/train_strain_pairs.py metals --start RUN1 --lr 1e-3 --epochs 10 --out RUN2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from defect_pairs import DefectPairPenalty
from paired_frames import PairSampling
from strain_pairs import StrainPairPenalty
from train_zoo import (
    COMMON_SETTINGS,
    RECIPES,
    STAGE4_DESCRIPTION,
    STAGES,
    extend_split,
    training_frames,
)

from ase_equi import TrainConfig, load_model, train
from ase_equi.data import read_frames
from ase_equi.data.statistics import data_statistics
from ase_equi.model.mace import MaceModel

ROOT = Path(__file__).resolve().parents[2]
STAGE5_DATA = {"metals": "metals-emt-v4.xyz.xz", "silicon-xtb": "silicon-gfn1xtb-v4.xyz.xz"}
STAGE5_DESCRIPTION = {
    "metals": STAGE4_DESCRIPTION["metals"] + ", and each element's unrattled equation of state "
    "and perfect vacancy hosts (set v4, scripts/zoo/generate_metals_v4.py)",
    "silicon-xtb": STAGE4_DESCRIPTION["silicon-xtb"] + ", and the perfect crystal at three "
    "lattice constants (set v4, scripts/zoo/generate_silicon_v4.py)",
}
# later sets, each beginning with the frames of the recipe's stage-5 set (``--data``): what they
# add, and the command that makes them
LATER_DATA = {
    "metals": {
        "metals-emt-v5.xyz.xz": (
            "adatoms on fcc(100), (110) and (111) surfaces (set v5)",
            "python scripts/zoo/generate_metals_v5.py",
        )
    }
}
# the recipes' choices: silicon's defect energies are 2-3 eV and missed by 0.3-1 eV, against
# the metals' 1 eV missed by 10-50 meV, so its defect term is weighted less
DEFAULTS = {
    "metals": dict(weight=1000.0, defect_weight=50.0, max_strain=0.03, interstitials=True),
    "silicon-xtb": dict(weight=300.0, defect_weight=2.0, max_strain=0.03, interstitials=True),
}


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(STAGE5_DATA))
    parser.add_argument("--weight", type=float, help="of the stress-slope term")
    parser.add_argument("--defect-weight", type=float, help="of the defect-energy term")
    parser.add_argument("--max-strain", type=float, help="largest strain step of a pair")
    parser.add_argument(
        "--relative", action="store_true", help="slope errors relative to the reference slope"
    )
    parser.add_argument(
        "--loss-weights",
        type=int,
        choices=(1, 2, 4),
        default=4,
        help="the energy:forces:stress weights of train_zoo.py's stage N (1: 10:100:1000, "
        "2: 1000:100:1000, 4: 1000:100:10000, the default)",
    )
    parser.add_argument(
        "--eos-weight",
        type=float,
        default=1.0,
        help="loss weight of the equation-of-state frames (config_type 'eos'; 1: as the others)",
    )
    parser.add_argument(
        "--data",
        help="a later data set (file name in data/) whose first frames are the stage-5 set's: "
        + "; ".join(f"{n}: {', '.join(sets)}" for n, sets in LATER_DATA.items()),
    )
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--out", help="output folder (default runs/NAME-v2-stage5)")
    parser.add_argument(
        "--start", help="run folder whose model is trained further (default runs/NAME-v2-stage4)"
    )
    parser.add_argument(
        "--r-max",
        type=float,
        help="a new cutoff (Å): the start model's weights with the new radial basis "
        "(warm start; avg_num_neighbors measured anew on the training split)",
    )
    parser.add_argument(
        "--num-bessel",
        type=int,
        help="more radial basis functions than the start model's (the new ones start at zero "
        "weight: the same function at the same cutoff)",
    )
    args = parser.parse_args()
    if args.data is not None and args.data not in LATER_DATA.get(args.name, {}):
        parser.error(f"--data {args.data}: {args.name} has no such later set")
    args.interstitials = None
    for key, value in DEFAULTS[args.name].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def penalties(args, frames, train_ids, model):
    """The stage's extra loss terms, as one ``penalty`` callable: 16 strain pairs and 2 defect
    pairs a step (float32 graphs, as the training)."""
    config = model.config
    terms = []
    if args.weight > 0:
        terms.append(
            StrainPairPenalty(
                frames,
                train_ids,
                PairSampling(config.elements, config.r_max, pairs_per_step=16, seed=0),
                weight=args.weight,
                max_strain=args.max_strain,
                relative=args.relative,
            )
        )
    if args.defect_weight > 0:
        sampling = PairSampling(config.elements, config.r_max, pairs_per_step=2, seed=1)
        terms.append(
            DefectPairPenalty(
                frames,
                train_ids,
                sampling,
                weight=args.defect_weight,
                interstitials=args.interstitials,
            )
        )
    for term in terms:
        print(f"{type(term).__name__}: {term.num_pairs} pairs, weight {term.weight:g}", flush=True)
    if not terms:
        return None
    return lambda net: sum(term(net) for term in terms)


def with_cutoff(
    model: MaceModel, r_max: float, frames: list, num_bessel: int | None = None
) -> MaceModel:
    """``model``'s weights under the cutoff ``r_max``: the Bessel wave numbers nπ/r_max, the
    envelope and the neighbour count that normalises the messages are the new cutoff's (the
    count measured on ``frames``, as for a new model); every learned weight is kept.

    ``num_bessel`` (≥ the model's) widens the radial basis: the first layer of each radial
    MLP gets zero weights for the new functions and its kept weights scaled by
    √(new/old), which undoes the layer's 1/√(inputs) normalisation, so that at an unchanged
    cutoff the widened model is the same function (``tests/test_zoo_cutoff_warm_start.py``).
    """
    config = model.config
    num_bessel = config.num_bessel if num_bessel is None else num_bessel
    if num_bessel < config.num_bessel:
        raise ValueError(f"num_bessel {num_bessel} < the model's {config.num_bessel}")
    neighbours = data_statistics(frames, config.elements, r_max).avg_num_neighbors
    wider = dataclasses.replace(config, r_max=r_max, avg_num_neighbors=neighbours)
    new = MaceModel(dataclasses.replace(wider, num_bessel=num_bessel)).to(torch.float32)
    kept = {k: v for k, v in model.state_dict().items() if not k.startswith("radial_embedding.")}
    for key, weight in new.state_dict().items():  # the layers that read the radial basis
        if key in kept and kept[key].shape != weight.shape:
            padded = torch.zeros_like(weight)
            padded[: config.num_bessel] = kept[key] * math.sqrt(num_bessel / config.num_bessel)
            kept[key] = padded
    missing, unexpected = new.load_state_dict(kept, strict=False)
    if unexpected or not all(k.startswith("radial_embedding.") for k in missing):
        raise RuntimeError(f"warm start: weights not carried over: {missing + unexpected}")
    print(
        f"warm start at r_max {r_max:g} Å (was {config.r_max:g}), {num_bessel} radial basis "
        f"functions (was {config.num_bessel}): avg_num_neighbors "
        f"{config.avg_num_neighbors:.2f} -> {neighbours:.2f}",
        flush=True,
    )
    return new


def zoo_split(name: str, frames: list, config: TrainConfig, out: Path) -> dict:
    """``OUT/split.json`` of stage 5 for a machine without stage 4's run folder: the split of
    the installed zoo model rebuilt from its card's seed and fractions
    (``make_replay_sets.card_split``, checked against the card's split sizes), then extended
    frame for frame to the frames this stage's data append to the zoo model's data
    (:func:`~ase_equi.training.checkpoint.extended_split`), as with stage 4's own split."""
    from make_replay_sets import card_split

    from ase_equi.training.checkpoint import extended_split, frames_fingerprint

    rebuilt, _, zoo_frames = card_split(name)
    n_old = len(zoo_frames)
    plain = [dataclasses.replace(f, weight=1.0) for f in frames[:n_old]]  # --eos-weight aside
    if len(frames) < n_old or frames_fingerprint(plain) != frames_fingerprint(zoo_frames):
        raise SystemExit(f"{name}: the data do not begin with the zoo model's {n_old} frames")
    card = json.loads((ROOT / "models" / f"{name}.json").read_text())["card"]
    made_with = card["training"]["settings"]  # extended_split refuses other seeds or fractions
    previous = {
        **{kind: rebuilt[kind] for kind in ("valid", "test", "train", "isolated")},
        **{key: made_with[key] for key in ("seed", "valid_fraction", "test_fraction")},
        "n_frames": n_old,
        "fingerprint": frames_fingerprint(frames[:n_old]),
    }
    split = extended_split(previous, frames, config)
    out.mkdir(parents=True, exist_ok=True)
    (out / "split.json").write_text(json.dumps(split, indent=1))
    return split


def reweighted_start(start: Path, frames: list, plain: list, out: Path) -> Path:
    """The folder whose ``split.json`` this run's split extends: ``start``, or, when the start
    run trained on these frames with every weight 1 and this run weighs its EOS frames
    (``--eos-weight``), a copy of that split in ``out/start-split/`` stamped with the
    fingerprint of the reweighted frames (a split fingerprints the frames as trained, weights
    included; the roles are the start run's, frame for frame). Other data are refused later,
    by :func:`~ase_equi.training.checkpoint.extended_split`."""
    from ase_equi.training.checkpoint import frames_fingerprint

    if (out / "split.json").exists() or plain is frames:
        return start
    old = json.loads((start / "split.json").read_text())
    n_old = int(old["n_frames"])
    if len(plain) < n_old or frames_fingerprint(plain[:n_old]) != old.get("fingerprint"):
        return start  # the start run's own weights were these (or the data differ)
    folder = out / "start-split"
    folder.mkdir(parents=True, exist_ok=True)
    restamped = {**old, "fingerprint": frames_fingerprint(frames[:n_old])}
    (folder / "split.json").write_text(json.dumps(restamped, indent=1))
    return folder


def cutoff_note(args: argparse.Namespace) -> str:
    note = "" if args.r_max is None else f" with the cutoff set to {args.r_max:g} Å"
    if args.num_bessel is not None:
        note += f" and {args.num_bessel} radial basis functions"
    return note


def main() -> None:
    args = parse()
    name = args.name
    stage4 = ROOT / "runs" / f"{name}-v2-stage4"
    out = Path(args.out) if args.out else ROOT / "runs" / f"{name}-v2-stage5"
    recipe = dict(RECIPES[name], data=args.data or STAGE5_DATA[name])
    frames = read_frames(training_frames(recipe, out), elements=recipe["elements"])
    plain = frames  # as read: every frame's weight 1
    if args.eos_weight != 1.0:
        frames = [
            dataclasses.replace(f, weight=args.eos_weight) if f.config_type == "eos" else f
            for f in frames
        ]
    weights = {} if args.loss_weights == 1 else STAGES[args.loss_weights]
    settings = {**COMMON_SETTINGS, **weights, "epochs": args.epochs, "lr": args.lr}
    config = TrainConfig(**settings, output_dir=str(out))
    start = Path(args.start) if args.start else stage4
    # the start model's split, extended to the frames the data append: none of its
    # validation or test frames is trained on
    if (out / "split.json").exists() or (start / "split.json").exists():
        split = extend_split(reweighted_start(start, frames, plain, out), frames, config)
    else:  # the zoo model (--start models), or stage 4's run is not on this machine
        split = zoo_split(name, frames, config, out)
    model = load_model(start / f"{name}.json", dtype=torch.float32).model
    if args.r_max is not None or args.num_bessel is not None:
        r_max = model.config.r_max if args.r_max is None else args.r_max
        model = with_cutoff(model, r_max, [frames[k] for k in split["train"]], args.num_bessel)
    later = LATER_DATA.get(name, {}).get(args.data or "")
    data_note = f", and {later[0]}, {later[1].removeprefix('python ')}" if later else ""
    description = (
        f"{STAGE5_DESCRIPTION[name]}{data_note}; trained further from {start.name}"
        f"{cutoff_note(args)}, loss weights of stage {args.loss_weights}, + stress-slope "
        f"(weight {args.weight:g}) and defect-energy (weight {args.defect_weight:g}) pair "
        f"losses{'' if args.eos_weight == 1 else f', EOS frames weighted {args.eos_weight:g}'} "
        "(scripts/zoo/train_strain_pairs.py)"
    )
    result = train(
        model,
        frames,
        config,
        name=name,
        level_of_theory=recipe["level_of_theory"],
        data_description=description,
        penalty=penalties(args, frames, split["train"], model),
    )
    print(f"model: {result.model_path}")


if __name__ == "__main__":
    main()
