"""Fine-tuning's defaults, chosen from the parent and the new data (and reported).

- **Loss weights**: the parent's own, those it **ended** its training with
  (``card["training_stages"]``: its last stage; else ``card["training"]["settings"]``). The
  zoo's parents ended with energy : forces : stress = 1000 : 100 : 10000 (their first stage
  used 10 : 100 : 1000; with those, fine-tuning fitted forces and stresses but left energy
  offsets between structure types, e.g. −22 meV/atom on Ni slabs against +3 in the bulk, and
  lost the energy to training from scratch: ``benchmarks/results/2026-12-01-finetune-round5.md``).
  A parent without them (an imported MACE file, a model saved without a training card) gets
  weights from the new data's statistics, each term scaled to the forces'
  (:func:`weights_from_data`).
- **Stress weight 0** when no new frame has a stress label (nothing to fit).
- **Learning rate and epochs**: ``FINETUNE_TRAIN_DEFAULTS`` (half of training's learning
  rate, cosine decay; on copper with a 5 % larger lattice, 8 epochs at 1e-3 left test errors
  of 12 meV/atom and 17 meV/Å, at 5e-3 2.5 meV/atom and 8.4 meV/Å:
  ``benchmarks/results/2026-11-30-finetune.md``).

Anything the user passes wins; the report says for each setting where it came from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.frames import Frame

if TYPE_CHECKING:
    from .finetune import FinetuneConfig

# defaults of TrainConfig that differ when fine-tuning: a gentle learning rate, short runs
FINETUNE_TRAIN_DEFAULTS: dict[str, Any] = {
    "lr": 5e-3,
    "epochs": 50,
    "scheduler": "cosine",
    "ema_decay": 0.99,
}
WEIGHTS = ("energy_weight", "forces_weight", "stress_weight")
#: bounds of the weights chosen from the data's statistics (forces weight fixed at 100)
DATA_WEIGHT_RANGE = (1.0, 1.0e4)


def parent_loss_weights(card: dict[str, Any]) -> dict[str, float] | None:
    """The loss weights the parent ended its training with (its card's last training stage;
    for a single training, its settings), or None when the card does not state all three."""
    stages = card.get("training_stages")
    last = stages[-1] if isinstance(stages, list) and stages else card.get("training")
    settings = (last or {}).get("settings") or {}
    if not all(isinstance(settings.get(k), (int, float)) for k in WEIGHTS):
        return None
    return {k: float(settings[k]) for k in WEIGHTS}


def weights_from_data(frames: Sequence[Frame]) -> dict[str, float]:
    """Weights that give each term the forces' size on ``frames`` at the start.

    ``w_F = 100``, ``w_E = 100 · var(F) / var(E/N)`` and ``w_σ = 100 · var(F) / var(σ)``
    (variances of the labels over the frames; E/N after removing a least-squares per-element
    constant), each clipped to ``DATA_WEIGHT_RANGE``.
    """
    labelled = [np.ravel(f.forces) for f in frames if f.forces is not None]
    forces = np.concatenate(labelled or [np.zeros(1)])
    var_f = max(float(np.var(forces)), 1e-12)
    elements = sorted({int(z) for f in frames for z in f.atoms.numbers})
    counts = np.array([[np.sum(f.atoms.numbers == z) for z in elements] for f in frames], float)
    energy = np.array([f.energy for f in frames])
    residual = energy - counts @ np.linalg.lstsq(counts, energy, rcond=None)[0]
    var_e = float(np.var(residual / counts.sum(axis=1))) if len(frames) > 1 else 0.0
    stress = [np.asarray(f.stress) for f in frames if f.has_stress and f.stress is not None]
    var_s = float(np.var(np.concatenate(stress))) if stress else 0.0
    low, high = DATA_WEIGHT_RANGE

    def ratio(var: float) -> float:
        return float(np.clip(100.0 * var_f / var, low, high)) if var > 0 else high

    return {"energy_weight": ratio(var_e), "forces_weight": 100.0, "stress_weight": ratio(var_s)}


def choose_train_options(
    card: dict[str, Any], frames: Sequence[Frame], given: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """TrainConfig options for fine-tuning and, per option, where its value came from.

    ``given`` (the user's options) wins; then the parent's loss weights, else the data's
    statistics; the stress weight is 0 without stress labels.
    """
    options = {**FINETUNE_TRAIN_DEFAULTS}
    source = dict.fromkeys(options, "fine-tuning default")
    weights, origin = parent_loss_weights(card), "the parent's training settings (card)"
    if weights is None:
        weights, origin = weights_from_data(frames), "the new data's statistics"
    options.update(weights)
    source.update(dict.fromkeys(weights, origin))
    if not any(f.has_stress for f in frames):
        options["stress_weight"], source["stress_weight"] = 0.0, "no stress labels in the data"
    options.update(given)
    source.update(dict.fromkeys(given, "given"))
    return options, source


def level_of_theory_of(asked: str, data: Any, frames: Sequence[Frame]) -> str:
    """The new data's level of theory: ``asked``, else ``info["level_of_theory"]`` of the
    data's first structure; ``ValueError`` when neither says it (a card never guesses)."""
    if asked:
        return asked
    first = None
    if isinstance(data, (str, Path)):
        import ase.io

        first = ase.io.read(data, index=0)
    elif data and not isinstance(data[0], Frame):
        first = data[0]
    found = getattr(first, "info", {}).get("level_of_theory") if first is not None else None
    if found:
        return str(found)
    raise ValueError(
        "the level of theory of the new data is not stated: pass level_of_theory='...' "
        "(CLI: --level-of-theory) or store it as info['level_of_theory'] in the data file"
    )


#: with two heads: the new head owns a copy of the parent's last layer, and the shared layers
#: (and the parent's head) train at this fraction of ``lr``; chosen on copper only
#: (``benchmarks/results/2026-12-01-finetune-round5.md``)
TWO_HEAD_LAYERS = 1
TWO_HEAD_TRUNK_LR_SCALE = 0.3


def resolve_rules(ft: FinetuneConfig) -> FinetuneConfig:
    """``ft`` with the settings that depend on the number of heads decided (those the user
    left at None):

    - ``replay_new_element_share``: 0.5 with two heads (the parent's labels of the new data's
      elements go to the parent's head), 0 with one (there they would contradict the new
      labels);
    - ``head_layers``: :data:`TWO_HEAD_LAYERS` with two heads (the parent's head keeps its own
      last layer, so what the new labels teach that layer never reaches it), 0 with one;
    - ``trunk_lr_scale``: :data:`TWO_HEAD_TRUNK_LR_SCALE` with two heads (the shared layers
      move slowly: their features serve the parent's head too), 1 with one (the single head
      must move every layer to the new level of theory).

    ``ValueError`` for ``head_layers`` > 0 with one head (there is no second head to own
    layers).
    """
    two = ft.multihead
    if not two and ft.head_layers:
        raise ValueError(
            f"FinetuneConfig.head_layers = {ft.head_layers} needs multihead=True: a single head "
            "has no second head to own layers"
        )
    chosen: dict[str, Any] = {
        "replay_new_element_share": 0.5 if two else 0.0,
        "head_layers": TWO_HEAD_LAYERS if two else 0,
        "trunk_lr_scale": TWO_HEAD_TRUNK_LR_SCALE if two else 1.0,
    }
    unset = {k: v for k, v in chosen.items() if getattr(ft, k) is None}
    return dataclasses.replace(ft, **unset)


def head_lr_scale(trunk: float, new_head: tuple[str, ...]) -> Callable[[str], float]:
    """Learning-rate factor per parameter name: 1 for the head that learns the new level of
    theory (names starting with a prefix in ``new_head``: with two heads the new head's
    readouts and own layers, :func:`~.multihead.head_prefixes`; with one, ``readouts.``),
    ``trunk`` for everything else (shared layers, the parent's head).

    Why: the parent ended its training at a small learning rate; the shared layers hold what
    it knew about every element, and a fresh head needs a larger rate than they tolerate.

    >>> f = head_lr_scale(0.1, ("head_readouts.0.", "head_interactions.0."))
    >>> f("head_readouts.0.1.linear.weight"), f("readouts.0.linear.weight"), f("products.0.x")
    (1.0, 0.1, 0.1)
    """

    def scale(name: str) -> float:
        return 1.0 if name.startswith(new_head) else trunk

    return scale
