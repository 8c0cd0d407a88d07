"""Demonstration 1 of on-the-fly learning: the zoo model ``metals`` taken to an ordered alloy it
has never seen, with EMT as the reference, against labelling every N-th frame. Resumable.

    OMP_NUM_THREADS=1 python scripts/uncertainty/learn_demo_metals.py

(or the two strategies side by side, ``--only on_the_fly`` and ``--only every_nth`` in two
processes, then the plain command, which finds both done and measures them).

System: L1₂ Ni₃Al (Al on the cube corners, Ni on the face centres), 2×2×2 conventional cells
(32 atoms) at EMT's lattice constant (relaxed here). The training data of ``metals`` hold pure
fcc metals, random fcc alloys (none ordered, only one with Al and Ni together), surfaces,
vacancies and clusters: no ordered intermetallic, and Al–Ni neighbours almost never.

Settings (the same for both strategies; those of the v2 run, chosen before any test error was
seen and sized for a machine shared with other jobs, except the two changes of
``learn_on_the_fly`` named below):

- MD: velocity Verlet, 2 fs, 600 steps (1.2 ps), momenta Maxwell–Boltzmann at 1200 K (seed 0,
  no net momentum): about 600 K once kinetic and potential energy share it;
- budget K = 6 reference calls; ``on_the_fly``: threshold = the card's
  ``uncertainty_threshold_eV_per_A.valid_p95`` (the 95th percentile of the largest atomic
  uncertainty on the validation structures), windows of ``learn_on_the_fly``'s default
  600 // (2 × 6) = 50 steps: at a window's end the most uncertain frame of the window that
  lies at least 25 steps after the last labelled one is labelled if above the threshold, at
  most ⌈6 s / 600⌉ calls by step s (the pacing, new since the v2 run);
  ``every_nth``: a call every 600 // 6 = 100 steps;
- after each call: warm-start fine-tuning, 8 epochs, at the learning rate of
  ``learn_on_the_fly``'s default (new since the paced runs: per call from the model's force
  error on the labelled structure, ``RefitRate``, 2e-4 when it errs there no more than on its
  test set, at most 5e-3 (``--rate-ceiling X``: at most X, results under ``...-ceilingX``; the
  first runs of this default had the first stage's 1e-2 as the cap, which no call of theirs
  reached); ``--fixed-lr``: 0.005 at every call, as in the paced runs), with the loss weights
  the parent ended its training with (new since the v2 run: 1000 : 100 : 10000, not
  1 : 100 : 1; with those the energy error on the test trajectory grew after the calls,
  4.6 → 10.7–39 meV/atom in the v2 runs), on the learned frames plus a
  seeded sample of 16 frames of the shipped replay set ``models/metals-replay.xyz.xz``; the LLPR
  section refitted on all 300 replay frames (weighted to stand for the training split) plus
  the learned frames, the card's calibration factors kept;
- test: an independent EMT trajectory of the same cell (velocity Verlet 2 fs, momenta at
  1600 K, seed 11: about 800 K), 20 frames, one every 100 steps; errors of the parent and of
  each strategy's final model; MD stability: 400 NVE steps of 2 fs of each model from the test
  trajectory's start.

The parent is the zoo's current ``metals`` (stage 5; the v2 runs had stage 3, whose
uncertainty on this Ni₃Al run sat at the card's threshold, 0.082–0.086 eV/Å). The first
session's run (first ``metals`` model, a call at the first frame over the threshold) is
``...-metals.md``, the v2 runs ``...-metals-v2*``, the paced runs (``--fixed-lr``)
``...-metals-paced*``; this run writes ``...-metals-paced-rate*``. Two
earlier runs of
the window rule are measured too when their folders are there (moved by hand):
``window_only`` (labelled frames not kept apart) and ``spaced_full`` (kept ``min_interval``
apart: a frame labelled at a window's end then left only the next window's last frame to
choose, so the rule became "every 50 steps").

State and models go to ``runs/learn_demo/metals-paced-rate/`` (``--seed S``: ``...-seedS``;
``--fixed-lr`` drops ``-rate``); the results to
``benchmarks/results/2026-12-01-learn-on-the-fly-metals-paced-rate.{json,md}`` and the two
learning plots ``...-metals-paced-rate-{on_the_fly,every_nth}.png``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.filters import UnitCellFilter
from ase.io import read, write
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learn_demo_common import (
    RESULTS,
    ROOT,
    STRATEGIES,
    add_ablations,
    apply_ablations,
    compared_models,
    errors_on,
    markdown,
    run_strategy,
    selection_model,
    so_far,
    stability,
    weights_sha,
)

MODEL = "metals"
OUT = ROOT / "runs" / "learn_demo" / "metals-paced"
STEM = "2026-12-01-learn-on-the-fly-metals-paced"
#: folders of earlier runs of the window rule, measured when present (moved there by hand)
ABLATIONS = ("window_only", "spaced_full")


def settings() -> dict:
    card = json.loads((ROOT / "models" / f"{MODEL}.json").read_text())["card"]
    threshold = card["uncertainty"]["uncertainty_threshold_eV_per_A"]["valid_p95"]
    return {
        "system": "L1_2 Ni3Al, 2x2x2 conventional cells (32 atoms), EMT lattice constant",
        "steps": 600,
        "timestep_fs": 2.0,
        "start_temperature_K": 1200.0,
        "budget": 6,
        "threshold": float(threshold),
        "threshold_from": "card uncertainty_threshold_eV_per_A.valid_p95",
        "min_interval": 600 // (2 * 6),
        "min_interval_from": "learn_on_the_fly's default, steps // (2 x budget)",
        "pace": "at most ceil(budget x step / steps) calls by each step (learn_on_the_fly)",
        "epochs": 8,
        "replay_count": 16,
        "test": "EMT NVE trajectory, 1600 K start (seed 11), 20 frames every 100 steps of 2 fs",
        "stability": "400 NVE steps of 2 fs from the test start",
    }


def ni3al() -> Atoms:
    """L1₂ Ni₃Al at EMT's lattice constant, 2×2×2 conventional cells."""
    cell = bulk("Ni", "fcc", a=3.57, cubic=True)
    cell.numbers[0] = 13  # Al on the corner
    cell.calc = EMT()
    BFGS(UnitCellFilter(cell, hydrostatic_strain=True), logfile=None).run(fmax=1e-5)
    atoms = Atoms(cell.numbers, cell.positions, cell=cell.cell, pbc=True).repeat(2)
    return atoms


