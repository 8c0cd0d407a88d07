"""Data-parallel training under ``torchrun``: the process group and the global-batch sums.

Under ``torchrun`` (``WORLD_SIZE > 1``) :func:`process_group` starts a gloo process group, the
trainer wraps the model in ``DistributedDataParallel`` and deals every global batch (the same
batches as one process would see) out to the ranks as ``batch[rank::world_size]``. The loss
divides the summed squared errors by the counts of the whole global batch
(:func:`global_counts`), so the gradient equals the single-process one up to summation order.
Only rank 0 writes files. Without ``torchrun`` every function here is the single-process
identity.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist


@contextmanager
def process_group() -> Iterator[None]:
    """Start a gloo process group when run under ``torchrun`` and none is running yet; wait for
    every rank and close it on exit. A group the caller started is left alone."""
    owns_group = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
        owns_group = True
    try:
        yield
    finally:
        if owns_group:
            dist.barrier()
            dist.destroy_process_group()


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: ``(0, 1)`` without a process group.

    >>> rank_and_world()
    (0, 1)
    """
    if not dist.is_initialized():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def global_counts(counts: dict[str, torch.Tensor], world: int) -> dict[str, torch.Tensor]:
    """The label counts of each quantity summed over the ranks (each a 0-d tensor, kept in its
    dtype); ``counts`` itself when ``world == 1``."""
    if world == 1:
        return counts
    stacked = torch.stack([counts[q] for q in counts]).to(torch.float64)  # [n_quantities]
    dist.all_reduce(stacked)
    return {q: stacked[k].to(counts[q].dtype) for k, q in enumerate(counts)}


def global_mean(value: torch.Tensor, world: int) -> float:
    """The mean over the ranks of each rank's 0-d ``value``, as a float64 Python number."""
    value = value.detach().to(torch.float64) / world
    if world > 1:
        dist.all_reduce(value)
    return float(value)
