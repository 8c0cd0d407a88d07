"""Train a zoo model (v2) from its committed reference data, resumable.

    export OMP_NUM_THREADS=1
    python scripts/zoo/train_zoo.py metals          # → runs/metals-v2/metals.json
    python scripts/zoo/train_zoo.py silicon-xtb     # → runs/silicon-xtb-v2/silicon-xtb.json
    python scripts/zoo/train_zoo.py molecules-pbe   # → runs/molecules-pbe-v2/molecules-pbe.json
    python scripts/zoo/train_zoo.py metals          # the same command resumes
    python scripts/zoo/train_zoo.py metals --stage 2     # → runs/metals-v2-stage2/metals.json
    python scripts/zoo/train_zoo.py metals --stage 3     # → runs/metals-v2-stage3/metals.json
    python scripts/zoo/make_card.py metals --run runs/metals-v2-stage5   # after stage 5
    python scripts/zoo/train_zoo.py silicon-xtb --stage 4   # set v3 (silicon's zoo model)
    python scripts/zoo/train_zoo.py silicon-xtb --channels 64 --prefix runs/silicon-xtb-c64
    python scripts/zoo/train_zoo.py silicon-xtb --stage 2 --prefix runs/silicon-xtb-c64  # ...

Every recipe keeps its v1 architecture (the card's ``config``) and adds the ZBL pair repulsion
(``pair_repulsion=True``, :mod:`ase_equi.model.zbl`; part of the model, so applied in training
and in the calculator alike). Training as v1: batch 4, AdamW lr 0.01, weight decay 5e-7, EMA
0.99, cosine schedule, float32, seed 0, 10 % validation and 10 % test; loss weights
energy:forces:stress = 10:100:1000 (no stress labels for molecules). Epochs: metals 100 (v1's
best epoch was its last of 60, still improving), silicon 60 (v1: 100 epochs of 39 steps;
v2 has 61 steps an epoch; the committed model's run began with 80 and was set to 60 at
epoch 13, which the resume allows), molecules 60 (v1: 150 epochs of 90 steps; v2 has about 260).

Stages 2 and 3 (``--stage N``, after stage N − 1 has finished): the previous stage's model
trained further on the same data and the same split (its ``split.json`` is copied), with a
fresh EMA (0.99) and a cosine to zero. Stage one's loss weights (10:100:1000) fit forces
first; the card's checks are energy differences (vacancy and surface energies) and stress
derivatives (elastic constants). Stage 2 is energy-weighted as the reference code's second
stage (1000:100:1000, lr 1e-3, ``STAGES``), stage 3 stress-weighted (1000:100:10000,
lr 5e-4). The metals model of the zoo ran stage 1 for 82 of its 100 cosine epochs and
stage 2 for 8 of 20 (both resumed with the shorter ``--epochs``), to finish in one session.
The molecules model ran stage 1 for 100 epochs (begun with 60 and lengthened to 100 at
epoch 47, as the resume allows), then stages 2 and 3; its data hold no stress labels, so the
stress weight of stage 3 has no term to act on and that stage is stage 2's energy weighting
continued at half the learning rate (test energy MAE 1.17 → 0.98 meV/atom).

Stage 4 (metals and silicon, ``STAGE4_DATA``) trains stage 3's model further, with stage 3's
settings, on set v3 (``scripts/zoo/generate_metals_v3.py``, ``generate_silicon_v3.py``): set
v2's frames followed by near-equilibrium homogeneous strains and vacancies at the reference's
own lattice constant (silicon's frames filtered by ``min_contact`` as in stage 1). Its split
(:func:`stage4_split`) keeps every v2 frame in the role it had, so no frame the earlier stages
were tested on is trained on; the new frames are split 80/10/10 by the same seed. The zoo's
silicon model is its stage 4. The metals model is stage 5 (``train_strain_pairs.py``: stage 4's
model trained further on set v4 with losses on stress slopes and defect energies;
``benchmarks/results/2026-12-01-zoo-stage5.md``).

Silicon's data: the v1 interstitial frames whose nearest contact is under 0.70 × the Si–Si
bond (1.65 Å; forces up to 186 eV/Å) are left out; the v2 relaxed split-interstitial frames
describe the defect instead. The kept frames are written to the run folder (not committed),
the same on every run. A checkpoint is written every 200 steps and at each epoch end; rerunning
the command resumes from the last one (only ``--epochs`` may change on a resume).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from ase.io import write

from ase_equi import ModelConfig, TrainConfig, load_model, train
from ase_equi.data import read_frames, read_structures
from ase_equi.training.checkpoint import extended_split

ROOT = Path(__file__).resolve().parents[2]

COMMON_ARCHITECTURE = dict(
    r_max=5.0,
    num_bessel=8,
    envelope_p=5,
    channels=32,
    max_L=1,
    num_interactions=2,
    correlation=(3, 3),
    radial_mlp=(32, 32),
    readout_hidden=16,
    residual_first=True,
    pair_repulsion=True,
)

COMMON_SETTINGS = dict(
    seed=0,
    batch_size=4,
    lr=0.01,
    weight_decay=5e-7,
    energy_weight=10.0,
    forces_weight=100.0,
    stress_weight=1000.0,
    ema_decay=0.99,
    scheduler="cosine",
    max_grad_norm=10.0,
    valid_fraction=0.1,
    test_fraction=0.1,
    checkpoint_every=200,
    dtype="float32",
    plots=True,
)

RECIPES = {
    "metals": dict(
        elements=[13, 28, 29, 46, 47, 78, 79],  # Al, Ni, Cu, Pd, Ag, Pt, Au
        max_ell=2,
        epochs=100,
        data="metals-emt-v2.xyz.xz",
        description=(
            "EMT bulk/strain/short-contact/vacancy/vacancy-hop/surface/cluster/liquid/alloy/MD "
            "frames from scripts/zoo/generate_metals_emt.py --set v2"
        ),
        level_of_theory="ASE EMT (effective-medium theory; ASE 3.29 default parameters)",
    ),
    "silicon-xtb": dict(
        elements=[14],
        max_ell=3,
        epochs=60,
        data="silicon-gfn1xtb-v2.xyz.xz",
        min_contact=1.65,
        description=(
            "Si cells at GFN1-xTB: rattled, strained (ions relaxed) and EOS crystal, "
            "MD 300-1600 K, liquid, amorphous, vacancy and split interstitial (relaxed), "
            "(001)/(111) surfaces "
            "(scripts/zoo/generate_silicon_xtb.py, generate_silicon_v2.py)"
        ),
        level_of_theory="GFN1-xTB (tblite 0.8), periodic, \u0393 point",
    ),
    "molecules-pbe": dict(
        elements=[1, 6, 7, 8],
        max_ell=3,
        epochs=60,
        data="molecules-pbe-v2.xyz.xz",
        description=(
            "35 small H/C/N/O molecules: GFN2-xTB Langevin MD snapshots at 300/600/1000 K "
            "relabelled with PBE/def2-SVP; isolated atoms (UKS) for E0 "
            "(scripts/zoo/generate_molecules_v2.py)"
        ),
        level_of_theory=(
            "DFT PBE/def2-SVP, density fitting (def2-universal-jkfit), PySCF 2.14, gas phase"
        ),
    ),
}


def training_frames(recipe: dict, out: Path) -> str:
    """The data file to train on: the committed one, or its frames with no contact under
    ``min_contact`` (Å) written once to ``out``."""
    path = ROOT / "data" / recipe["data"]
    if "min_contact" not in recipe:
        return str(path)
    kept_path = out / "training-frames.xyz"
    if not kept_path.exists():
        kept = []
        for atoms in (s.atoms for s in read_structures(path)):
            d = atoms.get_all_distances(mic=True)
            np.fill_diagonal(d, np.inf)
            if d.min() >= recipe["min_contact"]:
                kept.append(atoms)
        out.mkdir(parents=True, exist_ok=True)
        write(kept_path, kept, format="extxyz")
    return str(kept_path)


STAGES = {
    2: dict(energy_weight=1000.0, lr=1e-3, epochs=20),
    3: dict(energy_weight=1000.0, stress_weight=10000.0, lr=5e-4, epochs=12),
    4: dict(energy_weight=1000.0, stress_weight=10000.0, lr=5e-4, epochs=12),
}
# stage 4 trains on a larger data set whose first frames are the recipe's data
STAGE4_DATA = {"metals": "metals-emt-v3.xyz.xz", "silicon-xtb": "silicon-gfn1xtb-v3.xyz.xz"}
STAGE4_DESCRIPTION = {
    "metals": (
        "EMT bulk/strain/short-contact/vacancy/vacancy-hop/surface/cluster/liquid/alloy/MD "
        "frames (set v2) plus near-equilibrium elastic-strain, vacancy and alloy frames at "
        "EMT's own lattice constants (set v3, scripts/zoo/generate_metals_v3.py)"
    ),
    "silicon-xtb": (
        "Si cells at GFN1-xTB: rattled, strained (ions relaxed) and EOS crystal, "
        "MD 300-1600 K, liquid, amorphous, vacancy and split interstitial (relaxed), "
        "(001)/(111) surfaces, and the crystal under small homogeneous strains and the "
        "unrelaxed vacancy (scripts/zoo/generate_silicon_xtb.py, generate_silicon_v2.py, "
        "generate_silicon_v3.py)"
    ),
}


def extend_split(previous: Path, frames: list, cfg: TrainConfig) -> dict:
    """``split.json`` of a run whose data are the run in ``previous``'s with frames appended:
    that run's split, every frame in its role, the appended frames split by the same seed and
    fractions (:func:`extended_split`). Written once into ``cfg.output_dir``; read back on a
    rerun. Returns the split."""
    out = Path(cfg.output_dir)
    path = out / "split.json"
    if not path.exists():
        old = json.loads((previous / "split.json").read_text())
        split = extended_split(old, frames, cfg)
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(split, indent=1))
    return json.loads(path.read_text())


def stage4_split(previous: Path, data: str, elements: list[int], cfg: TrainConfig) -> None:
    """``split.json`` of stage 4: stage 3's split extended to the larger data set."""
    if not (Path(cfg.output_dir) / "split.json").exists():
        extend_split(previous, read_frames(data, elements=elements), cfg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(RECIPES))
    parser.add_argument("--out", help="output folder (resumes; default runs/NAME-v2)")
    parser.add_argument("--epochs", type=int, help="default: the recipe's")
    parser.add_argument(
        "--stage", type=int, default=1, choices=[1, *STAGES], help="train a finished stage further"
    )
    parser.add_argument(
        "--prefix",
        help="folder of stage 1, whose stage N is PREFIX-stageN (default runs/NAME-v2); for "
        "a variant of the recipe trained through its stages",
    )
    parser.add_argument(
        "--channels", type=int, help="stage 1: hidden channels (default: the recipe's, 32)"
    )
    args = parser.parse_args()
    if args.channels is not None and args.stage != 1:
        parser.error("--channels is a stage-1 setting: later stages train the previous model")
    recipe = RECIPES[args.name]
    prefix = args.prefix or f"runs/{args.name}-v2"
    folders = {1: Path(prefix)}
    folders.update({n: Path(f"{prefix}-stage{n}") for n in STAGES})
    out = Path(args.out or folders[args.stage])
    settings = dict(COMMON_SETTINGS, epochs=args.epochs or recipe["epochs"])
    if args.stage == 4:
        if args.name not in STAGE4_DATA:
            parser.error(f"stage 4 has no data for {args.name}")
        recipe = dict(
            recipe, data=STAGE4_DATA[args.name], description=STAGE4_DESCRIPTION[args.name]
        )
    data = training_frames(recipe, out)
    if args.stage > 1:
        stage = STAGES[args.stage]
        settings.update(stage, epochs=args.epochs or stage["epochs"])
    config = TrainConfig(**settings, output_dir=str(out))
    if args.stage > 1:
        previous = folders[args.stage - 1]
        out.mkdir(parents=True, exist_ok=True)
        if args.stage == 4:
            stage4_split(previous, data, recipe["elements"], config)
        elif not (out / "split.json").exists():
            shutil.copyfile(previous / "split.json", out / "split.json")
        model = load_model(previous / f"{args.name}.json", dtype=torch.float32).model
    else:
        architecture = dict(COMMON_ARCHITECTURE, elements=recipe["elements"])
        architecture["max_ell"] = recipe["max_ell"]
        if args.channels is not None:
            architecture["channels"] = args.channels
        model = ModelConfig(**architecture)
    result = train(
        model,
        data,
        config,
        name=args.name,
        level_of_theory=recipe["level_of_theory"],
        data_description=recipe["description"],
    )
    print(f"model: {result.model_path}")


if __name__ == "__main__":
    main()
