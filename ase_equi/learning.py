"""On-the-fly learning: molecular dynamics with a committee that asks a reference calculator
when it is unsure, learns the answer, and continues.

Every MD step the committee's largest atomic force uncertainty (``forces_uncertainty``, eV/Å,
see :mod:`ase_equi.uncertainty`) is compared with ``threshold``. When it passes:

1. the current structure is labelled by the ``reference`` (any ASE calculator);
2. it joins the learned data (``OUT/learned.xyz``, labelled extxyz);
3. every member is trained further from its current weights (warm start, with
   :func:`~ase_equi.train` on a member :class:`~ase_equi.model.mace.MaceModel`) on the learned
   data plus the ``replay`` frames, and the members are joined into a new committee file
   ``OUT/committee-{k}.json``;
4. the MD continues from the same positions and momenta with the new committee.

No reference call is made unless the threshold is passed. After every step the state (step,
positions, momenta, the committee in use, the call log) is written to ``OUT`` (atomically),
so a killed run called again with the same ``out`` resumes from the last step written; a kill
during a training resumes that training from its checkpoint. ``OUT/calls.json`` logs every
reference call: step, why (the uncertainty and the threshold), the force error of the
committee on that structure before and after learning it; ``OUT/uncertainty.txt`` the largest
atomic force uncertainty of every step (:func:`plot_learning` draws both).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write
from ase.md.verlet import VelocityVerlet

from .calculator import EquivariantCalculator
from .io.model_committee import LoadedCommittee, save_committee
from .io.model_file import write_atomic
from .model.committee import Committee
from .training.config import TrainConfig

__all__ = ["LearnResult", "learn_on_the_fly", "plot_learning"]


@dataclass
class LearnResult:
    """What :func:`learn_on_the_fly` did: the steps run, the reference calls (one dict each,
    as in ``OUT/calls.json``) and the committee file in use at the end."""

    steps: int
    calls: list[dict[str, Any]] = field(default_factory=list)
    committee: Path = Path()


def learn_on_the_fly(
    atoms: Atoms,
    model: str | os.PathLike,
    reference: Any,
    *,
    out: str | os.PathLike,
    threshold: float,
    steps: int,
    timestep_fs: float = 1.0,
    max_calls: int = 10,
    replay: Sequence[Atoms] = (),
    train_config: TrainConfig | None = None,
) -> LearnResult:
    """Run ``steps`` steps of velocity-Verlet MD of ``atoms`` (their momenta as given) with the
    full committee in file ``model``, learning on the fly (see the module docstring).

    Parameters
    ----------
    reference:
        An ASE calculator (EMT, a DFT code, ...): called only on flagged structures.
    out:
        Folder of the state, the learned data, the new committees and the logs; a rerun with
        the same ``out`` resumes (``atoms`` is then taken from the saved state).
    threshold:
        eV/Å, on the largest atomic ``forces_uncertainty``.
    max_calls:
        At most this many reference calls; afterwards the MD continues without learning.
    replay:
        Labelled frames trained on together with the learned ones (e.g. the original data).
    train_config:
        Settings of each member's warm-start training (default: 30 epochs, lr 0.005, no
        valid/test split, no plots); ``output_dir`` is set per member and round.
    """
    if not 0 < threshold < np.inf:
        raise ValueError(f"threshold must be a number > 0 (eV/Å), got {threshold!r}")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    state = _load_state(folder, atoms, Path(model))
    atoms = state["atoms"]
    calls: list[dict[str, Any]] = state["calls"]
    committee = Path(state["committee"])
    atoms.calc = EquivariantCalculator(committee)
    if atoms.calc.loaded.model.kind != "full":
        raise ValueError("learn_on_the_fly trains full committees; this one is shallow")
    dyn = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    logged = False  # calls.json: written after the first step, then only when a call is added
    for step in range(state["step"], steps):
        dyn.run(1)
        u = float(atoms.calc.get_property("forces_uncertainty", atoms).max())
        with open(folder / "uncertainty.txt", "a") as fh:  # step, time (fs), eV/Å
            fh.write(f"{step + 1} {(step + 1) * timestep_fs:.6g} {u!r}\n")
        called = u > threshold and len(calls) < max_calls
        if called:
            call, calc = _learn(atoms, reference, folder, len(calls), replay, train_config)
            calls.append({"step": step + 1, "uncertainty": u, "threshold": threshold, **call})
            committee = Path(call["committee"])
            atoms.calc = calc
        _save_state(folder, atoms, step + 1, committee, calls)
        if called or not logged:
            write_atomic(folder / "calls.json", json.dumps(calls, indent=1).encode())
            logged = True
    return LearnResult(steps=steps, calls=calls, committee=committee)


def _learn(
    atoms: Atoms,
    reference: Any,
    folder: Path,
    k: int,
    replay: Sequence[Atoms],
    train_config: TrainConfig | None,
) -> tuple[dict[str, Any], EquivariantCalculator]:
    """Label ``atoms``, add them to the learned data, train every member of their calculator's
    committee further; the call's log entry (force errors before and after, eV/Å RMS; the new
    committee file) and a calculator of the new committee."""
    from .training.trainer import train

    labelled = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    labelled.calc = reference
    energy, forces = labelled.get_potential_energy(), labelled.get_forces()
    labelled.calc = SinglePointCalculator(labelled, energy=energy, forces=forces)
    before = float(np.sqrt(np.mean((atoms.get_forces() - forces) ** 2)))
    data_file = folder / "learned.xyz"
    write(data_file, labelled, format="extxyz", append=True)
    frames = [*read(data_file, ":"), *replay]
    config = train_config or retraining_config()
    members = []
    loaded = atoms.calc.loaded
    for m, frozen in enumerate(loaded.model.members):
        member = copy.deepcopy(frozen).requires_grad_(True)  # the calculator froze its weights
        run = dataclasses.replace(config, seed=m, output_dir=str(folder / f"round{k}" / f"m{m}"))
        members.append(train(member, frames, run, name=f"member{m}", verbose=False).model)
    committee = Committee(members)
    new = save_committee(committee, folder / f"committee-{k + 1}")
    calc = EquivariantCalculator(LoadedCommittee(committee, loaded.config, source=str(new)))
    after = float(np.sqrt(np.mean((calc.get_forces(labelled.copy()) - forces) ** 2)))
    call = {"force_rmse_before": before, "force_rmse_after": after, "committee": str(new)}
    return call, calc


RETRAIN_EPOCHS = 30
RETRAIN_LR = 0.005


def retraining_config(epochs: int = RETRAIN_EPOCHS, lr: float = RETRAIN_LR) -> TrainConfig:
    """The training of every committee member after a reference call (the default of
    :func:`learn_on_the_fly` and ``ase-equi learn``): warm start from the member's weights,
    ``epochs`` over the learned frames plus the replay, learning rate ``lr``, all frames
    trained on (no validation or test split: the next reference call is the test), no plots."""
    return TrainConfig(epochs=epochs, lr=lr, valid_fraction=0.0, test_fraction=0.0, plots=False)


def _save_state(folder: Path, atoms: Atoms, step: int, committee: Path, calls: list) -> None:
    state = {
        "step": step,
        "committee": str(committee),
        "calls": calls,
        "numbers": atoms.numbers.tolist(),
        "positions": atoms.positions.tolist(),
        "momenta": atoms.get_momenta().tolist(),
        "cell": atoms.cell.array.tolist(),
        "pbc": atoms.pbc.tolist(),
    }
    write_atomic(folder / "state.json", json.dumps(state).encode())


def _load_state(folder: Path, atoms: Atoms, committee: Path) -> dict[str, Any]:
    path = folder / "state.json"
    if not path.exists():
        return {"step": 0, "calls": [], "committee": str(committee), "atoms": atoms}
    state = json.loads(path.read_text())
    restored = Atoms(state["numbers"], state["positions"], cell=state["cell"], pbc=state["pbc"])
    restored.set_momenta(np.array(state["momenta"]))
    state["atoms"] = restored
    return state


def plot_learning(out: str | os.PathLike, path: str | os.PathLike) -> Path | None:
    """PNG of the largest atomic force uncertainty over simulated time, with the threshold and
    the reference calls marked, from a :func:`learn_on_the_fly` folder; None without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    folder = Path(out)
    rows = np.loadtxt(folder / "uncertainty.txt", ndmin=2)
    calls = json.loads((folder / "calls.json").read_text())
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(rows[:, 1], rows[:, 2], lw=1, label="max atomic force uncertainty")
    times = dict(zip(rows[:, 0].astype(int), rows[:, 1], strict=True))
    for k, call in enumerate(calls):
        ax.axvline(
            times.get(call["step"], np.nan),
            color="C3",
            lw=0.8,
            label="reference call" if k == 0 else None,
        )
    if calls:
        ax.axhline(calls[0]["threshold"], color="k", ls=":", label="threshold")
    ax.set_xlabel("simulated time (fs)")
    ax.set_ylabel("eV/Å")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
