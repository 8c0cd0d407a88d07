"""Where the time of one MD step goes: a per-operation table of a force call (CPU).

A MACE-MP-0-medium-shaped model (128 channels, max_L 1, max_ell 3, correlation 3, r_max 6 Å,
radial MLP 64-64-64, 89 elements; random weights: the cost does not depend on their values) on
rattled fcc Cu, as in an MD step: positions moved, then energy and forces through the
calculator (Verlet-skin neighbour list kept). Prints torch's profiler table (self CPU time per
aten operation, summed over the profiled calls) and the share of the step spent outside the
model call (neighbour list, graph, Python).

    OMP_NUM_THREADS=1 python benchmarks/profile_step.py --cells 3 --dtype float32 --calls 5
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import numpy as np
import torch
from ase.build import bulk
from precontraction_memory import medium_config

from ase_equi import EquivariantCalculator, MaceModel
from ase_equi.io.model_file import LoadedModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=3, help="fcc Cu cubic cells per side")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--calls", type=int, default=5, help="profiled calls")
    parser.add_argument("--rows", type=int, default=25, help="operations in the table")
    args = parser.parse_args()
    torch.manual_seed(0)
    config = medium_config()
    model = MaceModel(config)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((args.cells,) * 3)
    atoms.rattle(0.02, seed=1)
    atoms.calc = EquivariantCalculator(LoadedModel(model, config), dtype=args.dtype)
    rng = np.random.default_rng(0)

    def step() -> None:
        atoms.positions += rng.normal(0, 0.005, atoms.positions.shape)
        atoms.get_forces()

    for _ in range(3):  # warm-up: scripted modules, caches, allocator
        step()
    start = time.perf_counter()
    for _ in range(args.calls):
        step()
    wall = (time.perf_counter() - start) / args.calls
    with torch.profiler.profile() as prof:
        for _ in range(args.calls):
            step()
    table = prof.key_averages()
    total_ops = sum(event.count for event in table) / args.calls
    threads = torch.get_num_threads()
    print(f"command: OMP_NUM_THREADS={threads} python {' '.join(sys.argv)}")
    print(f"machine: {platform.machine()}, torch {torch.__version__}, {threads} thread(s)")
    print(
        f"{len(atoms)} Cu atoms, {args.dtype}: {wall * 1e3:.1f} ms per step (mean of "
        f"{args.calls}, unprofiled), {total_ops:.0f} torch operations per step"
    )
    print(table.table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
