"""Training loop: split, fit constants, AdamW + schedule + EMA, checkpoints, resume, report.

Everything a run writes lies in ``TrainConfig.output_dir``::

    split.json                 train/valid/test frame indices (fixed by the seed) + data fingerprint
    checkpoints/last.pt        the whole training state (see below), checksummed, replaced
                               atomically; checkpoints/previous.pt: the one before it
    test_report.json / .md     MAE and RMSE on the test split (energy/atom, forces, stress)
    parity.png                 predicted against reference on the test split
    learning_curves.png        train and valid loss, valid errors per epoch
    NAME.json/.safetensors/.md the final model (best-valid EMA weights) and its card

**Resume.** ``checkpoints/last.pt`` holds model, optimiser, scheduler, EMA and best-EMA weights,
the state of the shuffling generator, the current epoch's data order, the epoch, step and batch
position, the running epoch loss, the history and the best validation loss: plain tensors and
dicts written with ``torch.save`` plus a SHA-256 footer (:mod:`.checkpoint_file`), read back with
``torch.load(weights_only=True)`` once the checksum matched. A damaged ``last.pt`` (truncated,
overwritten) is reported by name and the run resumes from ``previous.pt``; a resume prints
``resumed from <file>, epoch N, step M`` (N epochs and M steps done). Calling :func:`train`
again with the same output directory continues from it, and the parameters then match those of
an uninterrupted run bit for bit (same machine, same threads).

**Choices.** AdamW, the learning-rate schedule (``"plateau"`` by default, watching the
validation loss, or the train loss when there is no validation split) and the weight EMA are
described in :mod:`ase_equi.training.optimiser`. Validation uses the EMA weights; the final model
is the EMA of the epoch with the best validation loss. Isolated-atom frames (one atom, no
periodicity) only fix reference energies.

**Data parallel.** Under ``torchrun`` each rank takes its share of every global batch and the
gradient equals the single-process one up to summation order (:mod:`.parallel`).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from ase import Atoms

from ..data.batch import frames_to_graphs
from ..data.frames import DataKeys, Frame, load_frames
from ..io.model_file import save_model
from ..model.config import ModelConfig
from ..model.mace import MaceModel
from .checkpoint import (
    check_resumable,
    freeze_blocks,
    load_checkpoint,
    load_or_make_split,
    resume_checkpoint,
    save_checkpoint,
    starting_models,
)
from .checkpoint_file import remove_stale_temporaries
from .config import CHECKPOINT_FORMAT, DTYPES, TrainConfig
from .evaluation import LabelledSet
from .loss import weighted_loss
from .optimiser import lr_factors, make_optimiser, restore_optimiser, step_scheduler, update_ema
from .parallel import global_counts, global_mean, process_group, rank_and_world
from .progress import ProgressCallback, ProgressLine, combine
from .report import (
    TrainResult,
    epoch_line,
    model_card,
    summary_line,
    test_report,
    write_plots,
    write_test_report,
)

log = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TrainResult", "load_checkpoint", "train"]


def train(
    model: ModelConfig | MaceModel,
    data: str | os.PathLike | Sequence[Frame] | Sequence[Atoms],
    config: TrainConfig,
    *,
    keys: DataKeys | None = None,
    name: str = "model",
    level_of_theory: str = "",
    data_description: str = "",
    progress: ProgressCallback | None = None,
    replay: Sequence[Frame] = (),
    verbose: bool = True,
    lr_scale: Callable[[str], float] | None = None,
    penalty: Callable[[torch.nn.Module], torch.Tensor] | None = None,
) -> TrainResult:
    """Train a model and write checkpoints, a test report, plots and the model file.

    Parameters
    ----------
    model:
        A :class:`ModelConfig` (a new model: E0, scale, shift and avg_num_neighbors are fitted
        on the training split, weights drawn with ``config.seed``) or a :class:`MaceModel`
        (trained further as it is, e.g. fine-tuning; the caller's model is not modified).
    data:
        extxyz / ASE db path, labelled ``Atoms`` or :class:`~ase_equi.data.Frame` objects.
    config:
        Training settings; a run whose ``output_dir`` holds a checkpoint resumes from it.
    keys:
        Where the labels are (see :func:`ase_equi.data.read_frames`).
    name, level_of_theory, data_description:
        Model file name (``output_dir/NAME.json``) and card entries.
    progress:
        Called on rank 0 with ``{"event": "resume" | "step" | "epoch" | "done", ...}``; the
        ``"resume"``, ``"epoch"`` and ``"done"`` dicts carry a printable ``"line"``.
    replay, lr_scale, penalty:
        Fine-tuning's: frames joining the training split only, each with its ``Frame.weight``
        (replay); learning rates ``config.lr × lr_scale(param. name)``; loss + ``penalty(model)``.
    verbose:
        Show progress on stderr (rank 0): a live step line on a terminal, one line per epoch
        (:class:`~ase_equi.training.progress.ProgressLine`). Other messages use ``logging``.

    Examples
    --------
    The E0 of a :class:`ModelConfig` without ``reference_energies`` are fitted to the data:

    >>> result = train(ModelConfig(elements=(29,)), "cu.xyz", TrainConfig())  # doctest: +SKIP
    >>> result  # doctest: +SKIP
    TrainResult(Cu model, 40,128 weights, 100 epochs, test E MAE 1.2 meV/atom, ...)

    Raises
    ------
    ValueError
        Invalid data (naming the frame), a checkpoint from other settings or other data.
    CheckpointError
        Checkpoint files exist in ``output_dir`` but none verifies (each named).
    """
    progress = combine([ProgressLine() if verbose else None, progress])
    with process_group():
        return _Run(model, data, config, keys, progress, replay, lr_scale, penalty).run(
            name, level_of_theory, data_description
        )


class _Run:
    """One call of :func:`train`: the state that a checkpoint saves, and the steps."""

    def __init__(
        self, model, data, config: TrainConfig, keys, progress, replay, lr_scale, penalty
    ) -> None:
        self.cfg, self.progress, self.penalty = config, progress, penalty
        self.rank, self.world = rank_and_world()
        self.out = Path(config.output_dir)
        self.ckpt_path = self.out / "checkpoints" / "last.pt"
        self.dtype = DTYPES[config.dtype]
        base = model if isinstance(model, ModelConfig) else model.config

        self.source, self.frames = load_frames(data, keys=keys, elements=base.elements)
        self.n_own = len(self.frames)
        self.frames += [dataclasses.replace(f, index=self.n_own + k) for k, f in enumerate(replay)]
        if self.rank == 0:  # files a kill during a write left behind
            remove_stale_temporaries(self.out, self.ckpt_path.parent)
        self.split = load_or_make_split(
            self.out, self.frames, self.n_own, config, write=self.rank == 0
        )

        found = resume_checkpoint(self.ckpt_path.parent)
        state: dict[str, Any] | None = None
        self.resumed_path: Path | None = None
        if found is not None:
            state, self.resumed_path = found
            check_resumable(self.resumed_path, state, config, model)
            model_config = ModelConfig.from_dict(state["model_config"])
        else:
            model_config = base
        self.data = LabelledSet(
            self.frames,
            frames_to_graphs(
                self.frames, model_config.elements, model_config.r_max, dtype=self.dtype
            ),
        )
        fit_ids = self.split["train"] + self.split["isolated"]
        self.net, self.ema, self.e0_status = starting_models(
            model, state, model_config, self.data.subset(fit_ids), config.seed, self.dtype
        )
        self.model_config = self.net.config
        freeze_blocks(self.net, config.freeze)
        self.trainable = [p for p in self.net.parameters() if p.requires_grad]
        if not self.trainable:
            raise ValueError(f"freeze={list(config.freeze)} leaves no parameter to train")
        self.optimizer, self.scheduler = make_optimiser(self.net, config, lr_scale)
        self.lr_factors = lr_factors(self.optimizer, config.lr)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.epoch = self.step = self.batch_in_epoch = 0
        self.order: torch.Tensor | None = None
        self.epoch_loss = [0.0, 0]
        self.history: list[dict[str, float]] = []
        self.best_valid, self.best_epoch = math.inf, -1
        self.best_ema: dict[str, torch.Tensor] | None = None
        self.stopped_early = False
        self.resumed_from: int | None = None
        if state is not None:
            self._restore(state)
        # buffers (E0, couplings) are constants, synced once here: a step may take a different
        # number of passes on each rank (stress groups, heads), so no per-forward broadcast
        self.ddp = (
            torch.nn.parallel.DistributedDataParallel(self.net, forward_sync_buffers=False)
            if self.world > 1
            else self.net
        )

    # -- split and checkpoints --------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "format_version": 2,
            "train_config": self.cfg.to_dict(),
            "model_config": self.model_config.to_dict(),
            "model": self.net.state_dict(),
            "ema": self.ema.state_dict(),
            "best_ema": self.best_ema,
            "optimizer": self.optimizer.state_dict(),
            "lr_factors": self.lr_factors,
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "epoch": self.epoch,
            "step": self.step,
            "batch_in_epoch": self.batch_in_epoch,
            "order": self.order,
            "epoch_loss": list(self.epoch_loss),
            "history": self.history,
            "best_valid": self.best_valid,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "reference_energy_status": self.e0_status,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        """Everything but the weights (loaded before the optimiser was built)."""
        where: dict[str, Any] = {"epochs": self.cfg.epochs, "path": self.resumed_path}
        where["factors"] = self.lr_factors
        restore_optimiser(self.optimizer, self.scheduler, state, **where)
        self.generator.set_state(state["generator"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.batch_in_epoch, self.order = int(state["batch_in_epoch"]), state["order"]
        self.epoch_loss = [float(state["epoch_loss"][0]), int(state["epoch_loss"][1])]
        self.history = list(state["history"])
        self.best_valid, self.best_epoch = float(state["best_valid"]), int(state["best_epoch"])
        self.best_ema, self.stopped_early = state["best_ema"], bool(state["stopped_early"])
        self.e0_status = dict(state.get("reference_energy_status", {}))
        self.resumed_from = self.step
        self._emit(
            "resume",
            line=f"resumed from {self.resumed_path}, epoch {self.epoch}, step {self.step}",
            path=str(self.resumed_path),
            epoch=self.epoch,
            step=self.step,
        )

    def _save(self) -> None:
        if self.rank == 0:
            save_checkpoint(self.ckpt_path, self._state())

    def _emit(self, event: str, **info: Any) -> None:
        if event != "step" and self.rank == 0:
            log.info("%s", info.get("line", ""))
        if self.progress is not None and self.rank == 0:
            self.progress({"event": event, **info})

    # -- steps --------------------------------------------------------------------------------

    def _train_step(self, ids: list[int]) -> float:
        mine, share = ids[self.rank :: self.world], 1.0
        if not mine:  # fewer structures than ranks: take part with a zero-weight copy
            mine, share = ids[:1], 0.0
        sums = self.data.error_sums(self.ddp, mine, weight=self.cfg.stress_weight, training=True)
        sums = {q: (s * share, n * share) for q, (s, n) in sums.items()}
        counts = global_counts({q: n for q, (_, n) in sums.items()}, self.world)
        # DDP averages gradients over ranks; × world turns that into the global-batch gradient
        pull = 0.0 if self.penalty is None else self.penalty(self.net)  # DDP's mean: once
        loss = weighted_loss(sums, self.cfg.loss_weights, counts=counts) * self.world + pull
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.max_grad_norm)
        self.optimizer.step()
        update_ema(self.ema, self.net, self.cfg.ema_decay, self.step)
        return global_mean(loss, self.world)

    def _end_epoch(self, started: float) -> None:
        cfg = self.cfg
        train_loss = self.epoch_loss[0] / max(self.epoch_loss[1], 1)
        record: dict[str, float] = {
            "epoch": self.epoch + 1,
            "step": self.step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": train_loss,
        }
        if self.split["valid"]:
            metrics = self.data.evaluate(
                self.ema,
                self.split["valid"],
                batch_size=cfg.batch_size,
                rank=self.rank,
                world=self.world,
            )
            record["valid_loss"] = metrics.loss(cfg.loss_weights)
            record.update({f"valid_{k}": v for k, v in metrics.summary().items()})
        monitor = record.get("valid_loss", train_loss)
        if monitor < self.best_valid:
            self.best_valid, self.best_epoch = monitor, self.epoch
            self.best_ema = {k: v.detach().clone() for k, v in self.ema.state_dict().items()}
        step_scheduler(self.scheduler, monitor)
        self.history.append(record)
        self.epoch += 1
        self.order, self.batch_in_epoch, self.epoch_loss = None, 0, [0.0, 0]
        if cfg.patience is not None and self.epoch - 1 - self.best_epoch >= cfg.patience:
            self.stopped_early = True
        self._save()
        line = epoch_line(
            record,
            cfg.epochs,
            time.perf_counter() - started,
            best_epoch=self.best_epoch if self.stopped_early else None,
        )
        self._emit("epoch", line=line, **record)

    def run(self, name: str, level_of_theory: str, data_description: str) -> TrainResult:
        cfg, train_ids = self.cfg, self.split["train"]
        while self.epoch < cfg.epochs and not self.stopped_early:
            started = time.perf_counter()
            if self.order is None:
                self.order = torch.randperm(len(train_ids), generator=self.generator)
            n_batches = math.ceil(len(train_ids) / cfg.batch_size)
            for b in range(self.batch_in_epoch, n_batches):
                chunk = self.order[b * cfg.batch_size : (b + 1) * cfg.batch_size].tolist()
                loss = self._train_step([train_ids[i] for i in chunk])
                self.step, self.batch_in_epoch = self.step + 1, b + 1
                self.epoch_loss = [self.epoch_loss[0] + loss, self.epoch_loss[1] + 1]
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self._save()
                self._emit("step", epoch=self.epoch, step=self.step, loss=loss)
            self._end_epoch(started)
        return self._finish(name, level_of_theory, data_description)

    # -- after training -----------------------------------------------------------------------

    def _finish(self, name: str, level_of_theory: str, data_description: str) -> TrainResult:
        final = copy.deepcopy(self.ema)
        if self.best_ema is not None:
            final.load_state_dict(self.best_ema)
        final.eval()
        result = TrainResult(
            model=final,
            config=self.model_config,
            output_dir=self.out,
            history=self.history,
            resumed_from_step=self.resumed_from,
            stopped_early=self.stopped_early,
            resumed_from=self.resumed_path,
            reference_energies=self.e0_status,
        )
        if self.rank != 0:
            return result
        metrics = self.data.evaluate(
            final, self.split["test"], batch_size=self.cfg.batch_size, keep_values=True
        )
        result.test_metrics = metrics.summary()
        report = test_report(
            self.split,
            result.test_metrics,
            epochs=self.epoch,
            steps=self.step,
            best_epoch=self.best_epoch,
            stopped_early=self.stopped_early,
        )
        write_test_report(self.out, report)
        if self.cfg.plots:
            write_plots(self.out, metrics, self.history)
        card = model_card(
            name=name,
            level_of_theory=level_of_theory,
            data_description=data_description,
            source=self.source,
            report=report,
            # the directory's name only: a card carries no path of this machine
            settings={**self.cfg.to_dict(), "output_dir": self.out.name},
            reference_energies=self.e0_status,
        )
        result.model_path = save_model(final, self.out / name, card=card)
        self._emit(
            "done",
            line=f"wrote {result.model_path}; test {summary_line(report)}",
            report=report,
            model_path=str(result.model_path),
        )
        return result
