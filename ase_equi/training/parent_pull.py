"""The pull of the parent's weights back towards their values during fine-tuning ("L2-SP").

Fine-tuning adds to each step's loss

.. math::

    P(\\theta) = \\frac{\\lambda}{n} \\sum_{i \\in S} (\\theta_i - \\theta_i^{parent})^2,

where S are the parameters that carry the parent's level of theory: the shared (trunk)
layers and, with two heads and replay, the parent's own head (``readouts.*``); never the
head that learns the new level of theory (``head_readouts.*`` with two heads, ``readouts.*``
with one).
θ^parent are their values when fine-tuning starts (the parent's weights), n the number of
entries in S. Dividing by n makes λ the weight of the **mean** squared change of a pulled
weight, so one λ means the same for a small and a large model; the loss terms it competes
with are means as well (:mod:`.loss`). Its gradient is ``∂P/∂θ_i = 2 λ (θ_i − θ_i^parent) / n``.

Why: with two heads, the parent's head sees the parent's level of theory only through the
shared layers and through its own readouts, which train on a small replay set; every change of
either that the replay does not pin down is forgotten by the parent's head. The pull makes
every change pay in proportion to its square. Measured on copper
(``benchmarks/results/2026-11-30-finetune-round4.md``): a pull of the trunk alone shrank its mean
squared change tenfold (λ = 100) but not the forgetting (2.25× → 2.13×); the parent's
readouts then moved by 10 % and made up for it (the fine-tuned trunk with the parent's
original readouts, or the reverse, gave 5–17× the parent's force errors).

Weights the parent did not have (the rows of an element new to it) are not pulled: a parameter
whose shape differs from the parent's is left out of S (and reported), so that nothing is
pulled towards a random initialisation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch

from ..errors import CheckpointError
from .multihead import head_prefixes

#: the default λ, chosen on one data set only (copper; see
#: benchmarks/results/2026-11-30-finetune-round4.md)
DEFAULT_PARENT_PULL = 1000.0
#: the file in a fine-tuning run's directory that records λ (a resume with another is refused)
RECORD = "parent_pull.json"
#: parameter-name prefixes of all readout heads
HEAD_PREFIXES = ("readouts.", "head_readouts.")
#: the prefix of the head that learns the new level of theory when there are two heads
NEW_HEAD = "head_readouts."


def check_strength(strength: float) -> float:
    """``strength`` (λ, dimensionless like the loss weights) as a float; ``ValueError`` naming
    the value unless it is finite and ≥ 0."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)):
        raise ValueError(f"parent_pull must be a number >= 0, got {strength!r}")
    if not math.isfinite(strength) or strength < 0:
        raise ValueError(f"parent_pull must be finite and >= 0, got {strength!r}")
    return float(strength)


def shared_parameters(
    model: torch.nn.Module,
    parent: torch.nn.Module | None = None,
    free: tuple[str, ...] = HEAD_PREFIXES,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The parameters of ``model`` that the pull anchors (all but names starting with a prefix
    in ``free``; by default all but the heads), as detached copies ``{name: tensor}``, and the
    names left out because ``parent`` (when given) has no parameter of that name and shape
    (new elements' rows)."""
    theirs = dict(parent.named_parameters()) if parent is not None else None
    anchors: dict[str, torch.Tensor] = {}
    left_out: list[str] = []
    for name, param in model.named_parameters():
        if name.startswith(free) or not param.requires_grad:
            continue
        if theirs is not None and (name not in theirs or theirs[name].shape != param.shape):
            left_out.append(name)
            continue
        anchors[name] = param.detach().clone()
    return anchors, left_out


def parent_pull(
    anchors: dict[str, torch.Tensor], strength: float
) -> Callable[[torch.nn.Module], torch.Tensor] | None:
    """The loss term ``P(model)`` of the module docstring, anchored at ``anchors`` (from
    :func:`shared_parameters`), or None for λ = 0 (the loss stays exactly as without it).

    >>> net = torch.nn.Linear(2, 1)
    >>> pull = parent_pull(shared_parameters(net)[0], 4.0)
    >>> float(pull(net).detach())
    0.0
    >>> parent_pull({}, 0.0) is None
    True
    """
    strength = check_strength(strength)
    if strength == 0 or not anchors:  # nothing to pull (e.g. every shared block frozen)
        return None
    count = sum(t.numel() for t in anchors.values())

    def pull(model: torch.nn.Module) -> torch.Tensor:
        params = dict(model.named_parameters())
        squares = [((params[k] - ref.to(params[k])) ** 2).sum() for k, ref in anchors.items()]
        return torch.stack(squares).sum() * (strength / count)

    return pull


def pull_for_finetune(
    model: torch.nn.Module,
    parent: torch.nn.Module,
    strength: float,
    out: Path,
    replay: bool,
) -> tuple[Callable[[torch.nn.Module], torch.Tensor] | None, dict[str, Any]]:
    """The pull for a fine-tune of ``parent`` starting from ``model`` (adapted, heads added),
    recorded in ``out``, and its report: λ, the number of pulled weights, those left out.

    Pulled: everything but the head that learns the new level of theory (module docstring);
    the parent's head only when there is ``replay``: without it the parent's head gets no
    gradient from data and AdamW leaves it untouched, whereas a pull would give it one that
    AdamW's normalisation turns into steps of about ``lr`` around the parent's values.

    A run directory that already holds a checkpoint made with another λ is refused
    (:class:`~ase_equi.errors.CheckpointError`): resuming it would silently change the loss.
    """
    strength = check_strength(strength)
    names = [name for name, _ in model.named_parameters()]
    two_heads = any(k.startswith(NEW_HEAD) for k in names)
    free: tuple[str, ...] = ("readouts.",)
    if two_heads:  # the parent's head: its readouts and the last layers it owns
        parent_head, new_head = head_prefixes(cast("Any", model).config)
        free = new_head if replay else parent_head + new_head
    anchors, left_out = shared_parameters(model, parent, free)
    record = out / RECORD
    has_checkpoint = any((out / "checkpoints").glob("*.pt"))
    if has_checkpoint and record.exists():
        before = json.loads(record.read_text()).get("strength")
        if before != strength:
            raise CheckpointError(
                f"{out} holds a fine-tune with parent_pull={before}, asked {strength}: "
                "use another output directory (or the same parent_pull) to resume"
            )
    elif has_checkpoint and strength != 0:
        raise CheckpointError(
            f"{out} holds a fine-tune made without the parent pull, asked parent_pull="
            f"{strength}: use another output directory (or parent_pull=0) to resume"
        )
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"strength": strength}))
    report = {
        "strength": strength,
        "pulled_weights": sum(t.numel() for t in anchors.values()),
        "parent_head_pulled": two_heads and replay,
        "left_out": left_out,
    }
    return parent_pull(anchors, strength), report
