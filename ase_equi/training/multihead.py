"""A second readout head for fine-tuning: the parent's level of theory keeps its own head.

:func:`add_head` turns a single-head model into a two-head one (``config.heads = (parent,
new)``): every shared layer as it was, head 0 with the parent's readouts and constants
(E0, scale, shift), head 1 with a copy of the parent's readouts (its starting point) and the
constants refitted to the new data. The new head is the active one.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..model.mace import MaceModel

CONSTANTS = ("reference_energies", "scale", "shift")


def add_head(
    model: MaceModel,
    parent_constants: dict[str, np.ndarray | float],
    names: tuple[str, str],
) -> MaceModel:
    """``model`` (single-head, constants of the new level of theory) with the parent's head
    added in front: ``parent_constants`` = ``{"reference_energies" [n_elements] eV, "scale",
    "shift" eV}``; ``names`` = (parent head, new head). ``model`` is not changed."""
    if len(model.config.heads) > 1:
        raise ValueError(
            f"the parent already has heads {list(model.config.heads)}: multi-head fine-tuning "
            "starts from a single-head model (load one head, or pass multihead=False)"
        )
    if names[0] == names[1]:
        raise ValueError(f"the parent's and the new head need different names, got {names}")
    dtype = next(model.parameters()).dtype
    two = MaceModel(dataclasses.replace(model.config, heads=tuple(names)), init_coupling=False)
    two = two.to(dtype)
    state = {}
    for key, value in model.state_dict().items():
        if key in CONSTANTS:
            parent = torch.as_tensor(parent_constants[key], dtype=value.dtype)
            state[key] = torch.stack([parent, value])
        else:
            state[key] = value.clone()
        if key.startswith("readouts."):
            state["head_readouts.0." + key.removeprefix("readouts.")] = value.clone()
    two.load_state_dict(state)
    two.active_head = 1
    return two
