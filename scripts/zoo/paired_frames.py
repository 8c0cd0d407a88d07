"""The frames of a list of frame pairs, with their graphs: a batch of the frames any pairs
need, and pairs drawn at random for one training step. Shared by the pair losses of
:mod:`strain_pairs` and :mod:`defect_pairs`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ase_equi.data import Batch, Frame, frames_to_graphs, make_batch


@dataclass(frozen=True)
class PairSampling:
    """How a pair loss evaluates its frames: the model's ``elements`` and cutoff ``r_max`` (Å)
    for the graphs, their ``dtype``, and ``pairs_per_step`` pairs drawn at each training step
    by a generator seeded with ``seed`` (None: every pair at every step)."""

    elements: Sequence[int]
    r_max: float
    dtype: torch.dtype = torch.float32
    pairs_per_step: int | None = 16
    seed: int = 0


class PairedFrames:
    """``pairs`` (tuples whose first two entries are frame indices into ``frames``) and the
    graphs of their frames, built once."""

    def __init__(self, frames: Sequence[Frame], pairs: Sequence[tuple], sampling: PairSampling):
        self.pairs, self.sampling = list(pairs), sampling
        members = sorted({k for pair in self.pairs for k in pair[:2]})
        self.frames = {k: frames[k] for k in members}
        graphs = frames_to_graphs(
            list(self.frames.values()), sampling.elements, sampling.r_max, dtype=sampling.dtype
        )
        self.graphs = dict(zip(self.frames, graphs, strict=True))
        self.generator = torch.Generator().manual_seed(sampling.seed)

    def batch(self, pairs: Sequence[tuple]) -> tuple[Batch, torch.Tensor, torch.Tensor]:
        """The batch of the frames of ``pairs`` and, per pair, the positions of its first and
        second frame in that batch (``[pairs]`` each)."""
        members = sorted({k for pair in pairs for k in pair[:2]})
        where = {k: n for n, k in enumerate(members)}
        batch = make_batch([self.frames[k] for k in members], [self.graphs[k] for k in members])
        first = torch.tensor([where[pair[0]] for pair in pairs])
        second = torch.tensor([where[pair[1]] for pair in pairs])
        return batch, first, second

    def draw(self) -> list[tuple]:
        """The pairs of one training step."""
        n = self.sampling.pairs_per_step
        if n is None or n >= len(self.pairs):
            return self.pairs
        chosen = torch.randperm(len(self.pairs), generator=self.generator)[:n]
        return [self.pairs[k] for k in chosen.tolist()]
