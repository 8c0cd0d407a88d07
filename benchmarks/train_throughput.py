"""Training throughput: seconds per epoch of ``ase_equi.train`` against ``mace_run_train``.

Both codes train the metals card's architecture (``models/metals.json``: 32 channels, max_ell 2,
max_L 1, 2 residual layers, correlation 3, r_max 5 Å, 8 Bessel functions, p = 5, radial MLP
[32, 32], readout 16) on the same frames of ``data/metals-emt.xyz.xz`` (a seeded choice, written
once to a temporary extxyz with ``REF_energy`` / ``REF_forces`` / ``REF_stress``), with the same
settings: batch 4, the dtype asked for, loss weights E:F:σ = 10:100:1000 (MACE's ``--loss
stress``: the same three mean-squared terms), E0 fixed to the card's, AdamW lr 0.01, weight
decay 5e-7, gradient clipping 10, EMA 0.99, 10 % of the frames held out for validation.

Every run is a fresh process with one thread (``OMP_NUM_THREADS=1`` and
``torch.set_num_threads(1)``), alternating ours and theirs (A B A B ...). Timed:

- **epoch**: the training steps of one pass over the training frames (ours: from the end of
  the previous epoch to the end of this one, checkpoint write and scheduler included, the
  validation pass excluded; theirs: its ``train_one_epoch``, which has no checkpoint);
- **validation**: one pass over the validation frames (ours: every epoch; theirs: before
  training and after epoch 0, since ``--eval_interval`` is larger than the run);
- **setup**: from the start of the training call to the first step (reading, neighbour lists,
  statistics, model construction).

The summary gives the median of the per-epoch times after each run's first epoch, pooled over
the runs of each code, their ratio, and the mean training loss of each epoch of each run
(both codes define it as the mean over the epoch's steps of the weighted loss of the batch), so
that the speed cannot come from doing less.

    export OMP_NUM_THREADS=1
    python benchmarks/train_throughput.py --pairs 3 --epochs 6 \\
        --json benchmarks/results/2026-11-30-train-throughput.json

The mace-torch side runs with ``.venv-mace/bin/python`` (mace-torch 0.3.16, git-ignored;
``--mace-python`` to use another); this file is its worker too (``--worker mace``), importing
only mace, torch, ase and numpy there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULT_MARK = "TRAIN-THROUGHPUT "
ELEMENTS = [13, 28, 29, 46, 47, 78, 79]  # Al, Ni, Cu, Pd, Ag, Pt, Au
ARCHITECTURE: dict[str, Any] = dict(
    elements=ELEMENTS,
    r_max=5.0,
    num_bessel=8,
    envelope_p=5,
    max_ell=2,
    channels=32,
    max_L=1,
    num_interactions=2,
    correlation=(3, 3),
    radial_mlp=(32, 32),
    readout_hidden=16,
    residual_first=True,
)
SETTINGS: dict[str, Any] = dict(
    batch_size=4,
    lr=0.01,
    weight_decay=5e-7,
    energy_weight=10.0,
    forces_weight=100.0,
    stress_weight=1000.0,
    ema_decay=0.99,
    max_grad_norm=10.0,
    valid_fraction=0.1,
)


def card_reference_energies() -> list[float]:
    """E0 (eV) of the metals card, in the order of ``ELEMENTS``."""
    header = json.loads((ROOT / "models" / "metals.json").read_text())
    assert header["config"]["elements"] == ELEMENTS
    return list(header["heads"]["Default"]["reference_energies"])


def write_subset(source: Path, n_frames: int, seed: int, target: Path) -> dict[str, Any]:
    """``n_frames`` frames of ``source`` chosen with ``numpy.random.default_rng(seed)``,
    written to ``target`` with the labels under ``REF_*`` names; returns a description."""
    import numpy as np
    from ase.io import read, write

    frames = read(source, ":")
    chosen = sorted(np.random.default_rng(seed).choice(len(frames), n_frames, replace=False))
    out = []
    for k in chosen:
        atoms = frames[int(k)]
        results = atoms.calc.results
        copy = atoms.copy()
        copy.calc = None
        copy.info["REF_energy"] = float(results["energy"])
        copy.arrays["REF_forces"] = np.asarray(results["forces"], dtype=float)
        if "stress" in results and atoms.cell.rank == 3:
            copy.info["REF_stress"] = np.asarray(results["stress"], dtype=float)
        out.append(copy)
    write(target, out, format="extxyz")
    return {
        "frames": n_frames,
        "atoms": int(sum(len(a) for a in out)),
        "periodic_3d": int(sum(a.cell.rank == 3 and a.pbc.all() for a in out)),
        "source_indices": [int(k) for k in chosen],
    }


# -- workers -----------------------------------------------------------------------------------


def clocks() -> tuple[float, float]:
    """Wall-clock and CPU time of this process, seconds."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    """Wall-clock and CPU seconds since ``start`` (a :func:`clocks` value)."""
    now = clocks()
    return now[0] - start[0], now[1] - start[1]


def run_ours(request: dict[str, Any]) -> dict[str, Any]:
    """One ``ase_equi.train`` run, timed through its progress events."""
    import torch

    import ase_equi.training.evaluation as evaluation
    from ase_equi import ModelConfig, TrainConfig, train
    from ase_equi.data import DataKeys

    torch.set_num_threads(1)
    valid_times: list[tuple[float, float]] = []
    evaluate = evaluation.LabelledSet.evaluate

    def timed_evaluate(self, *args, **kwargs):
        start = clocks()
        try:
            return evaluate(self, *args, **kwargs)
        finally:
            valid_times.append(since(start))

    evaluation.LabelledSet.evaluate = timed_evaluate  # type: ignore[method-assign]
    marks: list[tuple[str, tuple[float, float], dict[str, Any]]] = []

    def progress(info: dict[str, Any]) -> None:
        marks.append((info["event"], clocks(), info))

    model = ModelConfig(**ARCHITECTURE, reference_energies=tuple(request["e0"]))
    config = TrainConfig(
        **SETTINGS,
        seed=request["seed"],
        epochs=request["epochs"],
        test_fraction=0.0,
        scheduler="plateau",
        checkpoint_every=0,
        dtype=request["dtype"],
        output_dir=request["out"],
        plots=False,
    )
    start = clocks()
    train(model, request["data"], config, keys=DataKeys.ref(), progress=progress, verbose=False)
    steps = [t for event, t, _ in marks if event == "step"]
    epochs = [(t, info) for event, t, info in marks if event == "epoch"]
    epoch_times, losses, previous = [], [], None
    for k, (t, info) in enumerate(epochs):
        begin = previous if previous is not None else steps[0]  # epoch 0: from its first step
        epoch_times.append([t[c] - begin[c] - valid_times[k][c] for c in (0, 1)])
        losses.append(info["train_loss"])
        previous = t
    return {
        "code": "ase_equi",
        "setup_s": [steps[0][c] - start[c] for c in (0, 1)],
        "epoch_s": epoch_times,
        "valid_s": valid_times[: len(epochs)],
        "train_loss": losses,
        "valid_loss": [info.get("valid_loss") for _, info in epochs],
        "steps_per_epoch": len(steps) // max(len(epochs), 1),
    }


def mace_arguments(request: dict[str, Any]) -> list[str]:
    """The ``mace_run_train`` command line of a run (without the program name)."""
    e0 = dict(zip(ELEMENTS, request["e0"], strict=True))
    return [
        "--name=bench",
        f"--train_file={request['data']}",
        f"--valid_fraction={SETTINGS['valid_fraction']}",
        f"--E0s={e0}",
        "--model=MACE",
        "--hidden_irreps=32x0e+32x1o",
        "--num_channels=32",
        "--max_L=1",
        "--max_ell=2",
        "--correlation=3",
        "--num_interactions=2",
        "--interaction_first=RealAgnosticResidualInteractionBlock",
        "--r_max=5.0",
        "--num_radial_basis=8",
        "--num_cutoff_basis=5",
        "--radial_MLP=[32, 32]",
        "--MLP_irreps=16x0e",
        f"--batch_size={SETTINGS['batch_size']}",
        f"--valid_batch_size={SETTINGS['batch_size']}",
        f"--max_num_epochs={request['epochs']}",
        "--loss=stress",
        f"--energy_weight={SETTINGS['energy_weight']}",
        f"--forces_weight={SETTINGS['forces_weight']}",
        f"--stress_weight={SETTINGS['stress_weight']}",
        "--energy_key=REF_energy",
        "--forces_key=REF_forces",
        "--stress_key=REF_stress",
        "--compute_stress=True",
        "--optimizer=adamw",
        f"--lr={SETTINGS['lr']}",
        f"--weight_decay={SETTINGS['weight_decay']}",
        f"--clip_grad={SETTINGS['max_grad_norm']}",
        "--ema",
        f"--ema_decay={SETTINGS['ema_decay']}",
        "--eval_interval=100000",
        "--device=cpu",
        f"--default_dtype={request['dtype']}",
        f"--seed={request['seed']}",
        "--num_workers=0",
        f"--work_dir={request['out']}",
    ]


def run_mace(request: dict[str, Any]) -> dict[str, Any]:
    """One ``mace_run_train`` run (its ``main``), timed by wrapping its epoch, step and
    evaluation functions."""
    import importlib

    import torch
    from mace.cli import run_train

    mace_train = importlib.import_module("mace.tools.train")  # the module, not the function

    torch.set_num_threads(1)
    epoch_times: list[tuple[float, float]] = []
    valid_times: list[tuple[float, float]] = []
    losses: list[list[float]] = []
    first_step: list[tuple[float, float]] = []
    one_epoch, take_step, evaluate = (
        mace_train.train_one_epoch,
        mace_train.take_step,
        mace_train.evaluate,
    )

    def timed_epoch(*args, **kwargs):
        losses.append([])
        begin = clocks()
        one_epoch(*args, **kwargs)
        epoch_times.append(since(begin))

    def recorded_step(*args, **kwargs):
        if not first_step:
            first_step.append(clocks())
        loss, info = take_step(*args, **kwargs)
        losses[-1].append(float(loss))
        return loss, info

    def timed_evaluate(*args, **kwargs):
        begin = clocks()
        try:
            return evaluate(*args, **kwargs)
        finally:
            valid_times.append(since(begin))

    mace_train.train_one_epoch = timed_epoch
    mace_train.take_step = recorded_step
    mace_train.evaluate = timed_evaluate
    sys.argv = ["mace_run_train", *mace_arguments(request)]
    start = clocks()
    run_train.main()
    return {
        "code": "mace-torch",
        "setup_s": [first_step[0][c] - start[c] for c in (0, 1)],
        "epoch_s": epoch_times,
        "valid_s": valid_times[:2],  # before training and after epoch 0 (the final ones differ)
        "train_loss": [sum(x) / len(x) for x in losses],
        "steps_per_epoch": len(losses[0]),
    }


PHASES = {
    "make_batch": "collation (make_batch: batch graphs, stack labels)",
    "stress_groups": "stress groups (which frames get stress)",
    "energy_forces_stress": "forward + forces/stress (create_graph)",
    "squared_error_sums": "loss terms",
    "weighted_loss": "loss weighting",
    "backward": "backward (loss -> weights, through the forces)",
    "clip_grad_norm_": "gradient clipping",
    "step": "optimiser step (AdamW)",
    "update_ema": "EMA update",
    "step_scheduler": "scheduler",
    "save_checkpoint": "checkpoint write",
    "evaluate": "validation (EMA weights)",
    "_train_step": "whole training step",
    "_end_epoch": "end of epoch (validation, checkpoint, scheduler)",
}


def profile_ours(request: dict[str, Any], rows: int) -> str:
    """Markdown tables of one epoch of ours: time per training phase (``cProfile``, epoch 2)
    and per torch operator (``torch.profiler``, self CPU time, epoch 3)."""
    import cProfile
    import pstats

    import torch

    from ase_equi import ModelConfig, TrainConfig, train
    from ase_equi.data import DataKeys

    torch.set_num_threads(1)
    python_profile = cProfile.Profile()
    torch_profile = torch.profiler.profile()
    marks: list[tuple[float, float]] = []

    def progress(info: dict[str, Any]) -> None:
        if info["event"] != "epoch":
            return
        marks.append(clocks())
        if info["epoch"] == 1:
            python_profile.enable()
        elif info["epoch"] == 2:
            python_profile.disable()
            torch_profile.start()
        elif info["epoch"] == 3:
            torch_profile.stop()

    model = ModelConfig(**ARCHITECTURE, reference_energies=tuple(request["e0"]))
    config = TrainConfig(
        **SETTINGS,
        seed=request["seed"],
        epochs=3,
        test_fraction=0.0,
        checkpoint_every=0,
        dtype=request["dtype"],
        output_dir=request["out"],
        plots=False,
    )
    train(model, request["data"], config, keys=DataKeys.ref(), progress=progress, verbose=False)
    stats = pstats.Stats(python_profile)
    epoch = marks[1][0] - marks[0][0]
    lines = [
        f"Epoch 2 under cProfile: {epoch:.2f} s wall (cumulative time of each phase; phases nest:",
        "the step contains collation, forward, loss, backward, clipping, optimiser and EMA)",
        "",
        "| phase | function | calls | cumulative s | share of the epoch |",
        "|---|---|---|---|---|",
    ]
    for (file, _, name), (_, calls, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        if name not in PHASES:
            continue
        if name == "step" and "optim" not in file:
            continue
        if name == "backward" and "_tensor" not in file:
            continue
        if name == "evaluate" and "evaluation" not in file:
            continue
        lines.append(
            f"| {PHASES[name]} | `{name}` | {calls} | {cumulative:.2f} | "
            f"{100 * cumulative / epoch:.0f} % |"
        )
    table = torch_profile.key_averages()
    total = sum(e.self_cpu_time_total for e in table)
    lines += [
        "",
        f"Epoch 3 under torch.profiler: top {rows} operators by self CPU time "
        f"(total {total / 1e6:.2f} s of operator time)",
        "",
        "| operator | calls | self CPU s | share |",
        "|---|---|---|---|",
    ]
    for e in sorted(table, key=lambda e: -e.self_cpu_time_total)[:rows]:
        lines.append(
            f"| `{e.key}` | {e.count} | {e.self_cpu_time_total / 1e6:.3f} | "
            f"{100 * e.self_cpu_time_total / total:.1f} % |"
        )
    return "\n".join(lines)


def worker(code: str) -> None:
    request = json.loads(sys.stdin.read())
    result = run_ours(request) if code == "ours" else run_mace(request)
    sys.stdout.write(RESULT_MARK + json.dumps(result) + "\n")


# -- parent ------------------------------------------------------------------------------------


def launch(code: str, python: str, request: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [python, str(Path(__file__).resolve()), "--worker", code],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=env,
        cwd=request["out"],
    )
    lines = [x for x in done.stdout.splitlines() if x.startswith(RESULT_MARK)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{code} worker failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len(RESULT_MARK) :])


def machine() -> str:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model or platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def median_after_first(runs: list[dict[str, Any]], key: str = "epoch_s", clock: int = 0) -> float:
    """Median over all runs of ``key`` (wall clock: ``clock=0``, CPU: 1), first entry left out."""
    return statistics.median(t[clock] for run in runs for t in run[key][1:])


def summarise(
    runs: dict[str, list[dict[str, Any]]],
    command: str,
    subset: dict[str, Any],
    args: argparse.Namespace,
    *,
    final: bool,
) -> None:
    """Medians and ratio of the runs so far, printed (``final``) and written to ``--json``
    (after every run, so that an interrupted benchmark keeps what it measured)."""
    load_end = os.getloadavg()
    runs = {c: r for c, r in runs.items() if r}
    medians = {c: median_after_first(r) for c, r in runs.items()}
    cpu = {c: median_after_first(r, clock=1) for c, r in runs.items()}
    summary: dict[str, Any] = {
        "command": command,
        "machine": machine(),
        "torch_threads": 1,
        "load_average_end": load_end,
        "data": {"file": "data/metals-emt.xyz.xz", "seed": args.seed, **subset},
        "dtype": args.dtype,
        "settings": SETTINGS,
        "architecture": {k: v for k, v in ARCHITECTURE.items() if k != "elements"},
        "clocks": "each time is [wall clock, CPU time of the process], seconds",
        "median_epoch_s": medians,
        "median_epoch_cpu_s": cpu,
        "median_valid_s": {c: median_after_first(r, "valid_s") for c, r in runs.items()},
        "median_setup_s": {
            c: statistics.median(x["setup_s"][0] for x in r) for c, r in runs.items()
        },
        "complete": final,
        "runs": runs,
    }
    if not final:
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
        return
    print(f"load average at end {load_end}")
    for code, value in medians.items():
        print(
            f"{code}: median epoch {value:.2f} s wall, {cpu[code]:.2f} s CPU "
            f"(epochs 2.. of {len(runs[code])} runs)"
        )
    if len(medians) == 2:
        summary["ratio"] = medians["ours"] / medians["mace"]
        summary["ratio_cpu"] = cpu["ours"] / cpu["mace"]
        print(
            f"ratio ase_equi / mace-torch: {summary['ratio']:.3f} wall, "
            f"{summary['ratio_cpu']:.3f} CPU"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["ours", "mace"], help=argparse.SUPPRESS)
    parser.add_argument("--data", default=str(ROOT / "data" / "metals-emt.xyz.xz"))
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--pairs", type=int, default=3, help="alternating (ours, mace) pairs")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mace-python", default=str(ROOT / ".venv-mace" / "bin" / "python"))
    parser.add_argument("--only", choices=["ours", "mace"], help="run one code only")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument(
        "--profile", type=int, metavar="ROWS", help="profile ours only (tables, top ROWS ops)"
    )
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    if args.profile:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "frames.xyz"
            write_subset(Path(args.data), args.frames, args.seed, data)
            request = {"data": str(data), "e0": card_reference_energies(), "out": tmp}
            request.update(dtype=args.dtype, seed=args.seed)
            print(
                f"command: OMP_NUM_THREADS=1 python benchmarks/train_throughput.py "
                f"{' '.join(sys.argv[1:])}"
            )
            print(f"machine: {machine()}; load average {os.getloadavg()}")
            print(profile_ours(request, args.profile))
        return
    command = "OMP_NUM_THREADS=1 python benchmarks/train_throughput.py " + " ".join(sys.argv[1:])
    print(f"command: {command}")
    print(f"machine: {machine()}; load average at start {os.getloadavg()}")
    codes = [c for c in ("ours", "mace") if args.only in (None, c)]
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in codes}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "frames.xyz"
        subset = write_subset(Path(args.data), args.frames, args.seed, data)
        e0 = card_reference_energies()
        for pair in range(args.pairs):
            for code in codes:
                out = Path(tmp) / f"{code}-{pair}"
                out.mkdir()
                request = {
                    "data": str(data),
                    "e0": e0,
                    "epochs": args.epochs,
                    "dtype": args.dtype,
                    "seed": args.seed,
                    "out": str(out),
                }
                python = sys.executable if code == "ours" else args.mace_python
                result = launch(code, python, request)
                runs[code].append(result)
                times = " ".join(f"{t:.2f}/{c:.2f}" for t, c in result["epoch_s"])
                losses = " ".join(f"{x:.4g}" for x in result["train_loss"])
                print(f"pair {pair} {code:4s}: epochs wall/cpu [s] {times} | loss {losses}")
                summarise(runs, command, subset, args, final=False)
    summarise(runs, command, subset, args, final=True)


if __name__ == "__main__":
    main()
