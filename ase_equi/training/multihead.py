"""A second readout head for fine-tuning: the parent's level of theory keeps its own head.

:func:`add_head` turns a single-head model into a two-head one (``config.heads = (parent,
new)``): every shared layer as it was, head 0 with the parent's readouts and constants
(E0, scale, shift), head 1 with a copy of the parent's readouts (its starting point) and the
constants refitted to the new data. The new head is the active one.

With ``head_layers`` = k > 0 the new head also gets its own copy of the last k interaction
layers (``head_interactions.0.*``, ``head_products.0.*``), so the parent's head keeps the
parent's last layers (``interactions.{L−k..L−1}``, ``products.…``) and only the layers
below them are shared: what the new level of theory teaches its own last layers never
reaches the parent's head (:func:`head_prefixes`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from ..model.mace import MaceModel

CONSTANTS = ("reference_energies", "scale", "shift")


def add_head(
    model: MaceModel,
    parent_constants: dict[str, np.ndarray | float],
    names: tuple[str, str],
    head_layers: int = 0,
) -> MaceModel:
    """``model`` (single-head, constants of the new level of theory) with the parent's head
    added in front: ``parent_constants`` = ``{"reference_energies" [n_elements] eV, "scale",
    "shift" eV}``; ``names`` = (parent head, new head); ``head_layers``: how many of the last
    layers the new head owns (copies of the parent's). ``model`` is not changed."""
    if len(model.config.heads) > 1:
        raise ValueError(
            f"the parent already has heads {list(model.config.heads)}: multi-head fine-tuning "
            "starts from a single-head model (load one head, or pass multihead=False)"
        )
    if names[0] == names[1]:
        raise ValueError(f"the parent's and the new head need different names, got {names}")
    dtype = next(model.parameters()).dtype
    config = dataclasses.replace(model.config, heads=tuple(names), head_layers=head_layers)
    two = MaceModel(config, init_coupling=False)
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
        copy = _own_layer_key(key, config.num_interactions, head_layers)
        if copy is not None:
            state[copy] = value.clone()
    two.load_state_dict(state)
    two.active_head = 1
    return two


def _own_layer_key(key: str, num_layers: int, head_layers: int) -> str | None:
    """The new head's name of the shared weight ``key`` when it belongs to one of the last
    ``head_layers`` layers (``interactions.2.x`` → ``head_interactions.0.0.x`` for the last of
    3 layers), else None."""
    block, _, rest = key.partition(".")
    if block not in ("interactions", "products"):
        return None
    t, _, leaf = rest.partition(".")
    first = num_layers - head_layers
    if not head_layers or int(t) < first:
        return None
    return f"head_{block}.0.{int(t) - first}.{leaf}"


def head_prefixes(config: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Parameter-name prefixes of a two-head model's (parent head, new head): each head's
    readouts and, with ``config.head_layers`` = k, its own last k layers; every other
    parameter is shared.

    >>> from types import SimpleNamespace
    >>> parent, new = head_prefixes(SimpleNamespace(num_interactions=2, head_layers=1))
    >>> parent
    ('readouts.', 'interactions.1.', 'products.1.')
    >>> new
    ('head_readouts.0.', 'head_interactions.0.', 'head_products.0.')
    """
    own = range(config.num_interactions - config.head_layers, config.num_interactions)
    parent = ("readouts.",) + tuple(f"{b}.{t}." for b in ("interactions", "products") for t in own)
    new: tuple[str, ...] = ("head_readouts.0.",)
    if config.head_layers:
        new += ("head_interactions.0.", "head_products.0.")
    return parent, new


def learning_head(config: Any) -> tuple[str, ...]:
    """Parameter-name prefixes of the head that learns the new level of theory: the new head's
    (:func:`head_prefixes`) with two heads, ``readouts.`` with one."""
    return head_prefixes(config)[1] if len(config.heads) > 1 else ("readouts.",)
