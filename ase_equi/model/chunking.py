"""Evaluation in chunks of nodes, recomputed in the backward pass (checkpointing).

Used by the interaction blocks (messages per chunk of receivers) and the symmetric contraction
(per chunk of nodes) when a structure's intermediates would exceed a memory bound
(:meth:`~ase_equi.model.mace.MaceModel.chunk_nodes`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.utils.checkpoint


def node_ranges(n: int, chunk: int) -> list[tuple[int, int]]:
    """``[(0, chunk), (chunk, 2 chunk), …]`` covering ``range(n)``."""
    return [(i, min(i + chunk, n)) for i in range(0, n, max(1, chunk))]


def run_chunk(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)``, recomputed in the backward pass (checkpointing) when gradients are
    on, so that its intermediates are not kept; plainly otherwise."""
    if not torch.is_grad_enabled():
        return function(*args)
    return torch.utils.checkpoint.checkpoint(function, *args, use_reentrant=False)
