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
``count`` of them, of which at least a share ``favour_share`` (rounded up) contain one of the
elements ``favour`` where the pool has that many. Fine-tuning favours the **elements of the new
data** with a share of one half (``FinetuneConfig.replay_new_element_share``): the shared
layers move most where the new data are, so that is where the parent's labels must be
rehearsed (a uniform sample of the metals replay set has one frame in five with nickel).
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
    favour: Sequence[str | int] = (),
    favour_share: float = 0.0,
) -> list[Frame]:
    """Frames made only of ``elements`` and of a ``config_type`` in ``config_types`` (empty:
    any), then a seeded sample of ``count`` (None or more than there are: all), in file order;
    at least ``ceil(favour_share · count)`` of the sample contain an element of ``favour``
    (all such frames when there are fewer), the rest drawn from the other frames (topped up
    from the favoured ones when those run out).

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
    wanted = parse_elements(favour)
    if not wanted or favour_share <= 0:
        return [kept[k] for k in sorted(rng.choice(len(kept), size=count, replace=False))]
    hits = [k for k, f in enumerate(kept) if wanted & set(f.atoms.numbers.tolist())]
    rest = sorted(set(range(len(kept))) - set(hits))
    n_hits = min(len(hits), max(int(np.ceil(favour_share * count)), count - len(rest)))
    chosen = rng.choice(hits, size=n_hits, replace=False).tolist() if n_hits else []
    chosen += rng.choice(rest, size=count - n_hits, replace=False).tolist() if rest else []
    return [kept[k] for k in sorted(chosen)]


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
    new_elements = sorted({int(z) for f in fit_frames for z in f.atoms.numbers})
    frames = select_replay(
        pool,
        elements=ft.replay_elements,
        config_types=ft.replay_config_types,
        count=count,
        seed=cfg.seed,
        favour=new_elements,
        favour_share=ft.replay_new_element_share or 0.0,
    )
    if relabelled:
        frames = relabel(base, frames)
    report = {
        "source": where,
        "labels": "the parent's predictions" if relabelled else "stored (parent's level)",
        "available": len(pool),
        "count": len(frames),
        "with_new_data_elements": sum(
            bool(set(new_elements) & set(f.atoms.numbers.tolist())) for f in frames
        ),
        "new_element_share": ft.replay_new_element_share,
        "weight": ft.replay_weight,
        "elements": list(ft.replay_elements),
        "config_types": list(ft.replay_config_types),
    }
    log.info("replay: %s", report)
    return frames, report


#: bounds of the replay weight chosen by :func:`balance_weight`
BALANCE_RANGE = (1.0, 4.0)


def balance_weight(
    new: Sequence[Frame], replay: Sequence[Frame], given: float | None = None
) -> float:
    """Loss weight of a replay frame: ``given``, else the number of atoms of the new data's
    elements in ``new`` over their number in ``replay``, within ``BALANCE_RANGE`` (1 without
    such replay atoms): each element the new data hold is then rehearsed at the parent's level
    of theory as much as it is learnt at the new one.

    >>> from ase import Atoms
    >>> cu = Frame(Atoms("Cu4"), 0.0); mixed = Frame(Atoms("CuAl3"), 0.0)
    >>> balance_weight([cu, cu], [mixed, mixed, Frame(Atoms("Al2"), 0.0)])
    4.0
    >>> balance_weight([cu], [cu, mixed]), balance_weight([cu], [mixed], given=0.5)
    (1.0, 0.5)
    """
    if given is not None:
        return float(given)
    elements = {int(z) for f in new for z in f.atoms.numbers}
    n_new = sum(int(np.isin(f.atoms.numbers, list(elements)).sum()) for f in new)
    n_replay = sum(int(np.isin(f.atoms.numbers, list(elements)).sum()) for f in replay)
    if not n_replay:
        return 1.0
    return float(np.clip(n_new / n_replay, *BALANCE_RANGE))


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


def weighted_replay(
    replay: list[Frame],
    report: dict[str, Any],
    ft: FinetuneConfig,
    fit_frames: list[Frame],
    e0_shift: np.ndarray,
    elements: Sequence[int],
) -> list[Frame]:
    """Replay frames with their loss weight (recorded in ``report``): on the parent's head
    (head 0) balanced against the new data (:func:`balance_weight`); with one head,
    energies shifted by the E0 change and weight 1 unless given."""
    if ft.multihead:
        weight = report["weight"] = balance_weight(fit_frames, replay, ft.replay_weight)
        return [dataclasses.replace(f, head=0, weight=weight) for f in replay]
    report["weight"] = weight = 1.0 if ft.replay_weight is None else ft.replay_weight
    return shift_replay(replay, e0_shift, elements, weight)
