"""Training a committee: M models that differ in their random start and data split.

:func:`train_committee` trains a full committee, the simplest way that works: the constants
of the architecture (E0, scale, shift and ``avg_num_neighbors``, which the batched committee
needs equal in every member) fitted once on all the data, then :func:`~ase_equi.train` once
per seed (each seed draws its own initial weights and its own train/valid/test split, so the
members also see different data), then the M final models joined into one committee file
(:func:`~ase_equi.io.model_committee.join_committee_files`). Each member trains in its own
folder ``OUTPUT_DIR/member{m}``, so a killed run resumes where it stopped (``train`` resumes
from its checkpoint) and finished members are not trained again.

:func:`train_shallow_ensemble` turns one trained model into a shallow ensemble: the model is
member 0 and the trunk of all; the M − 1 new last-layer readouts start from the model's own,
perturbed, and each is fitted (trunk frozen) on its own bootstrap resample of the data, with
the loss of :func:`shallow_loss` (energy per atom and forces, eV and eV/Å).
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

__all__ = ["train_committee", "train_shallow_ensemble"]


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


def train_shallow_ensemble(
    model: Any,
    data: Sequence[Any],
    size: int = 4,
    *,
    epochs: int = 50,
    lr: float = 1e-3,
    forces_weight: float = 10.0,
    noise: float = 0.1,
    seed: int = 0,
) -> Any:
    """A :class:`~ase_equi.model.shallow_ensemble.ShallowEnsemble` of ``size`` members from a
    trained :class:`~ase_equi.model.mace.MaceModel` (copied; the caller's is not modified).

    Parameters
    ----------
    data:
        Labelled ``ase.Atoms`` (energy and forces through their calculator, e.g. a
        ``SinglePointCalculator``), of the model's elements.
    epochs, lr:
        Full-batch Adam steps on the new readouts, and their learning rate.
    forces_weight:
        Weight of the force term (eV²/Å² → eV² per atom) in :func:`shallow_loss`.
    noise:
        Relative size of the Gaussian perturbation of the new readouts' starting weights.
    seed:
        Seeds the perturbations and the bootstrap resamples.
    """
    import copy

    import numpy as np
    import torch

    from .graph.build import atoms_to_graph
    from .model.shallow_ensemble import ShallowEnsemble

    torch.manual_seed(seed)
    trunk = copy.deepcopy(model).double().eval().requires_grad_(False)
    readouts = []
    for _ in range(size - 1):
        readout = copy.deepcopy(trunk.readouts[-1]).requires_grad_(True)
        with torch.no_grad():
            for p in readout.parameters():
                p.add_(noise * p.abs().mean() * torch.randn_like(p))
        readouts.append(readout)
    ensemble = ShallowEnsemble(trunk, size, member_readouts=readouts)
    cfg = trunk.config
    graphs = [atoms_to_graph(a, cfg.elements, cfg.r_max, dtype=torch.float64) for a in data]
    energies = torch.tensor([a.get_potential_energy() for a in data], dtype=torch.float64)
    forces = [torch.as_tensor(a.get_forces(), dtype=torch.float64) for a in data]
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(data), np.full(len(data), 1 / len(data)), size=size - 1)
    weights = torch.tensor(counts, dtype=torch.float64) / len(data)  # [M - 1, frames]
    optimiser = torch.optim.Adam(ensemble.member_readouts.parameters(), lr=lr)
    for _ in range(epochs):
        optimiser.zero_grad()
        loss = sum(
            shallow_loss(ensemble, g, energies[k], forces[k], weights[:, k], forces_weight)
            for k, g in enumerate(graphs)
        )
        loss.backward()
        optimiser.step()
    ensemble.member_readouts.requires_grad_(False)
    return ensemble.eval()


def shallow_loss(
    ensemble: Any,
    graph: Any,
    energy: Any,
    forces: Any,
    weights: Any,
    forces_weight: float,
) -> Any:
    """Σ_m w_m [ ((E_m − E)/N)² + λ mean_i |F_m,i − F_i|² / 3 ] over the new members m ≥ 1
    (member 0, the model itself, is not trained), for one structure of N atoms with weights
    ``w [M − 1]`` (its bootstrap counts / number of frames)."""
    from .model.committee import member_derivatives

    out = member_derivatives(ensemble, graph, forces=True, training=True)
    n = graph.num_atoms
    e_err = ((out["member_energy"][1:, 0] - energy) / n) ** 2  # [M - 1]
    f_err = ((out["member_forces"][1:] - forces) ** 2).mean(dim=(1, 2))  # [M - 1]
    return (weights * (e_err + forces_weight * f_err)).sum()
