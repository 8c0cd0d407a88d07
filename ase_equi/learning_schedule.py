"""When on-the-fly learning calls its reference: the trigger (a threshold on the uncertainty, or
every N-th step), the selection windows and the pacing of the budget of calls over the run
(:func:`ase_equi.learning.learn_on_the_fly` has the whole rule in its module docstring)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import AseEquiError

__all__ = ["budget_so_far", "check_resumed_model", "check_trigger", "window_length"]


def check_resumed_model(folder: Path, model: str | os.PathLike) -> None:
    """:class:`~ase_equi.errors.AseEquiError` when ``folder`` holds a run begun with another
    ``model`` than this call's (a resume continues the saved run: its structure, its model and
    its learned data, so another model would be recorded but never used)."""
    setup = folder / "setup.json"
    if not (folder / "state.json").exists() or not setup.exists():
        return
    started = str(json.loads(setup.read_text())["model"])
    given = os.fspath(model)
    same = started == given or (
        Path(started).exists() and Path(given).exists() and Path(started).samefile(given)
    )
    if not same:
        raise AseEquiError(
            f"learn_on_the_fly: {folder} holds a run begun with model {started!r}, not "
            f"{given!r}; resume it with that model, or give another out="
        )


def check_trigger(
    threshold: float | None,
    every: int | None,
    min_interval: int | None = None,
    max_calls: int = 1,
) -> None:
    """``ValueError`` unless exactly one of ``threshold`` (> 0, eV/Å) and ``every`` (≥ 1
    steps) is given, ``min_interval`` is None or (with ``threshold`` only) an integer ≥ 1
    (steps), and ``max_calls`` an integer ≥ 0."""
    if (threshold is None) == (every is None):
        raise ValueError("give exactly one of threshold (eV/Å) and every (steps)")
    if threshold is not None and not 0 < threshold < np.inf:
        raise ValueError(f"threshold must be a number > 0 (eV/Å), got {threshold!r}")
    for name, value, least in (("every", every, 1), ("min_interval", min_interval, 1),
                               ("max_calls", max_calls, 0)):  # fmt: skip
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < least
        ):
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    if every is not None and min_interval is not None:
        raise ValueError(
            f"min_interval ({min_interval}) applies to threshold only: with every={every} the "
            "reference calls are already every steps apart"
        )


def budget_so_far(max_calls: int, step: int, steps: int) -> int:
    """Reference calls released by ``step`` of ``steps``: ⌈max_calls · step / steps⌉ (the
    budget paced evenly over the run; what is not spent carries over)."""
    return -(-max_calls * step // steps)


def window_length(
    state: dict[str, Any], every: int | None, given: int | None, steps: int, max_calls: int
) -> int:
    """Steps per selection window: ``every``; else ``given``, or the window of the run being
    resumed, or ``max(1, steps // (2 * max_calls))``. ``ValueError`` when ``given`` is not the
    window of the run being resumed."""
    if every:
        return every
    before = state.get("window_steps")
    if given is not None and before is not None and given != before:
        raise ValueError(
            f"min_interval={given}, but the run being resumed uses windows of {before} steps"
        )
    return int(given or before or max(1, steps // (2 * max(max_calls, 1))))
