"""Fine-tuning: adapt a trained model (a zoo model or a model file) to new labelled data.

:func:`finetune` runs, in order:

1. **Elements.** Elements of the new data that the parent does not know are appended to the
   model: their embedding rows, self-connection slices and symmetric-contraction weights are
   drawn fresh (seeded), every existing weight is kept.
2. **E0 refit** (``refit_e0``). A change of level of theory shifts energies mostly by a
   per-element constant. With the parent's interaction energy
   ``E_int(k) = E_parent(k) − Σ_z N_kz E0_z`` on each training frame k, the new reference
   energies solve the least-squares problem ``min ||N E0' − (E_ref − E_int)||₂``, and of its
   solutions the one **closest to the parent's E0**: ``E0' = E0 + N⁺ (E_ref − E_int − N E0)``.
   Elements absent from the new data keep the parent's E0 exactly, and directions the data do
   not determine (water alone fixes only ``2 E0_H + E0_O``) keep the parent's values; new
   elements absorb the shift first. Isolated-atom frames, where present, fix their element
   exactly. The card and the report list which E0 were fitted and which kept. Replayed frames
   get the same shift, ``E ← E + Σ_z N_z (E0'_z − E0_z)``, so old and new labels agree on what
   E0 means.
3. **Heads** (``multihead``, default). The new level of theory gets its own readout head and
   its own copy of the parent's last interaction layer (``head_layers=1``; initialised from the
   parent's, E0 refitted); the parent's head keeps the parent's readouts, E0 and last layer.
   The shared layers below learn from the new data (new head) and from a replay of the parent's
   data (parent head) at ``trunk_lr_scale`` = 0.3 × lr, so labels of two levels of theory never
   meet in one head (:mod:`.multihead`, :func:`~.finetune_defaults.resolve_rules`).
   ``multihead=False``: one head, replayed energies shifted by the E0 change,
   ``E ← E + Σ_z N_z (E0'_z − E0_z)``.
4. **Replay** (``replay_data="auto"``): a zoo parent's shipped replay set, or for another
   parent the new training structures labelled by the parent itself; selected by element,
   ``config_type`` and count (:mod:`.replay`). Default count: as many as new training frames
   (at most what there is). With two heads, at least half of them contain an element of the
   new data (where the shared layers move most) and their loss weight balances those
   elements' atoms against the new data's (:func:`~.replay.balance_weight`, within [1, 4]);
   with one head a uniform sample of weight 1 (there, such frames contradict the new labels).
5. **Training** with :func:`ase_equi.training.train`, the defaults chosen from the parent's card
   and the new data (:mod:`.finetune_defaults`: the parent's loss weights, no stress weight
   without stress labels), checkpointed and resumable like any training run.
6. **Before/after report**: errors on the new data's test split of the parent **after the E0
   refit** ("before") and of the fine-tuned model ("after"); on the parent's own test set
   (the zoo's shipped one by default) the parent and the fine-tuned parent head (forgetting);
   the equation of state of one structure of the new data, where it holds a volume scan
   (``finetune_report.md/.json/.png``). The card names the parent by zoo name or file name and
   the SHA-256 of its weights (never a path), with one card per head.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from ase.data import chemical_symbols

from ..data.frames import DataKeys, Frame, load_frames, split_frames
from ..io.model_file import LoadedModel
from ..model.mace import MaceModel
from .adaptation import (
    adapt_to_data,
    add_elements,
    predict_energies,
    refit_reference_energies,
)
from .config import DTYPES, TrainConfig
from .finetune_card import file_name, save_with_parent
from .finetune_defaults import (
    FINETUNE_TRAIN_DEFAULTS,
    choose_train_options,
    head_lr_scale,
    level_of_theory_of,
    resolve_rules,
)
from .finetune_report import before_after, measure_errors, write_report
from .loss import UNITS
from .multihead import add_head, learning_head
from .parent_pull import DEFAULT_PARENT_PULL, check_strength, pull_for_finetune
from .replay import AUTO, parent_test_set, replay_frames, weighted_replay
from .report import TrainResult
from .trainer import train

log = logging.getLogger(__name__)

__all__ = [
    "FINETUNE_TRAIN_DEFAULTS",
    "FinetuneConfig",
    "FinetuneResult",
    "add_elements",
    "finetune",
    "measure_errors",
    "predict_energies",
    "refit_reference_energies",
]


@dataclass(frozen=True)
class FinetuneConfig:
    """What fine-tuning does besides training (training settings live in ``TrainConfig``).

    refit_e0: refit per-element reference energies to the new data first (see module doc).
    multihead: the new level of theory gets its own head, the parent's head is kept (False:
        one head for both).
    new_head: name of the new head (the parent's head keeps its name, or the parent's name).
    head_layers: how many of the parent's last interaction layers the new head gets its own
        copy of (with ``multihead``; 0: the heads differ in their readouts only; None: 1 with
        two heads, :func:`~.finetune_defaults.resolve_rules`). The parent's head keeps its
        own last layers, trained on the replay alone (:mod:`.multihead`).
    replay_data: ``"auto"`` (the zoo parent's replay set, else the new training structures
        labelled by the parent), an extxyz/db path of labelled frames, or None (no replay).
    replay_elements, replay_config_types: keep replay frames made only of these elements
        (symbols) and of these ``config_type`` (empty: all).
    replay_count: how many replay frames (seeded sample; None: as many as new training
        frames, at most all; 0: all).
    replay_weight: loss weight of each replayed frame (1: like a new frame; None: with two
        heads, as many atoms of the new data's elements in the replay as in the new training
        frames, :func:`~.replay.balance_weight`; with one head 1).
    replay_new_element_share: at least this share of the replay frames contain an element of
        the new data, where the replay pool has them (:func:`~.replay.select_replay`; None:
        0.5 with two heads, 0 with one, where such frames contradict the new labels).
    parent_pull: λ of the pull of the shared layers towards the parent's weights, loss +
        λ · mean over shared weights of (θ − θ_parent)² (:mod:`.parent_pull`; 0: none).
    trunk_lr_scale: learning rate of the shared layers (and of the parent's head) as a
        fraction of ``lr``; the head that learns the new data trains at ``lr``
        (:func:`~.finetune_defaults.head_lr_scale`; None: 0.3 with two heads, 1 with one).
    relabel_replay: label the replayed structures with the parent model instead of their
        stored labels.
    parent_test_data: the parent's own test set, to measure forgetting (``"auto"``: a zoo
        parent's shipped test set, none otherwise).
    """

    refit_e0: bool = True
    multihead: bool = True
    new_head: str = "finetuned"
    head_layers: int | None = None
    replay_data: str | None = AUTO
    replay_elements: tuple[str, ...] = ()
    replay_config_types: tuple[str, ...] = ()
    replay_count: int | None = None
    replay_weight: float | None = None
    replay_new_element_share: float | None = None
    parent_pull: float = DEFAULT_PARENT_PULL
    trunk_lr_scale: float | None = None
    relabel_replay: bool = False
    parent_test_data: str | None = AUTO

    def __post_init__(self) -> None:
        for name in ("replay_elements", "replay_config_types"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        if self.replay_count is not None and self.replay_count < 0:
            raise ValueError(f"FinetuneConfig.replay_count must be >= 0, got {self.replay_count}")
        for name, high in (("replay_weight", np.inf), ("replay_new_element_share", 1.0)):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= high:
                raise ValueError(f"FinetuneConfig.{name} is out of range [0, {high}]: {value}")
        object.__setattr__(self, "parent_pull", check_strength(self.parent_pull))
        if self.head_layers is not None and (
            isinstance(self.head_layers, bool) or not isinstance(self.head_layers, int)
        ):
            raise ValueError(f"FinetuneConfig.head_layers must be an integer: {self.head_layers!r}")
        if self.trunk_lr_scale is not None and not 0 <= self.trunk_lr_scale <= 1:
            raise ValueError(
                f"FinetuneConfig.trunk_lr_scale is out of range: {self.trunk_lr_scale}"
            )
        if not self.new_head or len(self.new_head) > 100:
            raise ValueError("FinetuneConfig.new_head must be a name of 1..100 characters")


@dataclass(repr=False)
class FinetuneResult:
    """The fine-tuned model, the training result and the before/after errors (meV units)."""

    model: MaceModel
    train_result: TrainResult
    report: dict[str, Any]
    model_path: Path | None

    def __repr__(self) -> str:
        """One line: parent, the fitted/kept E0 count, test errors before → after, file."""
        text = f"FinetuneResult(from {self.report.get('parent', '?')}"
        e0 = self.report.get("reference_energies", {})
        if e0:
            kept = sum(v["status"] == "kept" for v in e0.values())
            text += f", E0 {len(e0) - kept} fitted / {kept} kept"
        test = self.report.get("new_test", {})
        for q, short in (("energy", "E"), ("forces", "F")):
            b, a = test.get("before", {}), test.get("after", {})
            if f"{q}_mae" in a:
                was = f"{b[f'{q}_mae']:.3g} → " if f"{q}_mae" in b else ""
                text += f", test {short} MAE {was}{a[f'{q}_mae']:.3g} {UNITS[q]}"
        path = f"'{self.model_path}'" if self.model_path else "None"
        return text + f", model_path={path})"


def load_parent(parent: str | os.PathLike | LoadedModel | MaceModel) -> LoadedModel:
    """A zoo name, a model file, a MACE ``.model`` file, or a model in memory."""
    if isinstance(parent, LoadedModel):
        return parent
    if isinstance(parent, MaceModel):
        return LoadedModel(model=parent, config=parent.config, card={}, source="")
    from ..loading import load_model

    return load_model(parent, device="cpu", dtype=torch.float64)  # the default head


def parent_identity(
    parent: str | os.PathLike | LoadedModel | MaceModel, loaded: LoadedModel
) -> dict[str, str]:
    """How a card names the parent: ``{"name", "zoo" or "file", "weights_sha256"}``.

    A zoo model by its zoo name, a file by its file name (never a directory: the card must
    not carry a path of the machine it was made on), and the SHA-256 of its weights.
    """
    from ..zoo import is_zoo_name

    ident = {"name": loaded.name if loaded.source or loaded.card else "model"}
    if isinstance(parent, (str, os.PathLike)) and is_zoo_name(parent):
        ident["zoo"] = os.fspath(parent)
    elif loaded.source:
        ident["file"] = Path(loaded.source).name
    ident["weights_sha256"] = _parent_sha(loaded)
    return ident


def _split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    ft_fields = {f.name for f in dataclasses.fields(FinetuneConfig)}
    tr_fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"output_dir"}  # out=
    if "output_dir" in options:
        raise TypeError("finetune() writes to out=, not output_dir: give the folder as out=")
    unknown = set(options) - ft_fields - tr_fields
    if unknown:
        raise TypeError(
            f"finetune() got unknown options {sorted(unknown)}; it takes FinetuneConfig fields "
            f"{sorted(ft_fields)} and TrainConfig fields {sorted(tr_fields)}"
        )
    return (
        {k: v for k, v in options.items() if k in ft_fields},
        {k: v for k, v in options.items() if k in tr_fields},
    )


def finetune(
    parent: str | os.PathLike | LoadedModel | MaceModel,
    data: str | os.PathLike | Sequence[Frame],
    *,
    out: str | os.PathLike,
    name: str | None = None,
    keys: DataKeys | None = None,
    level_of_theory: str = "",
    progress: Any = None,
    verbose: bool = True,
    **options: Any,
) -> FinetuneResult:
    """Fine-tune ``parent`` on ``data``; write the model, its card and a before/after report.

    Parameters
    ----------
    parent:
        Zoo name (``"metals"``), model file, MACE ``.model`` file or a model in memory.
    data:
        The new labelled frames (extxyz / ASE db path, or frames).
    out:
        Output directory; rerunning with the same directory resumes a killed run.
    name:
        Model file name in ``out`` (default: ``<parent>-finetuned``).
    keys:
        Label names (:class:`~ase_equi.data.DataKeys`; e.g. ``DataKeys.ref()``).
    level_of_theory:
        Of the new data, for the card; default: ``info["level_of_theory"]`` of the data's
        first structure (``ValueError`` when neither says it).
    progress:
        Callback of :func:`~ase_equi.training.train`'s events.
    verbose:
        Show progress on stderr (an epoch line each epoch, a live step line on a terminal);
        the E0 refit and other messages go through ``logging``.
    options:
        Fields of :class:`FinetuneConfig` and of :class:`~ase_equi.training.TrainConfig`
        (``epochs``, ``lr``, ``freeze``, ``dtype`` …). Unset training options are chosen by
        :func:`~ase_equi.training.finetune_defaults.choose_train_options` (the parent's loss
        weights; the report lists each choice and why).

    Examples
    --------
    >>> result = finetune("metals", "my_dft.xyz", out="my-run")  # doctest: +SKIP
    >>> EquivariantCalculator("my-run/metals-finetuned.json")  # doctest: +SKIP
    """
    started = time.perf_counter()
    ft_options, tr_given = _split_options(options)
    ft = resolve_rules(FinetuneConfig(**ft_options))
    loaded = load_parent(parent)
    ident = parent_identity(parent, loaded)
    name = name or f"{ident['name']}-finetuned"
    source, frames = load_frames(data, keys=keys)
    tr_options, chosen = choose_train_options(loaded.card, frames, tr_given)
    cfg = TrainConfig(**{**tr_options, "output_dir": str(out)})
    level = level_of_theory_of(level_of_theory, data, frames)
    base = loaded.model.to(DTYPES[cfg.dtype])
    fit_frames = _train_frames(frames, cfg)
    model, new_elements, e0_report, e0_shift = adapt_to_data(
        base, frames, fit_frames, refit_e0=ft.refit_e0, seed=cfg.seed
    )
    replay, replay_report = replay_frames(parent, ft, cfg, base, fit_frames)
    heads: tuple[str, str] | None = None
    if ft.multihead:
        model, heads = _two_heads(model, base, e0_shift, loaded, ident["name"], ft)
        frames = [dataclasses.replace(f, head=1) for f in frames]
    replay = weighted_replay(replay, replay_report, ft, fit_frames, e0_shift, model.config.elements)
    penalty, pull_report = pull_for_finetune(model, base, ft.parent_pull, Path(out), bool(replay))
    result = train(
        model,
        frames,
        cfg,
        keys=keys,
        name=name,
        level_of_theory=level,
        data_description=f"fine-tuned from {ident['name']} on {file_name(source)}",
        progress=progress,
        replay=replay,
        verbose=verbose,
        lr_scale=head_lr_scale(cast("float", ft.trunk_lr_scale), learning_head(model.config)),
        penalty=penalty,
    )
    if heads is not None:
        result.model.active_head = 1
    parent_test = parent_test_set(parent, ft)
    report = before_after(
        model, result, frames, parent_test, cfg, parent=base, parent_head=0 if heads else None
    )
    report.update(
        parent=ident["name"],
        parent_sha256=ident["weights_sha256"],
        level_of_theory=level,
        heads=list(heads) if heads else [],
        defaults={k: {"value": tr_options[k], "from": v} for k, v in chosen.items()},
        new_elements=[chemical_symbols[z] for z in new_elements],
        reference_energies=e0_report,
        replay=replay_report,
        n_replay=len(replay),
        parent_pull=pull_report,
        seconds=round(time.perf_counter() - started, 1),
    )
    path = None
    if result.model_path is not None:
        write_report(Path(out), report)
        path = save_with_parent(result, ident, ft, file_name(source), report, loaded.card, heads)
    return FinetuneResult(model=result.model, train_result=result, report=report, model_path=path)


def _two_heads(
    model: MaceModel,
    base: MaceModel,
    e0_shift: np.ndarray,
    loaded: LoadedModel,
    parent_name: str,
    ft: FinetuneConfig,
) -> tuple[MaceModel, tuple[str, str]]:
    """The adapted ``model`` with the parent's head (E0 before the refit) in front."""
    e0_new = model.reference_energies.detach().double().cpu().numpy()
    constants = {
        "reference_energies": e0_new - e0_shift,
        "scale": float(base.scale.double()),
        "shift": float(base.shift.double()),
    }
    parent_head = loaded.head if loaded.head and loaded.head != "Default" else parent_name
    if parent_head == ft.new_head:
        parent_head = f"{parent_head}-parent"
    names = (parent_head, ft.new_head)
    return add_head(model, constants, names, cast("int", ft.head_layers)), names


def _train_frames(frames: list[Frame], cfg: TrainConfig) -> list[Frame]:
    """The frames that :func:`train` will put in its training split (plus isolated atoms)."""
    split = split_frames(
        frames, valid_fraction=cfg.valid_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed
    )
    return [frames[k] for k in sorted(split["train"] + split["isolated"])]


def _parent_sha(loaded: LoadedModel) -> str:
    from ..io.model_file import read_header

    if not loaded.source:  # a model in memory: no header
        return ""
    try:
        return str(read_header(loaded.source)["weights_sha256"])
    except (ValueError, OSError):  # a MACE file: no header of ours (ModelFileError is a ValueError)
        return ""
