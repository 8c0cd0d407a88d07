"""Training settings: one frozen dataclass, validated, JSON-clean."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from .loss import LossWeights

DTYPES = {"float64": torch.float64, "float32": torch.float32}
SCHEDULERS = ("plateau", "cosine", "constant")
# blocks that fine-tuning may freeze, and the MaceModel sub-modules they name
BLOCKS = {
    "embedding": ("node_embedding",),
    "radial": ("interactions.*.radial_mlp",),
    "interactions": ("interactions",),
    "products": ("products",),
    "readouts": ("readouts",),
}
CHECKPOINT_FORMAT = "ase_equi-checkpoint"
# settings a resumed run may change; every other field must match the checkpoint
RESUMABLE_FIELDS = frozenset({"epochs", "patience", "checkpoint_every", "output_dir", "plots"})


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (the architecture is a separate :class:`ModelConfig`).

    Parameters
    ----------
    seed: split, initial weights and data order.
    epochs: passes over the training split.
    batch_size: structures per (global) batch.
    lr, weight_decay: AdamW learning rate and decoupled weight decay.
    energy_weight, forces_weight, stress_weight: loss weights (see ``training.loss``).
    ema_decay: decay of the exponential moving average of the weights (0: no averaging).
    scheduler: ``"plateau"``, ``"cosine"`` or ``"constant"`` (see the module docstring).
    lr_factor, scheduler_patience: settings of ``"plateau"``.
    patience: stop after this many epochs without a better validation loss (None: never).
    max_grad_norm: clip the gradient norm to this (None: no clipping).
    valid_fraction, test_fraction: shares of the (non-isolated) frames held out.
    checkpoint_every: also write a checkpoint every this many steps (0: at epoch ends only).
    dtype: ``"float64"`` or ``"float32"`` for weights and graphs.
    output_dir: where everything is written, and from where a rerun resumes.
    plots: write ``parity.png`` and ``learning_curves.png`` (needs matplotlib).
    freeze: blocks whose parameters are not trained, among ``embedding``, ``radial`` (the
        radial MLPs), ``interactions`` (all of each interaction, radial MLPs included),
        ``products`` and ``readouts``; they stay bit-identical.

    Examples
    --------
    >>> cfg = TrainConfig(epochs=2, batch_size=2, output_dir="run")
    >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
    True
    >>> TrainConfig(valid_fraction=1.5)
    Traceback (most recent call last):
    ...
    ValueError: TrainConfig.valid_fraction must be in [0, 1), got 1.5
    """

    seed: int = 0
    epochs: int = 100
    batch_size: int = 4
    lr: float = 1e-2
    weight_decay: float = 5e-7
    energy_weight: float = 1.0
    forces_weight: float = 100.0
    stress_weight: float = 1.0
    ema_decay: float = 0.99
    scheduler: str = "plateau"
    lr_factor: float = 0.8
    scheduler_patience: int = 5
    patience: int | None = None
    max_grad_norm: float | None = 10.0
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    checkpoint_every: int = 100
    dtype: str = "float64"
    output_dir: str = "training"
    plots: bool = True
    freeze: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ValueError(f"TrainConfig.{name} must be {rule}, got {getattr(self, name)!r}")

        for name in ("seed", "epochs", "batch_size", "scheduler_patience", "checkpoint_every"):
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool), name, "an integer")
        for name in ("lr", "weight_decay", "energy_weight", "forces_weight", "stress_weight"):
            value = getattr(self, name)  # inf or NaN would train to nonsense, or not at all
            finite = isinstance(value, (int, float)) and not isinstance(value, bool)
            need(finite and math.isfinite(value), name, "a finite number")
        need(self.seed >= 0, "seed", ">= 0")
        need(self.epochs >= 1, "epochs", ">= 1")
        need(self.batch_size >= 1, "batch_size", ">= 1")
        need(self.lr > 0, "lr", "> 0")
        need(self.weight_decay >= 0, "weight_decay", ">= 0")
        for name in ("energy_weight", "forces_weight", "stress_weight"):
            need(getattr(self, name) >= 0, name, ">= 0")
        need(
            self.energy_weight + self.forces_weight + self.stress_weight > 0,
            "energy_weight",
            "> 0 when the other weights are 0",
        )
        need(0 <= self.ema_decay < 1, "ema_decay", "in [0, 1)")
        need(self.scheduler in SCHEDULERS, "scheduler", f"one of {SCHEDULERS}")
        need(0 < self.lr_factor < 1, "lr_factor", "in (0, 1)")
        need(self.scheduler_patience >= 0, "scheduler_patience", ">= 0")
        need(self.patience is None or self.patience >= 1, "patience", "None or >= 1")
        need(self.max_grad_norm is None or self.max_grad_norm > 0, "max_grad_norm", "None or > 0")
        need(0 <= self.valid_fraction < 1, "valid_fraction", "in [0, 1)")
        need(0 <= self.test_fraction < 1, "test_fraction", "in [0, 1)")
        need(
            self.valid_fraction + self.test_fraction < 1,
            "test_fraction",
            "< 1 - valid_fraction (no training frames left)",
        )
        need(self.checkpoint_every >= 0, "checkpoint_every", ">= 0")
        need(self.dtype in DTYPES, "dtype", "'float64' or 'float32'")
        need(bool(str(self.output_dir)), "output_dir", "a directory")
        need(isinstance(self.plots, bool), "plots", "True or False")
        freeze = (self.freeze,) if isinstance(self.freeze, str) else tuple(self.freeze)
        object.__setattr__(self, "freeze", freeze)
        need(set(freeze) <= set(BLOCKS), "freeze", f"a subset of {sorted(BLOCKS)}")

    @property
    def loss_weights(self) -> LossWeights:
        return LossWeights(self.energy_weight, self.forces_weight, self.stress_weight)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {sorted(unknown)}")
        return cls(**data)
