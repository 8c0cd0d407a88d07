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
3. **Replay** (``replay_data``). A seeded sample of ``replay_count`` labelled frames of the
   parent's own data (or, with ``relabel_replay``, any structures labelled by the parent model
   itself) joins the training split with loss weight ``replay_weight`` against forgetting.
4. **Training** with :func:`ase_equi.training.train` (lower learning rate by default, chosen
   blocks frozen with ``freeze``), checkpointed and resumable like any training run.
5. **Before/after report**: errors on the new data's test split of the parent **after the E0
   refit** ("before": what training itself changed) and of the fine-tuned model ("after");
   when ``parent_test_data`` is given, also on the parent's own test set
   (``finetune_report.md/.json``, ``finetune_report.png``). The card names the parent by zoo
   name or file name and the SHA-256 of its weights (never a path).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase.data import chemical_symbols

from ..data.batch import frames_to_graphs, make_batch
from ..data.frames import DataKeys, Frame, load_frames, read_frames, split_frames
from ..graph import element_indices
from ..io.model_file import LoadedModel, model_paths, read_model_file, save_model
from ..model.gradients import energy_forces_stress
from ..model.mace import MaceModel
from .adaptation import (
    adapt_to_data,
    add_elements,
    predict_energies,
    refit_reference_energies,
)
from .config import DTYPES, TrainConfig
from .finetune_report import before_after, measure_errors, write_report
from .loss import UNITS
from .report import TrainResult
from .trainer import train

log = logging.getLogger(__name__)

