"""Replay for fine-tuning: frames of the parent's level of theory rehearsed against forgetting.

Where replay frames come from (``FinetuneConfig.replay_data``):

- ``"auto"`` (default): for a zoo parent, its shipped replay set (``NAME-replay.xyz.xz``, a
  seeded sample of its training split; ``NAME-test.xyz.xz`` is its test split, for measuring
  forgetting); for any other parent, the new data's training structures **labelled by the
  parent itself** (``relabel_replay``);
- a path: labelled frames (extxyz / ASE db), optionally relabelled by the parent;
- None: no replay.

:func:`select_replay` keeps the frames whose elements are all in ``elements`` and whose
``config_type`` is in ``config_types`` (either empty: no filter), then a seeded sample of
``count`` of them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from ase.data import atomic_numbers

from ..data.batch import frames_to_graphs, make_batch
from ..data.frames import Frame, read_frames
from ..graph import element_indices
from ..model.gradients import energy_forces_stress
from ..model.mace import MaceModel

if TYPE_CHECKING:
    from .config import TrainConfig
    from .finetune import FinetuneConfig

AUTO = "auto"
log = logging.getLogger(__name__)


def zoo_sets(parent: object) -> tuple[Path, Path] | None:
    """``(replay, test)`` files shipped with zoo model ``parent``, or None (not a zoo name, or
    a zoo model without them)."""
    from ..zoo import ZOO_DIR, is_zoo_name

    if not isinstance(parent, (str, os.PathLike)) or not is_zoo_name(parent):
        return None
    name = os.fspath(parent)
    paths = (Path(ZOO_DIR) / f"{name}-replay.xyz.xz", Path(ZOO_DIR) / f"{name}-test.xyz.xz")
    return paths if all(p.is_file() for p in paths) else None


def parse_elements(symbols: Sequence[str | int]) -> set[int]:
    """Element symbols or atomic numbers → atomic numbers (``ValueError`` naming a bad one)."""
    out = set()
    for s in symbols:
        if isinstance(s, int) or (isinstance(s, str) and s.isdigit()):
            out.add(int(s))
        elif s in atomic_numbers:
            out.add(atomic_numbers[s])
        else:
            raise ValueError(f"replay_elements: {s!r} is not an element symbol")
    return out


def select_replay(
    frames: Sequence[Frame],
    *,
    elements: Sequence[str | int] = (),
    config_types: Sequence[str] = (),
    count: int | None = None,
    seed: int = 0,
) -> list[Frame]:
    """Frames made only of ``elements`` and of a ``config_type`` in ``config_types`` (empty:
    any), then a seeded sample of ``count`` (None or more than there are: all), in file order.

    Examples
    --------
    >>> from ase import Atoms
    >>> fs = [Frame(Atoms(s), 0.0, config_type=t) for s, t in [("Cu", "bulk"), ("Ni", "bulk"),
    ...       ("CuNi", "alloy")]]
    >>> [f.atoms.get_chemical_formula() for f in select_replay(fs, elements=["Cu", "Ni"],
    ...  config_types=["bulk"])]
    ['Cu', 'Ni']
    """
    allowed = parse_elements(elements)
    kinds = set(config_types)
    kept = [
        f
        for f in frames
        if (not allowed or set(f.atoms.numbers.tolist()) <= allowed)
        and (not kinds or f.config_type in kinds)
    ]
    if count is None or count >= len(kept):
        return kept
    rng = np.random.default_rng(seed)
    return [kept[k] for k in sorted(rng.choice(len(kept), size=count, replace=False))]


def relabel(model: MaceModel, frames: Sequence[Frame]) -> list[Frame]:
    """``frames`` with energy, forces and (where defined) stress predicted by ``model``."""
    from ase.stress import full_3x3_to_voigt_6_stress

    out = []
    dtype = next(model.parameters()).dtype
    for f in frames:
        g = frames_to_graphs([f], model.config.elements, model.config.r_max, dtype=dtype)[0]
        pred = energy_forces_stress(model, make_batch([f], [g]).graph, stress=f.has_stress)
        stress = None
        if f.has_stress:
            stress = full_3x3_to_voigt_6_stress(pred["stress"][0].detach().double().numpy())
        forces = pred["forces"].detach().double().numpy().reshape(-1, 3)
        energy = float(pred["energy"].detach().double().sum())
        out.append(dataclasses.replace(f, energy=energy, forces=forces, stress=stress))
    return out


def replay_frames(
    parent: Any,
    ft: FinetuneConfig,
    cfg: TrainConfig,
    base: MaceModel,
    fit_frames: list[Frame],
) -> tuple[list[Frame], dict[str, Any]]:
    """The replay frames (parent's level of theory, unshifted) and how they were chosen."""
    if ft.replay_data is None:
        return [], {"source": "none"}
    elements = base.config.elements
    relabelled = ft.relabel_replay
    if ft.replay_data != AUTO:
        pool, where = read_frames(ft.replay_data, elements=elements), Path(ft.replay_data).name
    elif (sets := zoo_sets(parent)) is not None:
        pool, where = read_frames(sets[0], elements=elements), sets[0].name + " (shipped)"
    else:
        known = set(elements)
        pool = [f for f in fit_frames if set(f.atoms.numbers.tolist()) <= known]
        where, relabelled = "the new training structures", True
    n_new = sum(not f.is_isolated_atom for f in fit_frames)
    count = n_new if ft.replay_count is None else (ft.replay_count or None)
    frames = select_replay(
        pool,
        elements=ft.replay_elements,
        config_types=ft.replay_config_types,
        count=count,
        seed=cfg.seed,
    )
    if relabelled:
        frames = relabel(base, frames)
    report = {
        "source": where,
        "labels": "the parent's predictions" if relabelled else "stored (parent's level)",
        "available": len(pool),
        "count": len(frames),
        "weight": ft.replay_weight,
        "elements": list(ft.replay_elements),
        "config_types": list(ft.replay_config_types),
    }
    log.info("replay: %s", report)
    return frames, report


def shift_replay(
    replay: list[Frame], e0_shift: np.ndarray, elements: Sequence[int], weight: float
) -> list[Frame]:
    """Single head: replayed energies moved by the E0 change (eV), loss weight ``weight``."""
    return [
        dataclasses.replace(
            f,
            energy=f.energy + float(e0_shift[element_indices(f.atoms.numbers, elements)].sum()),
            weight=weight,
        )
        for f in replay
    ]


def parent_test_set(parent: Any, ft: FinetuneConfig) -> str | None:
    """The parent's test set: as given, or for ``"auto"`` a zoo parent's shipped one."""
    if ft.parent_test_data != AUTO:
        return ft.parent_test_data
    sets = zoo_sets(parent)
    return str(sets[1]) if sets else None
