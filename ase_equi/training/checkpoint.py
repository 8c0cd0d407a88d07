"""Where a training run starts from and keeps its state between processes.

``split.json`` records the frame split, its settings and a fingerprint of the data, so that a
rerun with the same output directory trains on the same frames; a checkpoint is resumed only
with the settings it was written with (``RESUMABLE_FIELDS`` may change).
:func:`starting_models` gives the weights a run begins with: new ones, a copy of the given
model, or those of the checkpoint. The checkpoint files themselves (checksum, previous copy,
fallback) are :mod:`ase_equi.training.checkpoint_file`'s.
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..data.frames import Frame, split_frames
from ..data.statistics import data_statistics
from ..model.config import ModelConfig
from ..model.mace import MaceModel
from .checkpoint_file import atomic_write, load_checkpoint, resume_checkpoint, save_checkpoint
from .config import BLOCKS, RESUMABLE_FIELDS, TrainConfig
from .evaluation import LabelledSet

__all__ = [
    "check_resumable",
    "extended_split",
    "freeze_blocks",
    "load_checkpoint",
    "load_or_make_split",
    "new_model",
    "resume_checkpoint",
    "save_checkpoint",
    "starting_models",
]


def new_model(config: ModelConfig, seed: int, *, init_coupling: bool = True) -> MaceModel:
    """A model with weights drawn from ``seed``, without touching the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MaceModel(config, init_coupling=init_coupling)


def starting_models(
    model: ModelConfig | MaceModel,
    state: dict[str, Any] | None,
    config: ModelConfig,
    fit_data: LabelledSet,
    seed: int,
    dtype: torch.dtype,
) -> tuple[MaceModel, MaceModel, dict[str, str]]:
    """``(net, ema, e0_status)`` a run begins with, in ``dtype``.

    From a checkpoint ``state`` (with its ``config``): its weights and EMA. Otherwise a copy of
    the given :class:`MaceModel`, or for a :class:`ModelConfig` a new model whose E0, scale,
    shift and average neighbour count are fitted on ``fit_data`` (the training split); the
    config's E0, when given, are the prior of the fit. ``e0_status`` says per element symbol
    how E0 was set (see :class:`~ase_equi.statistics.ReferenceEnergyFit`; empty unless fitted
    here).
    """
    e0_status: dict[str, str] = {}
    if state is not None:
        net = new_model(config, seed, init_coupling=False)  # buffers and weights from state
    elif isinstance(model, ModelConfig):
        stats = data_statistics(
            fit_data.frames,
            config.elements,
            config.r_max,
            graphs=fit_data.graphs,
            prior=config.reference_energies,
        )
        fitted = dataclasses.asdict(stats)
        e0_status = fitted.pop("reference_energy_status")
        net = new_model(dataclasses.replace(config, **fitted), seed)
    else:
        net = copy.deepcopy(model)
    net = net.to(dtype).train()  # before loading: checkpoint values go into params of its dtype
    ema = copy.deepcopy(net)
    if state is not None:
        # before any optimiser is built: loading may replace Parameter objects (product.py
        # adopts stored shapes), and the optimiser must hold the ones the model uses
        net.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
    ema.requires_grad_(False)
    return net, ema, e0_status


def frames_fingerprint(frames: Sequence[Frame]) -> str:
    """SHA-256 over the frames' numbers, positions, energies, and their loss weight and head
    where these are not the defaults (so plain training's fingerprints are as they were)."""
    h = hashlib.sha256()
    for f in frames:
        h.update(f.atoms.numbers.astype("int64").tobytes())
        h.update(f.atoms.positions.astype("float64").tobytes())
        h.update(repr(f.energy).encode())
        if f.weight != 1.0 or f.head is not None:  # e.g. replayed frames of a fine-tune
            h.update(f"weight={f.weight!r} head={f.head!r}".encode())
    return h.hexdigest()


def freeze_blocks(model: torch.nn.Module, blocks: Sequence[str]) -> None:
    """Switch off the gradients of the parameters of ``blocks`` (see ``config.BLOCKS``)."""
    patterns = [p for b in blocks for p in BLOCKS[b]]
    for name, param in model.named_parameters():
        owner = name.rsplit(".", 1)[0]
        if any(
            fnmatch.fnmatch(owner, pat) or fnmatch.fnmatch(owner, pat + ".*") for pat in patterns
        ):
            param.requires_grad_(False)


