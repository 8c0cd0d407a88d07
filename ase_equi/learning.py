"""On-the-fly learning: molecular dynamics (or a relaxation) with a model that asks a reference
calculator when it is unsure, learns the answer, and continues.

What moves the atoms is velocity Verlet by default, or any ASE molecular dynamics or optimizer
made by the user's ``dynamics`` factory (a thermostat, a barostat, a temperature ramp, BFGS on
a cell filter; :mod:`ase_equi.learning_dynamics`: a resume restores the step counter and a
seeded generator, so a Langevin run resumes exactly). A relaxation ends when the optimizer has
converged and its window holds no flagged structure: a flagged one is labelled then (the
budget released in full), the optimizer restarts with the new model, and it relaxes on.

The model is a full committee (its spread is the uncertainty) or one model file with a
prediction-rigidity section (its last-layer prediction rigidity, LLPR; every zoo model has one;
:mod:`ase_equi.learning_rigidity`); a model with neither is refused. Every step the largest
atomic force uncertainty (``forces_uncertainty``, eV/Å, see :mod:`ase_equi.uncertainty`) is
recorded. The run is cut into windows of ``min_interval`` steps (steps 1..m, m+1..2m, ...); the
most uncertain structure of the current window is kept (only structures at least
``min_interval // 2`` steps after the last labelled one count), and at the window's end, if
its uncertainty passed ``threshold``:

1. that structure (not the last one, nor the first one over the threshold) is labelled by the
   ``reference`` (any ASE calculator; a reference that raises stops the run with
   :class:`~ase_equi.errors.ReferenceFailed`, the structure kept in ``OUT/failed-{k}.xyz``, and
   a run called again retries it: :mod:`ase_equi.learning_labels`);
2. it joins the learned data (``OUT/learned.xyz``, labelled extxyz);
3. the model is trained further from its current weights (warm start with
   :func:`~ase_equi.train`, E0 kept) on the learned data plus the ``replay`` frames (for a zoo
   model by default its shipped replay set, a sample of its training split): every member of a
   committee, joined into ``OUT/committee-{k}.json``; a single model is saved as
   ``OUT/model-{k}.json`` with its LLPR section refitted on the replay and learned frames
   (calibration factors kept, :func:`~ase_equi.learning_rigidity.refit_rigidity`); for a model
   whose card records its training stages (the zoo's) the learning rate follows the model's
   force error on the labelled structure, from the rate the parent ended its training with
   when it is as right there as on its test set up to the rate it started from
   (:class:`~ase_equi.learning_retraining.RefitRate`);
4. the dynamics continues from the same positions and momenta with the new model (an
   optimizer with its memory cleared).

The budget is paced over the run: by step s of ``steps`` at most ⌈max_calls · s / steps⌉ calls
are made (:func:`budget_so_far`), so a model that is uncertain everywhere spends its calls
evenly instead of all in the first windows, while a budget not spent early carries over to later
windows. A flagged window held back by the pace keeps its most uncertain frame as the candidate
of the next window (the next call labels the most uncertain frame since). No reference call is
made unless the threshold is passed; two calls are at least ``min_interval`` steps apart, two
labelled structures at least ``min_interval // 2`` (so that a structure labelled at a window's
end leaves half of the next window to choose from): consecutive MD frames are nearly the same
structure, so a budget spent on the first frames over the threshold buys little
(``benchmarks/results/2026-11-30-learn-on-the-fly-metals.md``), and of correlated frames the
most uncertain is the one the model knows least. A partial last window (``steps`` not a multiple
of ``min_interval``) makes no call. After every step the state (step, positions, momenta, cell,
the dynamics' generator state, the model in use, the call log, the window's most uncertain frame
so far) is written to ``OUT`` (atomically): a killed run called again with the same ``out``
resumes from the last step written, a kill during a training from that training's checkpoint (a
folder moved in between resumes too: the models the run wrote are found in it).
``OUT/calls.json`` logs every reference call: the step of the labelled structure (``step``), the
step of the call (``called_at_step``), why (the uncertainty and the threshold), the force RMSE
(eV/Å) and energy error (eV/atom) of the model on that structure before and after;
``OUT/uncertainty.txt`` the largest atomic force uncertainty of every step
(:func:`plot_learning` draws both); ``OUT/setup.json`` the kind of uncertainty and where the
replay frames came from."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.optimize.optimize import Optimizer

from .calculator import EquivariantCalculator
from .io.model_committee import save_committee
from .io.model_file import write_atomic
from .learning_dynamics import DynamicsFactory, advance, make_dynamics, rng_state, simulated_time_fs
from .learning_labels import errors_on_structure, label_structure
from .learning_plot import plot_learning
from .learning_retraining import RefitRate, parent_card, refit_rate, retraining_config
from .learning_rigidity import (
    check_learnable,
    learn_single,
    replay_weight_of,
    resolve_replay,
    sample,
)
from .learning_schedule import budget_so_far, check_resumed_model, check_trigger, window_length
from .model.committee import Committee
from .training.config import TrainConfig

log = logging.getLogger(__name__)

__all__ = ["LearnResult", "learn_on_the_fly", "plot_learning"]


@dataclass
class LearnResult:
    """What :func:`learn_on_the_fly` did: the steps run, the reference calls (one dict each,
    as in ``OUT/calls.json``), the model file in use at the end and where the replay frames
    came from."""

    steps: int
    calls: list[dict[str, Any]] = field(default_factory=list)
    model: Path = Path()
    replay: str = ""


def learn_on_the_fly(
    atoms: Atoms,
    model: str | os.PathLike,
    reference: Any,
    *,
    out: str | os.PathLike,
    threshold: float | None = None,
    steps: int,
    every: int | None = None,
    dynamics: DynamicsFactory | None = None,
    timestep_fs: float | None = None,
    fmax: float | None = None,
    max_calls: int = 10,
    min_interval: int | None = None,
    replay: Sequence[Atoms] | str | os.PathLike | None = "auto",
    replay_count: int | None = None,
    train_config: TrainConfig | None = None,
    refit_lr: float | RefitRate | None = None,
) -> LearnResult:
    """Run up to ``steps`` steps of ``dynamics`` (default: velocity-Verlet MD of ``atoms``, their
    momenta as given) with ``model``, learning on the fly (see the module docstring).

    Parameters
    ----------
    model:
        A full committee file, or a zoo name or model file with a prediction-rigidity section.
    reference:
        An ASE calculator (EMT, a DFT code, ...): called only on flagged structures.
    out:
        Folder of the state, the learned data, the new models and the logs; a rerun with
        the same ``out`` resumes (``atoms`` is then taken from the saved state).
    threshold:
        eV/Å, on the largest atomic ``forces_uncertainty``.
    every:
        Instead of ``threshold``: call the reference at every ``every``-th step whatever the
        uncertainty (the naive schedule that on-the-fly learning is compared with).
    dynamics:
        What moves the atoms: a function that takes the atoms (the model attached) and returns
        an ASE dynamics of them: molecular dynamics (``lambda a: Langevin(a, 1 * units.fs,
        temperature_K=600, friction=0.01, rng=np.random.default_rng(0))``, NPT, ...) or an
        optimizer for a relaxation (``lambda a: BFGS(FrechetCellFilter(a))``); called again on
        a resume (:mod:`ase_equi.learning_dynamics`). A relaxation ends when the optimizer has
        converged with a model whose window holds no flagged structure (or the budget is spent).
    timestep_fs:
        fs, the step of the default velocity Verlet (1 fs); refused with ``dynamics``.
    fmax:
        eV/Å, an optimizer's convergence criterion (default 0.05, as ASE's); refused otherwise.
    max_calls:
        At most this many reference calls, released evenly over the ``steps`` (with
        ``threshold``; see the module docstring); afterwards the dynamics continues without
        learning.
    min_interval:
        With ``threshold``: the window length in steps (≥ 1; see the module docstring); default
        ``max(1, steps // (2 * max_calls))``, half the even spacing of the budget, so that a
        call can fall in either of two windows. A resumed run keeps the
        window length it started with. Refused with ``every`` (its calls are ``every`` apart).
    replay:
        Labelled frames trained on together with the learned ones: ``"auto"`` (a zoo model's
        shipped replay set, none for another model), a file of labelled frames, frames, or None.
    replay_count:
        Train on a seeded sample of this many replay frames (None: all); the LLPR refit of a
        single model sums over all of them.
    train_config:
        Settings of each warm-start training (default: :func:`retraining_config` with the
        loss weights on ``model``'s card); the seed is
        the member's index and ``output_dir`` is set per member and round.
    refit_lr:
        The learning rate of each retraining: a number (every call), or a
        :class:`~ase_equi.learning_retraining.RefitRate` (per call, from the model's force
        error on the labelled structure; replaces ``train_config.lr``). Default:
        ``train_config.lr`` when ``train_config`` is given; else the rate from ``model``'s card
        (:meth:`RefitRate.from_card <ase_equi.learning_retraining.RefitRate.from_card>`; every
        zoo model has one), else :data:`~ase_equi.learning_retraining.RETRAIN_LR`. Each
        call's rate is in ``OUT/calls.json`` (``lr``), the rule in ``OUT/setup.json``.
    """
    check_trigger(threshold, every, min_interval, max_calls)
    folder = Path(out)
    check_resumed_model(folder, model)
    state = _load_state(folder, atoms, os.fspath(model))
    window = window_length(state, every, min_interval, steps, max_calls)
    atoms = state["atoms"]
    atoms.calc = EquivariantCalculator(state["model"])
    kind = check_learnable(atoms.calc, model)
    frames, replay_from = resolve_replay(model, replay)
    setup = {"model": os.fspath(model), "uncertainty": kind, "replay": replay_from}
    setup.update(replay_trained=len(sample(frames, replay_count)), window_steps=window)
    config, rate = _retraining(model, train_config, refit_lr, setup)
    weight = 1.0
    if kind == "rigidity":  # the parent's section decides the weight, also after a resume
        first = json.loads((folder / "setup.json").read_text()) if state["step"] else {}
        weight = first.get("replay_weight_in_llpr") or replay_weight_of(
            atoms.calc.loaded.rigidity, replay_from, len(frames)
        )
        setup["replay_weight_in_llpr"] = weight
    dyn = make_dynamics(atoms, dynamics, timestep_fs, fmax, state["step"], state.get("rng"))
    setup["dynamics"] = type(dyn).__name__
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "setup.json", json.dumps(setup, indent=1).encode())
    log.info("learn_on_the_fly: %s uncertainty; replay: %s", kind, replay_from)
    trainer = _Trainer(reference, folder, frames, replay_count, config, kind, weight, rate)
    run = _Run(folder, atoms, dyn, fmax, state, window, steps, max_calls, threshold, every)
    return run.go(trainer, replay_from)


@dataclass
class _Run:
    """The stepping of one :func:`learn_on_the_fly` run: the dynamics, the selection window and
    the reference calls, with the state written after every step."""

    folder: Path
    atoms: Atoms
    dyn: Any
    fmax: float | None
    state: dict[str, Any]
    window: int
    steps: int
    max_calls: int
    threshold: float | None
    every: int | None

    def go(self, trainer: _Trainer, replay_from: str) -> LearnResult:
        """Step until ``steps`` (or a converged relaxation with nothing to learn)."""
        step, calls = int(self.state["step"]), self.state["calls"]
        current = Path(self.state["model"])
        best: dict[str, Any] | None = self.state.get("window_best")  # the window's candidate
        logged = False  # calls.json: written after the first step, then only when a call is added
        while step < self.steps:
            moved, converged = advance(self.dyn, self.fmax)
            if moved:
                step += 1
                u = float(self.atoms.calc.get_property("forces_uncertainty", self.atoms).max())
                with open(self.folder / "uncertainty.txt", "a") as fh:  # step, time (fs), eV/Å
                    fh.write(f"{step} {simulated_time_fs(self.dyn, step):.6g} {u!r}\n")
                apart = not calls or step >= calls[-1]["step"] + max(1, self.window // 2)
                if self.every or (apart and (best is None or u > best["uncertainty"])):
                    best = {
                        "step": step,
                        "uncertainty": u,
                        "positions": self.atoms.positions.tolist(),
                        "cell": self.atoms.cell.array.tolist(),  # a barostat or filter moves it
                    }
            flagged = best is not None and best["uncertainty"] > float(self.threshold or 0)
            closes = step % self.window == 0 or (converged and not self.every)  # a window ends
            due = closes and best is not None and bool(self.every or flagged)
            paced = bool(self.every) or len(calls) < budget_so_far(
                self.max_calls, self.steps if converged else step, self.steps
            )
            called = due and paced and len(calls) < self.max_calls
            if called:
                assert best is not None
                current = self._call(trainer, best, calls, step)
            if (converged or closes) and (called or not due):
                best = None  # a flagged frame held back by the pace stays the candidate
            self._save(step, current, calls, best)
            if called or not logged:
                write_atomic(self.folder / "calls.json", json.dumps(calls, indent=1).encode())
                logged = True
            if converged and not called:
                break
        return LearnResult(steps=step, calls=calls, model=current, replay=replay_from)

    def _call(
        self, trainer: _Trainer, best: dict[str, Any], calls: list[dict[str, Any]], step: int
    ) -> Path:
        """Label the window's candidate ``best``, learn it and go on with the new model."""
        atoms = self.atoms
        cell = best.get("cell", atoms.cell)  # a state written before cells were kept: fixed
        frame = Atoms(atoms.numbers, best["positions"], cell=cell, pbc=atoms.pbc)
        current, atoms.calc, call = trainer.learn(frame, atoms.calc, len(calls))
        if isinstance(self.dyn, Optimizer):
            self.dyn.initialize()  # its memory (a Hessian estimate) belongs to the old model
        why = (
            f"every {self.every} steps"
            if self.every
            else f"the most uncertain frame of steps {step + 1 - self.window}-{step} "
            "is above the threshold"
        )
        calls.append({"step": best["step"], "called_at_step": step, "why": why})
        calls[-1].update(uncertainty=best["uncertainty"], threshold=self.threshold, **call)
        return current

    def _save(self, step: int, model: Path, calls: list, best: dict[str, Any] | None) -> None:
        atoms, folder = self.atoms, self.folder
        state = {
            "step": step,
            "model": str(model),
            "model_in_out": model.name if model.parent == folder else None,  # the run's own
            "calls": calls,
            "window_steps": self.window,
            "window_best": best,
            "rng": rng_state(self.dyn),
            "numbers": atoms.numbers.tolist(),
            "positions": atoms.positions.tolist(),
            "momenta": atoms.get_momenta().tolist(),
            "cell": atoms.cell.array.tolist(),
            "pbc": atoms.pbc.tolist(),
        }
        write_atomic(folder / "state.json", json.dumps(state).encode())


@dataclass
class _Trainer:
    """One reference call and the training after it (the settings of one
    :func:`learn_on_the_fly` run)."""

    reference: Any
    folder: Path
    replay: list[Atoms]
    replay_count: int | None
    config: TrainConfig
    kind: str
    weight: float
    rate: float | RefitRate

    def learn(
        self, frame: Atoms, calc: EquivariantCalculator, k: int
    ) -> tuple[Path, EquivariantCalculator, dict[str, Any]]:
        """Label ``frame`` (call ``k``), train the model of ``calc`` on the learned frames plus
        the replay; the new model file, a calculator of it (loaded once, for the MD to go on
        with) and the errors before and after on ``frame``."""
        learned, before = label_structure(frame, calc, self.reference, self.folder, k)
        train_frames = [*learned, *sample(self.replay, self.replay_count)]
        lr = self.rate(before["force_rmse_before"]) if callable(self.rate) else self.rate
        config = dataclasses.replace(self.config, lr=lr)
        if self.kind == "committee":
            current = _learn_committee(calc.loaded, train_frames, config, self.folder, k)
        else:
            current = learn_single(
                calc.loaded, learned, self.replay, self.weight, train_frames, config, self.folder, k
            )
        new = EquivariantCalculator(current)
        after = errors_on_structure(new, learned[-1], "after")
        return current, new, {**before, **after, "lr": lr, "model": str(current)}


def _retraining(
    model: str | os.PathLike,
    train_config: TrainConfig | None,
    refit_lr: float | RefitRate | None,
    setup: dict[str, Any],
) -> tuple[TrainConfig, float | RefitRate]:
    """The retraining settings and learning rate of a run (recorded in ``setup``)."""
    card = parent_card(model)
    config = train_config or retraining_config(parent_card=card)
    setup["loss_weights"] = [config.energy_weight, config.forces_weight, config.stress_weight]
    rate = refit_rate(refit_lr, config, None if train_config else RefitRate.from_card(card))
    setup["lr"] = rate.describe() if isinstance(rate, RefitRate) else rate
    return config, rate


def _learn_committee(
    loaded: Any, frames: Sequence[Atoms], config: TrainConfig, folder: Path, k: int
) -> Path:
    """Train every member of the committee ``loaded`` further on ``frames``; the new
    committee file ``OUT/committee-{k+1}.json``."""
    from .training.trainer import train

    members = []
    for m, frozen in enumerate(loaded.model.members):
        member = copy.deepcopy(frozen).requires_grad_(True)  # the calculator froze its weights
        run = dataclasses.replace(config, seed=m, output_dir=str(folder / f"round{k}" / f"m{m}"))
        members.append(train(member, list(frames), run, name=f"member{m}", verbose=False).model)
    return save_committee(Committee(members), folder / f"committee-{k + 1}")


def _load_state(folder: Path, atoms: Atoms, model: str) -> dict[str, Any]:
    path = folder / "state.json"
    if not path.exists():
        return {"step": 0, "calls": [], "model": model, "atoms": atoms}
    state = json.loads(path.read_text())
    state.setdefault("model", state.get("committee"))  # a state written before single models
    if state.get("model_in_out"):  # a model this run wrote: found in OUT wherever OUT now is
        state["model"] = str(folder / state["model_in_out"])
    restored = Atoms(state["numbers"], state["positions"], cell=state["cell"], pbc=state["pbc"])
    restored.set_momenta(np.array(state["momenta"]))
    state["atoms"] = restored
    return state
