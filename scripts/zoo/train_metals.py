"""Train the ``metals`` zoo model (v2): the v1 architecture with the ZBL pair repulsion, on
``data/metals-emt-v2.xyz.xz``, resumable.

    export OMP_NUM_THREADS=1
    python scripts/zoo/train_metals.py                       # → runs/metals-v2/metals.json
    python scripts/zoo/train_metals.py                       # the same command resumes
    python scripts/zoo/make_card.py metals --run runs/metals-v2   # then: card and zoo install

Architecture as the v1 card (models/metals.json): 32 channels, max_ell 2, max_L 1, 2 layers,
correlation 3, radial MLP [32, 32], readout 16, r_max 5 Å, 8 Bessel functions, envelope p = 5,
plus ``pair_repulsion=True`` (:mod:`ase_equi.model.zbl`; applied in training and in the
calculator alike, since it is part of the model). Training as v1 (batch 4, AdamW lr 0.01,
weight decay 5e-7, loss weights energy:forces:stress = 10:100:1000, EMA 0.99, cosine schedule,
float32, seed 0, 10 % validation and 10 % test) but 100 epochs instead of 60: v1's best epoch
was its last (59 of 60), so its schedule ended while it was still improving. A checkpoint is
written every 200 steps and at each epoch end; rerunning the command resumes from the last
one (only ``--epochs`` may change on a resume, and changing it changes the cosine schedule).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ase_equi import ModelConfig, TrainConfig, train

ROOT = Path(__file__).resolve().parents[2]
ELEMENTS = [13, 28, 29, 46, 47, 78, 79]  # Al, Ni, Cu, Pd, Ag, Pt, Au

ARCHITECTURE = dict(
    elements=ELEMENTS,
    r_max=5.0,
    num_bessel=8,
    envelope_p=5,
    max_ell=2,
    channels=32,
    max_L=1,
    num_interactions=2,
    correlation=(3, 3),
    radial_mlp=(32, 32),
    readout_hidden=16,
    residual_first=True,
    pair_repulsion=True,
)

SETTINGS = dict(
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

DESCRIPTION = (
    "EMT bulk/strain/short-contact/vacancy/vacancy-hop/surface/cluster/liquid/alloy/MD frames "
    "from scripts/zoo/generate_metals_emt.py --set v2"
)
LEVEL_OF_THEORY = "ASE EMT (effective-medium theory; ASE 3.29 default parameters)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "data" / "metals-emt-v2.xyz.xz"))
    parser.add_argument("--out", default="runs/metals-v2", help="output folder (resumes)")
    parser.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args()
    config = TrainConfig(**SETTINGS, epochs=args.epochs, output_dir=args.out)
    result = train(
        ModelConfig(**ARCHITECTURE),
        args.data,
        config,
        name="metals",
        level_of_theory=LEVEL_OF_THEORY,
        data_description=DESCRIPTION,
    )
    print(f"model: {result.model_path}")


if __name__ == "__main__":
    main()
