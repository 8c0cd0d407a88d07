"""Batched FIRE (``ase_equi.relax.relax``) against ASE's FIRE run on each structure, side by side.

Both sides relax the same rattled and strained fcc metal cells with the same model, dtype and
settings: ASE's ``FIRE`` (with ``FrechetCellFilter`` when ``--cell``) on one
``EquivariantCalculator`` structure after structure, then ``relax`` on the whole list at once.
Printed and written to ``benchmarks/results/<date>-relax.md`` (and ``.json``): both wall times,
their ratio, the number of model calls, and how far apart the minima are (energy, positions,
cell, step counts).

Run with one thread (``OMP_NUM_THREADS=1``): the machine is shared.

    OMP_NUM_THREADS=1 python benchmarks/relax_batched.py --n 100 --cell
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE

from ase_equi import EquivariantCalculator, load_model
from ase_equi.relax import relax

METALS = {"Al": 4.05, "Ni": 3.52, "Cu": 3.61, "Pd": 3.89, "Ag": 4.09, "Pt": 3.92, "Au": 4.08}


NOTES = """\
What was timed: the ASE side is `FIRE(FrechetCellFilter(atoms))` (or `FIRE(atoms)` without
`--cell`) run to `fmax` on each structure in turn, one `EquivariantCalculator` shared by all
(its Verlet list rebuilt per structure); `ase_model_calls` counts its model evaluations (steps + 1
per structure). Our side is one `relax(...)` call on the whole list: one model call per step on
the structures still relaxing. Both run in this one process, ASE first, after a warm-up, with
one torch thread; the machine is shared (the load average is recorded at start and end), so
the ratio is the meaningful number, not the absolute times. The minima are compared structure by
structure: largest |ΔE|, largest position and cell component differences, and how many
structures took the same number of FIRE steps on both sides.
"""


def structures(n: int, seed: int, rattle: float, strain: float) -> list[Atoms]:
    """``n`` fcc cells of 4 or 8 atoms (one or two elements), strained and rattled."""
    rng = np.random.default_rng(seed)
    names = list(METALS)
    out = []
    for k in range(n):
        first, second = rng.choice(names, size=2, replace=False)
        a = 0.5 * (METALS[first] + METALS[second])
        atoms = bulk(first, "fcc", a=a, cubic=True)
        if k % 2:
            atoms = atoms.repeat((1, 1, 2))
        swap = rng.random(len(atoms)) < 0.4
        atoms.symbols[swap] = second
        eps = strain * rng.standard_normal((3, 3))
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
        atoms.positions += rattle * rng.standard_normal(atoms.positions.shape)
        out.append(atoms)
    return out


def ase_loop(images, loaded, *, fmax, steps, cell, dtype, device="cpu"):
    """ASE's FIRE on each structure in turn, one calculator; (final atoms, steps, seconds)."""
    calc = EquivariantCalculator(loaded, dtype=dtype, device=device)
    finals, nsteps = [], []
    start = time.perf_counter()
    for atoms in images:
        work = atoms.copy()
        work.calc = calc
        optimiser = FIRE(FrechetCellFilter(work) if cell else work, logfile=None)
        optimiser.run(fmax=fmax, steps=steps)
        work.get_potential_energy()
        finals.append(work)
        nsteps.append(optimiser.nsteps)
    return finals, np.array(nsteps), time.perf_counter() - start


def git_describe() -> str:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True)
        return out.stdout.decode().strip() or "unknown"
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="number of structures")
    parser.add_argument("--model", default="metals")
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--cell", action="store_true", help="relax the cells too")
    parser.add_argument("--rattle", type=float, default=0.1, help="Å, standard deviation")
    parser.add_argument("--strain", type=float, default=0.03, help="standard deviation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="torch device of the model (cuda)")
    parser.add_argument("--budget-mib", type=float, default=None, help="MiB; default: relax's")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    images = structures(args.n, args.seed, args.rattle, args.strain)
    loaded = load_model(args.model, dtype=getattr(torch, args.dtype), device=args.device)
    load = os.getloadavg()
    # warm-up on two structures (first-call costs), then both sides, ASE first
    both = dict(fmax=args.fmax, cell=args.cell, dtype=args.dtype, device=args.device)
    relax(images[:2], loaded, steps=3, verbose=False, **both)
    finals, ase_steps, ase_s = ase_loop(images, loaded, steps=args.steps, **both)
    start = time.perf_counter()
    result = relax(
        images,
        loaded,
        steps=args.steps,
        budget_mib=args.budget_mib,
        verbose=False,
        **both,
    )
    ours_s = time.perf_counter() - start
    report(args, images, finals, ase_steps, ase_s, result, ours_s, load)


def report(args, images, finals, ase_steps, ase_s, result, ours_s, load) -> None:
    ours = result.structures
    de = max(
        abs(a.get_potential_energy() - b.get_potential_energy())
        for a, b in zip(ours, finals, strict=True)
    )
    dx = max(np.abs(a.positions - b.positions).max() for a, b in zip(ours, finals, strict=True))
    dc = max(np.abs(a.cell.array - b.cell.array).max() for a, b in zip(ours, finals, strict=True))
    record = {
        "command": "OMP_NUM_THREADS="
        + os.environ.get("OMP_NUM_THREADS", "?")
        + " python "
        + " ".join(["benchmarks/relax_batched.py", *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.platform()}; {os.cpu_count()} cores; load {load[0]:.2f}"
        + (f"; {torch.cuda.get_device_name(0)}" if args.device.startswith("cuda") else ""),
        "versions": f"torch {torch.__version__}, git {git_describe()}",
        "structures": len(images),
        "atoms": [int(min(map(len, images))), int(max(map(len, images)))],
        "settings": {
            k: getattr(args, k)
            for k in ("model", "dtype", "device", "fmax", "steps", "cell", "budget_mib")
        },
        "ase_loop_s": round(ase_s, 2),
        "relax_s": round(ours_s, 2),
        "speedup": round(ase_s / ours_s, 2),
        "ase_model_calls": int(ase_steps.sum() + len(images)),
        "relax_model_calls": len(result.batch_sizes),
        "converged": [int(result.converged.sum()), len(images)],
        "same_step_counts": int((ase_steps == result.steps).sum()),
        "steps_min_median_max": [
            int(np.min(ase_steps)),
            float(np.median(ase_steps)),
            int(np.max(ase_steps)),
        ],
        "max_energy_difference_eV": de,
        "max_position_difference_A": dx,
        "max_cell_difference_A": dc,
        "load_at_end": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(record, indent=1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gpu = "" if args.device == "cpu" else "-" + args.device.split(":")[0]
    stem = out / f"{record['date'][:10]}-relax{'-cell' if args.cell else ''}{gpu}"
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [
        "# Batched FIRE vs ASE's FIRE per structure, same calculator",
        "",
        *(f"- {k}: `{v}`" if k == "command" else f"- {k}: {v}" for k, v in record.items()),
        "",
        NOTES,
    ]
    stem.with_suffix(".md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
