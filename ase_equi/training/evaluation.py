"""Labelled frames with their graphs: batches on demand, and the error metrics of a model."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from ..data.batch import Batch, frames_to_graphs, make_batch
from ..data.frames import Frame
from ..graph import Graph
from ..model.gradients import energy_forces_stress
from ..model.mace import MaceModel
from .loss import ErrorMetrics

log = logging.getLogger(__name__)


class LabelledSet:
    """``frames`` and their ``graphs`` (same order), as used for training and evaluation."""

    def __init__(self, frames: Sequence[Frame], graphs: Sequence[Graph]) -> None:
        self.frames, self.graphs = list(frames), list(graphs)
        self._warned_stress = False

    @classmethod
    def for_model(cls, frames: Sequence[Frame], model: MaceModel) -> LabelledSet:
        """Graphs built with ``model``'s elements, cutoff and dtype."""
        dtype = next(model.parameters()).dtype
        graphs = frames_to_graphs(frames, model.config.elements, model.config.r_max, dtype=dtype)
        return cls(frames, graphs)

    def subset(self, ids: Sequence[int]) -> LabelledSet:
        """The frames ``ids`` with their graphs."""
        return LabelledSet([self.frames[i] for i in ids], [self.graphs[i] for i in ids])

    def batch(self, ids: Sequence[int]) -> Batch:
        return make_batch([self.frames[i] for i in ids], [self.graphs[i] for i in ids])

    def uses_stress(self, batch: Batch, weight: float = 1.0) -> bool:
        """Whether ``batch``'s stress labels count: some present, a positive loss weight, and
        every cell of rank 3 (else skipped, with one warning)."""
        if weight <= 0 or not bool(batch.stress_mask.any()):
            return False
        if not batch.stress_computable:
            if not self._warned_stress:
                log.warning(
                    "stress labels skipped in batches that mix periodic and "
                    "non-periodic cells (stress needs a cell of rank 3 for every graph)"
                )
                self._warned_stress = True
            return False
        return True

    def evaluate(
        self,
        model: torch.nn.Module,
        ids: Sequence[int] | None = None,
        *,
        batch_size: int = 8,
        rank: int = 0,
        world: int = 1,
        keep_values: bool = False,
    ) -> ErrorMetrics:
        """Errors of ``model`` on frames ``ids`` (default: all); with ``world > 1`` this rank
        takes ``ids[rank::world]`` and the metrics are summed over ranks."""
        metrics = ErrorMetrics(keep_values=keep_values)
        ids = range(len(self.frames)) if ids is None else ids
        mine = list(ids)[rank::world]
        for start in range(0, len(mine), batch_size):
            batch = self.batch(mine[start : start + batch_size])
            pred = energy_forces_stress(
                model, batch.graph, forces=True, stress=self.uses_stress(batch)
            )
            metrics.update({k: v.detach() for k, v in pred.items()}, batch)
        if world > 1:
            metrics.all_reduce()
        return metrics