def load_or_make_split(
    out: Path, frames: Sequence[Frame], n_own: int, cfg: TrainConfig, *, write: bool
) -> dict[str, Any]:
    """The run's split: read from ``out/split.json`` (checked against the data and settings)
    or made by :func:`~ase_equi.data.split_frames` over the first ``n_own`` frames, the rest
    (replayed frames) joining the training split only; written when ``write``."""
    path = out / "split.json"
    fingerprint = frames_fingerprint(frames)
    split: dict[str, Any]
    if path.exists():
        split = json.loads(path.read_text())
        if split.get("fingerprint") != fingerprint:
            raise ValueError(
                f"{out} was used with other data, frame weights or heads (split.json "
                "fingerprint differs); use a new output directory"
            )
        for key in ("seed", "valid_fraction", "test_fraction"):
            if split.get(key) != getattr(cfg, key):
                raise ValueError(
                    f"{path} was made with {key}={split.get(key)!r}, this run asks for "
                    f"{getattr(cfg, key)!r}; use a new output directory"
                )
        return split
    indices = split_frames(
        frames[:n_own],
        valid_fraction=cfg.valid_fraction,
        test_fraction=cfg.test_fraction,
        seed=cfg.seed,
    )
    split = {**indices}  # the index lists, then the settings that made them
    split["replay"] = list(range(n_own, len(frames)))
    split["train"] = split["train"] + split["replay"]
    split.update(
        seed=cfg.seed,
        valid_fraction=cfg.valid_fraction,
        test_fraction=cfg.test_fraction,
        n_frames=len(frames),
        fingerprint=fingerprint,
    )
    if write:
        atomic_write(path, lambda fh: fh.write(json.dumps(split, indent=1)), "w")
    return split


def extended_split(
    previous: dict[str, Any], frames: Sequence[Frame], cfg: TrainConfig
) -> dict[str, Any]:
    """The split of data that are a finished run's data with frames appended.

    ``previous`` is that run's ``split.json`` (read as a dict); ``frames`` must begin with its
    ``n_frames`` frames unchanged (checked by their fingerprint). Every one of those keeps its
    role, so a frame the earlier model was tested on is never trained on; the appended frames
    are split by :func:`~ase_equi.data.split_frames` with ``cfg``'s seed and fractions, which
    must be the previous run's. Written as ``split.json`` into a new run's output directory
    before :func:`~ase_equi.training.train`, it is the split that run trains on.
    """
    n_old = int(previous["n_frames"])
    if previous.get("replay"):
        raise ValueError("the previous split has replayed frames; extend a run of its own data")
    for key in ("seed", "valid_fraction", "test_fraction"):
        if previous.get(key) != getattr(cfg, key):
            raise ValueError(
                f"the previous split was made with {key}={previous.get(key)!r}, this run "
                f"asks for {getattr(cfg, key)!r}"
            )
    if len(frames) < n_old or frames_fingerprint(frames[:n_old]) != previous["fingerprint"]:
        raise ValueError(f"the data do not begin with the previous run's {n_old} frames unchanged")
    added = (
        split_frames(
            frames[n_old:],
            valid_fraction=cfg.valid_fraction,
            test_fraction=cfg.test_fraction,
            seed=cfg.seed,
        )
        if len(frames) > n_old
        else {"valid": [], "test": [], "train": [], "isolated": []}  # nothing appended
    )
    split: dict[str, Any] = {
        name: list(previous[name]) + [n_old + k for k in added[name]]
        for name in ("valid", "test", "train", "isolated")
    }
    split.update(
        replay=[],
        seed=cfg.seed,
        valid_fraction=cfg.valid_fraction,
        test_fraction=cfg.test_fraction,
        n_frames=len(frames),
        fingerprint=frames_fingerprint(frames),
    )
    return split


def check_resumable(
    path: str | os.PathLike,
    state: dict[str, Any],
    cfg: TrainConfig,
    model: ModelConfig | MaceModel,
) -> None:
    """Refuse to resume checkpoint ``path`` with settings other than those it was written with."""
    # a field added after the checkpoint was written counts as its default
    saved = {**TrainConfig().to_dict(), **state["train_config"]}
    now = cfg.to_dict()
    differ = [k for k in now if k not in RESUMABLE_FIELDS and saved.get(k) != now[k]]
    if isinstance(model, ModelConfig):  # constants fitted to the data may differ
        fitted = {"reference_energies", "scale", "shift", "avg_num_neighbors", "extra"}
        saved_model, now_model = state["model_config"], model.to_dict()
        differ += [k for k in now_model if k not in fitted and saved_model[k] != now_model[k]]
        saved = {**saved, **saved_model}
        now = {**now, **now_model}
    if differ:
        listed = ", ".join(f"{k}={saved.get(k)!r} (now {now[k]!r})" for k in differ)
        raise ValueError(
            f"{path} was written with other settings: {listed}; use the same "
            "settings to resume or a new output directory"
        )
