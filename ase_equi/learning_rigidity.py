"""On-the-fly learning with one model and its last-layer prediction rigidity (LLPR).

A single model file with a ``prediction_rigidity`` section (:mod:`ase_equi.io.rigidity_section`;
every zoo model has one) gives ``forces_uncertainty`` without a committee. When
:func:`ase_equi.learning.learn_on_the_fly` calls the reference on such a model,
:func:`learn_single` fine-tunes the model from its current weights (warm start with
:func:`~ase_equi.training.train`: E0, scale and shift kept) on the learned frames plus the replay,
then **refits the section** on what the model now knows (:func:`refit_rigidity`):

.. math::

    C = \\sum_s w_s f_s f_s^\\top, \\qquad C_\\mathrm{loc} = \\sum_s w_s \\sum_{i\\in s} f_i
    f_i^\\top

over the replay frames and the learned frames, with the *new* model's features
:math:`f_i` (features move when the model is trained, so the parent's C no longer describes
them). The weight :math:`w_s` is 1 for a learned frame; a replay set that is a uniform sample of
the parent's training split (the zoo's shipped ``NAME-replay.xyz.xz``) stands for that whole
split, :math:`w_s = N_\\mathrm{parent}/N_\\mathrm{replay}` with :math:`N_\\mathrm{parent}` the
section's ``n_structures``, so that the rigidity of well-known environments stays what the
parent's calibration was fitted for (unweighted, a 300-frame replay of a 748-structure training
split would raise every uncertainty by about :math:`\\sqrt{748/300}`).

The regularisers (relative to tr C/d) and the calibration factors α_E, α_F are the parent's:
α was fitted on the parent's held-out validation split, and the loop has no held-out data of
its own (every learned frame is trained on, and the learned frames were *chosen* for their
large uncertainty, so a fit on them would be biased upwards). Keeping α keeps the threshold's
meaning in eV/Å. The section's ``data`` field says what C was summed over.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.io import read

from .calculator import EquivariantCalculator
from .errors import AseEquiError
from .graph.build import atoms_to_graph, batch_graphs
from .io.model_file import LoadedModel, read_header, save_model
from .io.rigidity_section import write_rigidity
from .model.gradients import energy_forces_stress
from .model.mace import MaceModel
from .model.prediction_rigidity import (
    LastLayerRigidity,
    RigidityStatistics,
    capture_features,
    feature_dim,
    regularised_inverse,
)
from .training.config import TrainConfig

__all__ = ["learn_single", "refit_rigidity", "resolve_replay", "rigidity_statistics"]


def rigidity_statistics(
    model: MaceModel,
    frames: Sequence[Atoms],
    *,
    weights: Sequence[float] | None = None,
    batch: int = 8,
) -> RigidityStatistics:
    """C = Σ_s w_s f_s f_sᵀ and C_loc = Σ_s w_s Σ_i f_i f_iᵀ (``[d, d]`` float64, no
    regulariser) of ``model``'s active head over ``frames`` (``batch`` structures per model
    call; graphs in the model's dtype). ``weights``: one ``w_s ≥ 0`` per frame (None: all 1).
    ``structures`` and ``atoms`` of the result count frames and atoms, unweighted.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from ase_equi import ModelConfig
    >>> cfg = ModelConfig(elements=(29,), reference_energies=(0.0,), channels=4, max_ell=1,
    ...                   correlation=2)
    >>> stats = rigidity_statistics(MaceModel(cfg).double(), [bulk("Cu", cubic=True)])
    >>> stats.structures, stats.atoms, stats.covariance.shape == (feature_dim(MaceModel(cfg)),) * 2
    (1, 4, True)
    """
    w = np.ones(len(frames)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(frames),) or not (np.isfinite(w).all() and (w >= 0).all()):
        raise ValueError(f"weights: one finite value >= 0 per frame ({len(frames)}), got {w!r:.80}")
    dtype = next(model.parameters()).dtype
    cfg = model.config
    stats = RigidityStatistics(feature_dim(model))
    for start in range(0, len(frames), batch):
        chunk = frames[start : start + batch]
        graph = batch_graphs(
            [atoms_to_graph(a, cfg.elements, cfg.r_max, dtype=dtype) for a in chunk]
        )
        with capture_features(model) as capture:
            energy_forces_stress(model, graph, forces=False)
        root = torch.from_numpy(np.sqrt(w[start : start + batch]))  # [G]: √w per structure
        f_i = capture.node_features().detach().double() * root[graph.batch][:, None]
        stats.add(f_i, graph.batch, graph.num_graphs)
    return stats


def refit_rigidity(
    model: MaceModel,
    parent: LastLayerRigidity,
    frames: Sequence[Atoms],
    *,
    weights: Sequence[float] | None = None,
    data: str,
) -> LastLayerRigidity:
    """The section of ``parent`` refitted to ``model`` on ``frames`` (see the module docstring):
    new C⁻¹ and C_loc⁻¹ from :func:`rigidity_statistics`, the parent's regularisers and
    calibration factors kept; ``info`` records ``data`` (what C was summed over) and the counts.
    ``ValueError`` when the model's feature size is not the section's."""
    d = feature_dim(model)
    if parent.info.get("feature_dim", d) != d:
        raise ValueError(f"the model has feature_dim {d}, the section {parent.info['feature_dim']}")
    stats = rigidity_statistics(model, frames, weights=weights)
    calibration = dict(parent.info.get("calibration", {}))
    calibration["factors"] = "kept from the parent (fitted on its validation split)"
    info = {
        **parent.info,
        "feature_dim": d,
        "n_structures": stats.structures,
        "n_atoms": stats.atoms,
        "data": data,
        "calibration": calibration,
    }
    return LastLayerRigidity(
        regularised_inverse(stats.covariance, float(parent.info["regulariser"])),
        regularised_inverse(stats.local_covariance, float(parent.info["local_regulariser"])),
        energy_factor=parent.energy_factor,
        forces_factor=parent.forces_factor,
        info=info,
    )


def resolve_replay(
    model: str | os.PathLike, replay: Sequence[Atoms] | str | os.PathLike | None
) -> tuple[list[Atoms], str]:
    """The replay frames and a sentence saying where they come from. ``"auto"``: a zoo
    model's shipped replay set (a uniform sample of its training split), none otherwise; a
    path: its frames (named as the zoo's shipped set when it is one, so that
    :func:`replay_weight_of` weighs them as for ``"auto"``); None or a sequence: as given."""
    from .training.replay import zoo_sets

    if isinstance(replay, str) and replay == "auto":
        sets = zoo_sets(model)
        if sets is None:
            return [], "none (not a zoo model with a shipped replay set)"
        frames = read(sets[0], ":")
        return list(frames), f"the zoo's shipped replay set {sets[0].name} ({len(frames)} frames)"
    if isinstance(replay, (str, os.PathLike)):
        frames = read(os.fspath(replay), ":")
        said = f"{Path(replay).name} ({len(frames)} frames)"
        if _is_shipped_replay(Path(replay)):  # the same frames as "auto" for that zoo model
            said = f"the zoo's shipped replay set {said}"
        return list(frames), said
    given = list(replay or [])
    return given, f"{len(given)} frames given"


def _is_shipped_replay(path: Path) -> bool:
    """Whether ``path`` is one of the zoo's shipped replay sets (given by path, e.g. for a
    model file derived from a zoo model: its statistics were summed over the same split)."""
    from .training.replay import zoo_sets
    from .zoo import zoo_names

    shipped = (zoo_sets(name) for name in zoo_names())
    return any(sets is not None and path.resolve() == sets[0].resolve() for sets in shipped)


def replay_weight_of(rigidity: LastLayerRigidity, replay_from: str, n_replay: int) -> float:
    """w_s of a replay frame in the refitted statistics: N_parent / N_replay for the zoo's
    shipped replay set (it samples the training split the parent's C was summed over), 1
    otherwise."""
    if n_replay and replay_from.startswith("the zoo's shipped replay set"):
        return max(1.0, int(rigidity.info["n_structures"]) / n_replay)
    return 1.0


def learn_single(
    loaded: LoadedModel,
    frames: Sequence[Atoms],
    replay: Sequence[Atoms],
    replay_weight: float,
    train_frames: Sequence[Atoms],
    config: TrainConfig,
    folder: Path,
    k: int,
) -> Path:
    """Round ``k``: fine-tune ``loaded.model`` on ``train_frames`` (warm start), refit its
    section on ``replay`` (weight ``replay_weight`` each) plus the learned ``frames``, write
    ``folder/model-{k+1}.json``; returns that path."""
    from .training.trainer import train

    if loaded.rigidity is None:
        raise AseEquiError(f"{loaded.source}: no prediction-rigidity section to refit")
    model = copy.deepcopy(loaded.model).requires_grad_(True)  # the calculator froze it
    run = dataclasses.replace(config, output_dir=str(folder / f"round{k}"))
    trained = train(model, list(train_frames), run, name="model", verbose=False).model
    trained.requires_grad_(False)
    weights = [replay_weight] * len(replay) + [1.0] * len(frames)
    described = f"{len(replay)} replay frames (weight {replay_weight:.4g} each)"
    data = f"{described} and {len(frames)} frames learned on the fly (weight 1), round {k + 1}"
    rigidity = refit_rigidity(
        trained, loaded.rigidity, [*replay, *frames], weights=weights, data=data
    )
    path = folder / f"model-{k + 1}.json"
    saved = save_model(trained, path, card={"name": path.stem, "learned_on_the_fly": data})
    rigidity.info["head"] = str(read_header(saved)["default_head"])
    write_rigidity(saved, rigidity)
    return saved


def check_learnable(calc: EquivariantCalculator, where: Any) -> str:
    """``"committee"`` or ``"rigidity"``: how the model in ``calc`` gives uncertainties; an
    :class:`~ase_equi.errors.AseEquiError` naming ``where`` when it gives none."""
    loaded = calc.loaded
    if isinstance(loaded, LoadedModel):
        if loaded.rigidity is None:
            raise AseEquiError(
                f"learn_on_the_fly: {where} has neither a committee nor a prediction-rigidity "
                "section, so it gives no uncertainty to act on; give a committee file, or write "
                "a section into the file (ase_equi.io.rigidity_section.write_rigidity)"
            )
        return "rigidity"
    if loaded.model.kind != "full":
        raise AseEquiError(f"learn_on_the_fly: {where} is a shallow committee; it trains full ones")
    return "committee"


def sample(frames: Sequence[Atoms], count: int | None, seed: int = 0) -> list[Atoms]:
    """A seeded uniform sample of ``count`` of ``frames`` in their order (None: all)."""
    if count is None or count >= len(frames):
        return list(frames)
    chosen = np.random.default_rng(seed).choice(len(frames), size=count, replace=False)
    return [frames[k] for k in sorted(chosen.tolist())]
