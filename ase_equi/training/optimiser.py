"""Parameter updates of a training run: AdamW, the learning-rate schedule and the weight EMA.

Weight decay applies to all trainable parameters. ``scheduler="plateau"`` multiplies the learning
rate by ``lr_factor`` after ``scheduler_patience`` epochs without a better monitored loss;
``"cosine"`` anneals it to 0 over ``epochs``; ``"constant"`` keeps it. The EMA decay at step t is
``min(ema_decay, (1 + t) / (10 + t))``, so that early averages do not remember the random
initialisation; frozen parameters are never averaged (they stay bit-identical).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .config import TrainConfig


def parameter_groups(
    net: torch.nn.Module, lr: float, lr_scale: Callable[[str], float] | None = None
) -> list[dict[str, Any]]:
    """The trainable parameters of ``net`` in groups of learning rate ``lr × lr_scale(name)``
    (one group at ``lr`` without ``lr_scale``), the group at ``lr`` first."""
    groups: dict[float, list[torch.nn.Parameter]] = {}
    for name, param in net.named_parameters():
        if param.requires_grad:
            factor = 1.0 if lr_scale is None else float(lr_scale(name))
            groups.setdefault(factor, []).append(param)
    order = sorted(groups, key=lambda f: (f != 1.0, -f))
    return [{"params": groups[f], "lr": lr * f} for f in order]


def lr_factors(optimizer: torch.optim.Optimizer, lr: float) -> list[float]:
    """Each parameter group's learning rate over ``lr``, rounded to 12 digits (taken before a
    scheduler step: what a checkpoint records and a resume must match)."""
    return [round(group["lr"] / lr, 12) for group in optimizer.param_groups]


def check_lr_factors(saved: list[float], now: list[float], path: Any) -> None:
    """Refuse to resume checkpoint ``path`` (learning-rate factors ``saved``) with other
    factors ``now``: its optimiser state would silently bring back the old rates."""
    if saved != now:
        raise ValueError(
            f"{path} was written with learning-rate factors {saved} per parameter group "
            f"(train()'s lr_scale, fine-tuning's trunk_lr_scale), this run asks for {now}; "
            "use the same settings to resume or a new output directory"
        )


def make_optimiser(
    net: torch.nn.Module, config: TrainConfig, lr_scale: Callable[[str], float] | None = None
) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over the trainable parameters of ``net`` (learning rates: see
    :func:`parameter_groups`) and its scheduler (None for a constant learning rate)."""
    groups = parameter_groups(net, config.lr, lr_scale)
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    if config.scheduler == "plateau":
        scheduler: Any = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=config.lr_factor, patience=config.scheduler_patience
        )
    elif config.scheduler == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    else:
        scheduler = None
    return optimizer, scheduler


def restore_optimiser(
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    *,
    epochs: int,
    factors: list[float],
    path: Any,
) -> None:
    """Load the optimiser and scheduler of checkpoint ``path`` (``state``, its
    ``"optimizer"``, ``"scheduler"`` and ``"lr_factors"``, checked against this run's
    ``factors`` by :func:`check_lr_factors`); a cosine schedule then ends at ``epochs``.

    A resume may change ``epochs`` (``RESUMABLE_FIELDS``), but the saved scheduler holds the
    old length (``T_max``): a cosine kept on it would stop short of zero (fewer epochs) or
    pass zero and rise again (more). With another ``epochs``, the learning rates from the
    restored epoch on are those of a run started with the new ``epochs`` (the closed-form
    cosine); with the same ``epochs`` the saved state is kept as it is (bit-for-bit resume).
    """
    check_lr_factors(state.get("lr_factors", [1.0]), factors, path)
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    if isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
        if scheduler.T_max != epochs:
            scheduler.T_max = epochs
            phase = 0.5 * (1.0 + math.cos(math.pi * scheduler.last_epoch / epochs))
            for group, base in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
                group["lr"] = scheduler.eta_min + (base - scheduler.eta_min) * phase


def step_scheduler(scheduler: Any, monitor: float) -> None:
    """End-of-epoch scheduler step; ``monitor`` is the loss a plateau scheduler watches."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(monitor)
    elif scheduler is not None:
        scheduler.step()


@torch.no_grad()
def update_ema(ema: torch.nn.Module, net: torch.nn.Module, decay: float, step: int) -> None:
    """``ema ← ema + (1 − d)(net − ema)`` with ``d = min(decay, (1 + step) / (10 + step))``."""
    d = min(decay, (1 + step) / (10 + step))
    for averaged, current in zip(ema.parameters(), net.parameters(), strict=True):
        if current.requires_grad:  # frozen weights stay bit-identical
            averaged.lerp_(current, 1.0 - d)
