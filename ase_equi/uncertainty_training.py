"""Training a committee: M models that differ in their random start and data split.

The simplest committee that works: the constants of the architecture (E0, scale, shift and
``avg_num_neighbors``, which the batched committee needs equal in every member) fitted once on
all the data, then :func:`~ase_equi.train` once per seed (each seed draws its own initial
weights and its own train/valid/test split, so the members also see different data), then the
M final models joined into one committee file
(:func:`~ase_equi.io.model_committee.join_committee_files`). Each member trains in its own
folder ``OUTPUT_DIR/member{m}``, so a killed run resumes where it stopped (``train`` resumes
from its checkpoint) and finished members are not trained again.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .io.model_committee import join_committee_files
from .model.config import ModelConfig
from .training.config import TrainConfig

__all__ = ["train_committee"]


def train_committee(
    config: ModelConfig,
    data: Any,
    train_config: TrainConfig,
    output: str | os.PathLike,
    *,
    seeds: Sequence[int] = (0, 1, 2, 3),
    name: str = "committee",
    **train_options: Any,
) -> Path:
    """Train one model per seed and join them into the committee file ``output``.

    Parameters
    ----------
    config:
        The architecture of every member (one cutoff, one set of elements).
    data:
        Labelled structures, as for :func:`~ase_equi.train` (no isolated atoms: E0 is fitted by
        least squares on all the data, as for a new model).
    train_config:
        Settings shared by the members; ``seed`` and ``output_dir`` are replaced per member
        (``output_dir/member{m}``, m = 0 … M − 1).
    output:
        Path of the committee file (NAME, NAME.json, ...).
    seeds:
        One seed per member (M ≥ 2, distinct).
    train_options:
        Further keywords of :func:`~ase_equi.train` (``keys``, ``level_of_theory``, ...).

    Returns the committee file's JSON path.
    """
    import torch

    from .data.frames import load_frames
    from .data.statistics import fit_model_config
    from .model.mace import MaceModel
    from .training.trainer import train

    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be at least 2 distinct integers, got {list(seeds)}")
    keys = train_options.get("keys")
    _, frames = load_frames(data, keys=keys, elements=config.elements)
    fitted = fit_model_config(config, frames)  # once: the same constants in every member
    paths = []
    for m, seed in enumerate(seeds):
        folder = Path(train_config.output_dir) / f"member{m}"
        member_config = dataclasses.replace(train_config, seed=seed, output_dir=str(folder))
        done = folder / f"{name}-member{m}.json"
        if not done.exists():
            torch.manual_seed(seed)
            result = train(
                MaceModel(fitted),
                frames,
                member_config,
                name=f"{name}-member{m}",
                verbose=False,
                **train_options,
            )
            done = Path(result.model_path or done)
        paths.append(done)
    card = {"name": name, "description": f"committee of {len(seeds)} models, seeds {list(seeds)}"}
    return join_committee_files(paths, output, card=card)
