"""Labelled frames with their graphs: batches on demand, and the error metrics of a model."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from ..data.batch import Batch, frames_to_graphs, make_batch
from ..data.frames import Frame
from ..graph import Graph
from ..model.gradients import energy_forces_stress
from ..model.mace import MaceModel
from .loss import ErrorMetrics, squared_error_sums

log = logging.getLogger(__name__)


class LabelledSet:
    """``frames`` and their ``graphs`` (same order), as used for training and evaluation."""

    def __init__(self, frames: Sequence[Frame], graphs: Sequence[Graph]) -> None:
        self.frames, self.graphs = list(frames), list(graphs)

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

    def stress_groups(
        self, ids: Sequence[int], weight: float = 1.0, *, one_pass: bool = False
    ) -> list[tuple[list[int], bool]]:
        """``ids`` split into ``(ids, with_stress)`` groups so that every stress label counts.

        Stress needs a cell of rank 3 for every graph of a forward pass: when some frame of
        ``ids`` has a stress label (and ``weight > 0``), the frames with a cell of rank 3 form
        one group (stress computed) and the others (molecules, clusters, flat cells) a second
        (energy and forces only). Each label is thus used per frame, whatever its batch mixes.
        With ``one_pass`` all frames stay in one group with stress computed: the frames without
        a cell of rank 3 then get a NaN stress, which the loss leaves out (``stress_mask``).
        """
        ids = list(ids)
        if weight <= 0 or not any(self.frames[i].has_stress for i in ids):
            return [(ids, False)]
        if one_pass:
            return [(ids, True)]
        full = {i: self._full_cell(i) for i in ids}
        bulk = [i for i in ids if full[i]]
        rest = [i for i in ids if not full[i]]
        return [(bulk, True)] + ([(rest, False)] if rest else [])

    def _full_cell(self, i: int) -> bool:
        """Graph ``i``'s cell has rank 3 (nonzero volume): its stress is defined (the host
        volume the graph was built with, else a determinant of its cell)."""
        volumes = self.graphs[i].volumes
        if volumes is not None:
            return volumes[0] > 1e-9
        return bool(abs(float(torch.linalg.det(self.graphs[i].cell[0].double()))) > 1e-9)

    def predictions(
        self, model: torch.nn.Module, ids: Sequence[int], *, weight: float = 1.0, **options: Any
    ) -> list[tuple[Batch, dict[str, torch.Tensor]]]:
        """``(batch, prediction)`` per pass: one per readout head of the frames (``Frame.head``;
        None: the model's active head) and per group of :meth:`stress_groups` (forces always,
        stress where defined); ``options`` go to :func:`energy_forces_stress` (``training``)."""
        net = getattr(model, "module", model)  # DistributedDataParallel wraps the model
        active = getattr(net, "active_head", 0)
        heads = {self.frames[i].head for i in ids}
        out = []
        try:
            for head in sorted(heads, key=lambda h: -1 if h is None else h):
                if head is not None and len(getattr(net.config, "heads", ())) > 1:
                    net.active_head = head  # (a single-head model has only its own)
                mine = [i for i in ids if self.frames[i].head == head]
                # training: one pass per batch (the loss masks undefined stress)
                one_pass = bool(options.get("training"))
                for group, with_stress in self.stress_groups(mine, weight, one_pass=one_pass):
                    batch = self.batch(group)
                    pred = energy_forces_stress(
                        model,
                        batch.graph,
                        forces=True,
                        stress=with_stress,
                        flat_cells="nan",
                        **options,
                    )
                    out.append((batch, pred))
        finally:
            net.active_head = active
        return out

    def error_sums(
        self, model: torch.nn.Module, ids: Sequence[int], *, weight: float = 1.0, **options: Any
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """:func:`~ase_equi.training.loss.squared_error_sums` of frames ``ids``, added over the
        passes of :meth:`predictions` (stress per frame)."""
        parts = [
            squared_error_sums(p, b)
            for b, p in self.predictions(model, ids, weight=weight, **options)
        ]

        def total(q: str, k: int) -> torch.Tensor:
            return torch.stack([part[q][k] for part in parts]).sum()

        return {q: (total(q, 0), total(q, 1)) for q in parts[0]}

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
            for batch, pred in self.predictions(model, mine[start : start + batch_size]):
                metrics.update({k: v.detach() for k, v in pred.items()}, batch)
        if world > 1:
            metrics.all_reduce()
        return metrics