__all__ = [
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
    replay_data: extxyz/db path of labelled frames to rehearse (None: no replay).
    replay_count: how many of them to sample (seeded by ``TrainConfig.seed``; 0: all).
    replay_weight: loss weight of each replayed frame (1: like a new frame).
    relabel_replay: label the replayed structures with the parent model instead of their
        stored labels (for structures without labels, or to rehearse the parent exactly).
    parent_test_data: the parent's own test set, to measure forgetting before and after.
    """

    refit_e0: bool = True
    replay_data: str | None = None
    replay_count: int = 200
    replay_weight: float = 1.0
    relabel_replay: bool = False
    parent_test_data: str | None = None

    def __post_init__(self) -> None:
        if self.replay_count < 0:
            raise ValueError(f"FinetuneConfig.replay_count must be >= 0, got {self.replay_count}")
        if not self.replay_weight >= 0:
            raise ValueError(f"FinetuneConfig.replay_weight must be >= 0, got {self.replay_weight}")


# defaults of TrainConfig that differ when fine-tuning: a gentle learning rate, short runs
FINETUNE_TRAIN_DEFAULTS = {"lr": 1e-3, "epochs": 50, "scheduler": "cosine", "ema_decay": 0.99}


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


def _sample(frames: list[Frame], count: int, seed: int) -> list[Frame]:
    if count == 0 or count >= len(frames):
        return frames
    rng = np.random.default_rng(seed)
    return [frames[k] for k in sorted(rng.choice(len(frames), size=count, replace=False))]


def _relabel(model: MaceModel, frames: Sequence[Frame]) -> list[Frame]:
    out = []
    dtype = next(model.parameters()).dtype
    for f in frames:
        g = frames_to_graphs([f], model.config.elements, model.config.r_max, dtype=dtype)[0]
        batch = make_batch([f], [g])
        pred = energy_forces_stress(model, batch.graph, forces=True, stress=f.has_stress)
        stress = None
        if f.has_stress:
            from ase.stress import full_3x3_to_voigt_6_stress

            stress = full_3x3_to_voigt_6_stress(pred["stress"][0].detach().double().numpy())
        out.append(
            dataclasses.replace(
                f,
                energy=float(pred["energy"].detach().double().sum()),
                forces=pred["forces"].detach().double().numpy().reshape(-1, 3),
                stress=stress,
            )
        )
    return out


def _split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    ft_fields = {f.name for f in dataclasses.fields(FinetuneConfig)}
    tr_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(options) - ft_fields - tr_fields
    if unknown:
        raise TypeError(
            f"finetune() got unknown options {sorted(unknown)}; it takes FinetuneConfig fields "
            f"{sorted(ft_fields)} and TrainConfig fields {sorted(tr_fields - {'output_dir'})}"
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
    progress:
        Callback of :func:`~ase_equi.training.train`'s events.
    verbose:
        Show progress on stderr (an epoch line each epoch, a live step line on a terminal);
        the E0 refit and other messages go through ``logging``.
    options:
        Fields of :class:`FinetuneConfig` (``refit_e0``, ``replay_data``, ``replay_count``,
        ``replay_weight``, ``relabel_replay``, ``parent_test_data``) and of
        :class:`~ase_equi.training.TrainConfig` (``epochs``, ``lr``, ``freeze``, ``dtype`` …);
        the training defaults differ from training from scratch: ``FINETUNE_TRAIN_DEFAULTS``.

    Examples
    --------
    >>> result = finetune("metals", "my_dft.xyz", out="my-run", epochs=30)  # doctest: +SKIP
    >>> EquivariantCalculator("my-run/metals-finetuned.json")  # doctest: +SKIP
    """
    started = time.perf_counter()
    ft_options, tr_options = _split_options(options)
    ft = FinetuneConfig(**ft_options)
    cfg = TrainConfig(**{**FINETUNE_TRAIN_DEFAULTS, **tr_options, "output_dir": str(out)})
    loaded = load_parent(parent)
    ident = parent_identity(parent, loaded)
    parent_name = ident["name"]
    name = name or f"{parent_name}-finetuned"
    dtype = DTYPES[cfg.dtype]
    base = loaded.model.to(dtype)
    source, frames = load_frames(data, keys=keys)
    model, new_elements, e0_report, e0_shift = adapt_to_data(
        base, frames, _train_frames(frames, cfg), refit_e0=ft.refit_e0, seed=cfg.seed
    )
    replay = []
    if ft.replay_data:
        replay = _replay_frames(ft.replay_data, ft, cfg, base, model, e0_shift)

    result = train(
        model,
        frames,
        cfg,
        keys=keys,
        name=name,
        level_of_theory=level_of_theory
        or f"not stated (parent {parent_name}: {loaded.card.get('level_of_theory', 'unknown')})",
        data_description=f"fine-tuned from {parent_name} on {_file_name(source)}",
        progress=progress,
        replay=replay,
        verbose=verbose,
    )
    report = before_after(
        model, result, frames, ft.parent_test_data, cfg, parent=loaded.model.to(dtype)
    )
    report.update(
        parent=parent_name,
        parent_sha256=ident["weights_sha256"],
        new_elements=[chemical_symbols[z] for z in new_elements],
        reference_energies=e0_report,
        n_replay=len(replay),
        seconds=round(time.perf_counter() - started, 1),
    )
    path = None
    if result.model_path is not None:
        write_report(Path(out), report)
        path = _save_with_parent(result.model_path, result, ident, ft, _file_name(source), report)
    return FinetuneResult(model=result.model, train_result=result, report=report, model_path=path)


def _replay_frames(
    replay_data: str,
    ft: FinetuneConfig,
    cfg: TrainConfig,
    base: MaceModel,
    model: MaceModel,
    e0_shift: np.ndarray,
) -> list[Frame]:
    """Step 3: a seeded sample of the frames in ``replay_data`` (labelled by ``base`` with
    ``relabel_replay``), energies shifted by ``Σ_z N_z e0_shift_z`` (eV), loss weight
    ``ft.replay_weight``."""
    replay = _sample(
        read_frames(replay_data, elements=model.config.elements), ft.replay_count, cfg.seed
    )
    if ft.relabel_replay:
        replay = _relabel(base, replay)
    elements = model.config.elements
    return [
        dataclasses.replace(
            f,
            energy=f.energy + float(e0_shift[element_indices(f.atoms.numbers, elements)].sum()),
            weight=ft.replay_weight,
        )
        for f in replay
    ]


def _save_with_parent(
    model_path: Path,
    result: TrainResult,
    ident: dict[str, str],
    ft: FinetuneConfig,
    data_name: str,
    report: dict[str, Any],
) -> Path:
    """Rewrite the trained model's file with a card naming the parent (``ident``), the data
    file's name, the fine-tuning settings (file names only) and the before/after errors."""
    card = read_model_file(model_path, dtype=None).card
    settings = dataclasses.asdict(ft)
    for key in ("replay_data", "parent_test_data"):
        settings[key] = settings[key] and _file_name(settings[key])
    card.update(
        parent=ident,
        finetuning={
            "data": data_name,
            "settings": settings,
            "reference_energies": report["reference_energies"],
            "report": {k: report[k] for k in ("new_test", "parent_test") if k in report},
        },
    )
    return save_model(result.model, model_paths(model_path)[0], card=card)


def _train_frames(frames: list[Frame], cfg: TrainConfig) -> list[Frame]:
    """The frames that :func:`train` will put in its training split (plus isolated atoms)."""
    split = split_frames(
        frames, valid_fraction=cfg.valid_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed
    )
    return [frames[k] for k in sorted(split["train"] + split["isolated"])]


def _file_name(source: str | os.PathLike | None) -> str:
    """A data or model file as a card names it: the file name only (no machine's path)."""
    return Path(source).name if source else "given frames"


def _parent_sha(loaded: LoadedModel) -> str:
    from ..io.model_file import read_header

    if not loaded.source:  # a model in memory: no header
        return ""
    try:
        return str(read_header(loaded.source)["weights_sha256"])
    except (ValueError, OSError):  # a MACE file: no header of ours (ModelFileError is a ValueError)
        return ""
