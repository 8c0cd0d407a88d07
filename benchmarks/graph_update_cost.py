"""Per-step cost of the calculator's host graph (``HostGraph.update``) in an MD-like loop.

Every step moves all atoms by a small random amount and builds the graph the model sees (Verlet
list, graph frame, tensors). With ``--against DIR`` (another checkout, e.g. a ``git worktree``
of an earlier commit) both trees are timed in fresh processes, alternately, and the ratio of
each pair is printed: the cost of a change to the per-step host work.

Run with::

    git worktree add /path/to/old <commit>
    OMP_NUM_THREADS=1 python benchmarks/graph_update_cost.py --against /path/to/old [--pairs 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]

WORKER = """
import sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np, torch
torch.set_num_threads(1)
from ase.build import bulk, molecule
import ase_equi
from ase_equi.graph import HostGraph
assert ase_equi.__file__.startswith(sys.argv[1]), ase_equi.__file__
cases = (("Cu108", bulk("Cu", "fcc", a=3.6, cubic=True).repeat(3)),
         ("ethanol", molecule("CH3CH2OH")))
out = []
for name, atoms in cases:
    source = HostGraph([1, 6, 8, 29], 5.0, 1.0, dtype=torch.float64, device="cpu")
    rng = np.random.default_rng(0)
    times = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(200):
            atoms.positions += rng.normal(0.0, 0.001, atoms.positions.shape)
            source.update(atoms)
        times.append((time.perf_counter() - start) / 200 * 1e6)
    out.append(f"{name}={np.median(times):.1f}")
print(" ".join(out))
"""


def run(tree: Path) -> dict[str, float]:
    """Median µs per update for each case, in a fresh process importing ase_equi from ``tree``."""
    result = subprocess.run(
        [sys.executable, "-c", WORKER, str(tree)], capture_output=True, text=True, check=True
    )
    pairs = (item.split("=") for item in result.stdout.split())
    return {name: float(value) for name, value in pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", type=Path, help="another checkout to time alternately")
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    rows: list[tuple[dict[str, float], dict[str, float] | None]] = []
    for _ in range(args.pairs):
        here = run(HERE)
        there = run(args.against.resolve()) if args.against else None
        rows.append((here, there))
        print("this tree:", here, "| against:", there)
    for case in rows[0][0]:
        here_us = float(np.median([r[0][case] for r in rows]))
        line = f"{case}: {here_us:.1f} µs per update (median of {args.pairs} processes)"
        if args.against:
            there_us = float(np.median([r[1][case] for r in rows if r[1]]))
            ratios = [r[0][case] / r[1][case] for r in rows if r[1]]
            line += f"; against {there_us:.1f} µs, ratio per pair " + ", ".join(
                f"{x:.2f}" for x in ratios
            )
        print(line)


if __name__ == "__main__":
    main()
