"""Training a tiny model with ZBL repulsion, the Agnesi transform and density normalisation."""

from __future__ import annotations

import dataclasses

from conftest import emt_structures

from ase_equi import load_model
from ase_equi.data import read_frames
from ase_equi.model.config import ModelConfig
from ase_equi.training import TrainConfig, train

TINY_ZBL = ModelConfig(
    elements=(13, 29),
    reference_energies=(0.0, 0.0),
    r_max=3.5,
    num_bessel=4,
    channels=4,
    max_ell=1,
    correlation=2,
    radial_mlp=(8,),
    pair_repulsion=True,
    distance_transform="Agnesi",
    density_normalisation=True,
)


def test_training_with_pair_terms_lowers_the_loss_and_keeps_them(tmp_path):
    frames = read_frames(emt_structures(6))
    cfg = TrainConfig(
        epochs=4,
        batch_size=2,
        lr=0.05,
        ema_decay=0.0,
        valid_fraction=0.0,
        test_fraction=0.0,
        output_dir=str(tmp_path / "run"),
    )
    losses = []
    result = train(
        TINY_ZBL,
        frames,
        cfg,
        name="tiny-zbl",
        progress=lambda d: losses.append(d["train_loss"]) if d.get("event") == "epoch" else None,
    )
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    loaded = load_model(result.model_path)
    kept = {f: getattr(loaded.config, f) for f in ("pair_repulsion", "distance_transform")}
    assert kept == {"pair_repulsion": True, "distance_transform": "Agnesi"}
    assert loaded.config.density_normalisation
    assert dataclasses.replace(loaded.config, extra={}) == result.config