def with_momenta(atoms: Atoms, temperature: float, seed: int) -> Atoms:
    out = atoms.copy()
    MaxwellBoltzmannDistribution(out, temperature_K=temperature, rng=np.random.default_rng(seed))
    Stationary(out)
    return out


def test_trajectory(start: Atoms, out: Path) -> list[Atoms]:
    """20 EMT-labelled frames of an EMT trajectory (cached in the run folder ``out``)."""
    path = out / "test.xyz"
    if path.exists():
        return list(read(path, ":"))
    work = start.copy()
    work.calc = EMT()
    dyn = VelocityVerlet(work, timestep=2.0 * units.fs)
    frames = []
    for _ in range(20):
        dyn.run(100)
        frame = Atoms(work.numbers, work.positions, cell=work.cell, pbc=True)
        frame.calc = SinglePointCalculator(
            frame, energy=work.get_potential_energy(), forces=work.get_forces()
        )
        frames.append(frame)
    write(path, frames, format="extxyz")
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=STRATEGIES, help="run this strategy only (no results)")
    parser.add_argument(
        "--so-far", action="store_true", help="measure the unfinished runs at an equal budget"
    )
    parser.add_argument("--stability-steps", type=int, default=400, help="NVE steps of the check")
    add_ablations(parser)
    args = parser.parse_args()
    only = args.only
    torch.set_num_threads(1)
    config = settings()
    out, stem, flags = apply_ablations(args, config, OUT, STEM)
    model = selection_model(MODEL, config)
    out.mkdir(parents=True, exist_ok=True)
    crystal = ni3al()
    start = with_momenta(crystal, config["start_temperature_K"], seed=args.seed)
    test_start = with_momenta(crystal, 1600.0, seed=11)
    test = test_trajectory(test_start, out)
    command = "OMP_NUM_THREADS=1 python scripts/uncertainty/learn_demo_metals.py"
    command += flags
    result = {
        "command": command,
        "parent": MODEL,
        "parent_weights_sha256": weights_sha(MODEL),
        "lattice_constant_A": float(crystal.cell.lengths()[0] / 2),
        "settings": config,
        "strategies": {},
    }
    if args.so_far:  # the runs as they stand, after the same number of calls each
        result["strategies"] = so_far(out)
        result["partial"] = "unfinished runs, compared after the same number of calls"
    result["settings"]["stability_steps"] = args.stability_steps
    for name in () if args.so_far else STRATEGIES if only is None else (only,):
        summary = run_strategy(name, start, model, EMT(), out, config)
        result["strategies"][name] = summary
        shutil.copyfile(out / name / "learning.png", RESULTS / f"{stem}-{name}.png")
        print(name, {k: v for k, v in summary.items() if k != "calls_detail"}, flush=True)
    if only is not None:  # one strategy in its own process; a plain run then joins them
        return
    models = compared_models(MODEL, result, out, args.so_far)
    for name in ABLATIONS:  # earlier runs of the window rule (see the docstring)
        if not (out / name / "state.json").exists():
            continue
        state = json.loads((out / name / "state.json").read_text())
        result["strategies"][name] = {
            "calls": len(state["calls"]),
            "call_steps": [c["step"] for c in state["calls"]],
            "called_at_steps": [c["called_at_step"] for c in state["calls"]],
            "wall_s": round(json.loads((out / name / "wall.json").read_text())["seconds"], 1),
        }
        models[name] = str(out / name / Path(state["model"]).name)
    result["test"] = {k: errors_on(m, test) for k, m in models.items()}
    result["test_force_rmse_after_each_call"] = {
        name: [
            errors_on(str(out / name / f"model-{k}.json"), test)["force_rmse_eV_per_A"]
            for k in range(1, result["strategies"][name]["calls"] + 1)
        ]
        for name in result["strategies"]
    }
    print(result["test"], flush=True)
    md_steps = args.stability_steps
    result["stability"] = {k: stability(m, test_start, md_steps, 2.0) for k, m in models.items()}
    print(result["stability"], flush=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    intro = [
        "Parent: the zoo's current `metals` (stage 5). On the fly: windows of 50 steps, the",
        "most uncertain frame of each (at least 25 steps after the last labelled one) labelled",
        "at the window's end if above the card's threshold, at most ceil(6 s / 600) calls by",
        "step s; retraining with the parent's last-stage loss weights, at the learning rate",
        "of the script's settings (`lr`).",
        "",
        "Written by `OMP_NUM_THREADS=1 python scripts/uncertainty/learn_demo_metals.py` (all",
        "numbers: the JSON beside this file; settings and their reasons: the script's",
        "docstring). Zoo model `metals` taken to L1₂ Ni₃Al (an ordered intermetallic; its data",
        "hold no ordered alloy), EMT as the reference, the same budget of reference calls for",
        "both strategies; test: an independent EMT trajectory (other seed and temperature).",
    ]
    title = "On-the-fly learning vs every N-th frame: metals → L1₂ Ni₃Al (EMT)"
    curves = [
        f"- {name}: " + ", ".join(f"{x:.4f}" for x in rmse)
        for name, rmse in result["test_force_rmse_after_each_call"].items()
    ]
    text = markdown(title, intro, result)
    text += "\nTest force RMSE (eV/Å) of the model after 1, 2, ... calls:\n\n" + "\n".join(curves)
    (RESULTS / f"{stem}.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
