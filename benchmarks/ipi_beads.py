"""Beads per second served to i-PI: batched requests (one model call per request) against one
bead per request.

Two measurements, each with the same model, dtype and bead geometries:

1. **Through i-PI** (``--ipi``, needs ``pip install ipi``): a PIMD run of one water molecule
   (``molecules-pbe``, P beads, NVT, PILE-L) served by one ``ase_equi.engines.ipi.serve``
   client over a UNIX socket, once with ``<batch_size>1`` (i-PI sends one bead per request)
   and once with ``<batch_size>P`` (all beads in one request). Beads/s = P × (steps + 1) /
   the client's time from its first request to i-PI's ``EXIT`` (i-PI's own stepping is
   included: that is what a user waits for).
2. **The evaluation alone**: P geometries (the structure, each atom displaced by N(0, 0.05 Å))
   evaluated one at a time (:meth:`BeadEvaluator.one`, the calculator path) and as one batch
   (:meth:`BeadEvaluator.many`); median of ``--repeats``. For water and for a 32-atom Cu cell
   (``metals``): the batch gains most where one structure is too small to keep the CPU busy.

Writes ``benchmarks/results/DATE-ipi-beads.json`` (``--out`` to change the stem); the ``.md``
beside it is the written summary.

    OMP_NUM_THREADS=1 python benchmarks/ipi_beads.py --beads 32 --steps 10 --ipi
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk, molecule

from ase_equi.engines.ipi import BOHR, BeadEvaluator, serve
from ase_equi.engines.ipi_protocol import IpiAddress

RESULTS = Path(__file__).resolve().parent / "results"

WATER_INPUT = """<simulation verbosity='quiet' sockets_prefix='{prefix}'>
  <output prefix='sim'><properties stride='1000' filename='out'> [ step ] </properties></output>
  <total_steps>{steps}</total_steps>
  <prng><seed>12345</seed></prng>
  <ffsocket name='model' mode='unix' pbc='false'>
    <address>bench</address><batch_size>{batch}</batch_size>
  </ffsocket>
  <system>
    <initialize nbeads='{beads}'>
      <file mode='xyz' units='angstrom'>water.xyz</file>
      <velocities mode='thermal' units='kelvin'>300</velocities>
    </initialize>
    <forces><force forcefield='model'/></forces>
    <motion mode='dynamics'>
      <dynamics mode='nvt'>
        <timestep units='femtosecond'>0.25</timestep>
        <thermostat mode='pile_l'><tau units='femtosecond'>100</tau></thermostat>
      </dynamics>
    </motion>
    <ensemble><temperature units='kelvin'>300</temperature></ensemble>
  </system>
</simulation>
"""


def through_ipi(beads: int, steps: int, batch: int, dtype: str) -> dict:
    """One i-PI PIMD run served by one client in this process; beads/s and the report."""
    folder = Path(tempfile.mkdtemp(prefix="ipi-bench-"))
    water = molecule("H2O")
    lines = [
        f"{s} {x:.6f} {y:.6f} {z:.6f}"
        for s, (x, y, z) in zip(water.get_chemical_symbols(), water.positions, strict=True)
    ]
    header = "# CELL(abcABC): 20 20 20 90 90 90 cell{angstrom} positions{angstrom}"
    (folder / "water.xyz").write_text("\n".join(["3", header, *lines]) + "\n")
    prefix = f"{folder}/s_"
    (folder / "input.xml").write_text(
        WATER_INPUT.format(prefix=prefix, steps=steps, batch=batch, beads=beads)
    )
    evaluator = BeadEvaluator("molecules-pbe", Atoms(water.numbers), dtype=dtype)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    server = subprocess.Popen(
        [sys.executable, shutil.which("i-pi") or "i-pi", "input.xml"],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        report = serve(evaluator, IpiAddress(unix="bench", sockets_prefix=prefix), timeout=300)
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "batch_size": batch,
        "structures": report.structures,
        "model_calls": report.model_calls,
        "serving_s": report.serving_s,
        "evaluating_s": report.evaluating_s,
        "beads_per_s": report.structures / report.serving_s,
    }


def evaluation_only(name: str, model: str, atoms: Atoms, beads: int, repeats: int, dtype: str):
    """Median time of P beads one at a time and as one batch (same geometries)."""
    rng = np.random.default_rng(0)
    cell = atoms.cell[:].T / BOHR if atoms.cell.rank == 3 else 20.0 / BOHR * np.eye(3)
    qs = [
        (atoms.positions + rng.normal(scale=0.05, size=atoms.positions.shape)) / BOHR
        for _ in range(beads)
    ]
    cells = [cell] * beads
    evaluator = BeadEvaluator(model, atoms, dtype=dtype)
    evaluator.many(cells, qs)  # warm-up of both paths (and the Verlet lists)
    [evaluator.one(h, q) for h, q in zip(cells, qs, strict=True)]
    one, many = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        singles = [evaluator.one(h, q) for h, q in zip(cells, qs, strict=True)]
        t1 = time.perf_counter()
        batched = evaluator.many(cells, qs)
        t2 = time.perf_counter()
        one.append(t1 - t0)
        many.append(t2 - t1)
    gap = max(abs(a[0] - b[0]) for a, b in zip(singles, batched, strict=True))
    return {
        "system": name,
        "atoms": len(atoms),
        "one_at_a_time_s": statistics.median(one),
        "batched_s": statistics.median(many),
        "beads_per_s_one": beads / statistics.median(one),
        "beads_per_s_batched": beads / statistics.median(many),
        "speedup": statistics.median(one) / statistics.median(many),
        "max_energy_difference_hartree": gap,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beads", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="i-PI steps per run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--ipi", action="store_true", help="also run through i-PI")
    parser.add_argument("--out", default=None, help="results stem (default DATE-ipi-beads)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    record = {
        "command": "python benchmarks/ipi_beads.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)",
        "beads": args.beads,
        "dtype": args.dtype,
        "evaluation": [
            evaluation_only(
                "H2O", "molecules-pbe", molecule("H2O"), args.beads, args.repeats, args.dtype
            ),
            evaluation_only(
                "Cu fcc 2x2x2 cubic",
                "metals",
                bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2),
                args.beads,
                args.repeats,
                args.dtype,
            ),
        ],
    }
    if args.ipi:
        record["ipi"] = [
            through_ipi(args.beads, args.steps, b, args.dtype) for b in (1, args.beads)
        ]
        record["ipi_steps"] = args.steps
    print(json.dumps(record, indent=2))
    stem = args.out or f"{datetime.date.today().isoformat()}-ipi-beads"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
