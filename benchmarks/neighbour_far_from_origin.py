"""Neighbour-list cost of a molecule far from the origin, relative to the same molecule at it.

The non-periodic search box must be sized by the extent of the atoms, not by their distance
from the origin, so the ratio far / origin should be close to 1 (the script requires < 2).

Run with::

    python benchmarks/neighbour_far_from_origin.py [--repeats 50]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time

import numpy as np
from ase import Atoms
from ase.build import molecule

from ase_equi.neighbours import neighbour_list_from_atoms

CUTOFF = 5.0  # Å
DISTANCE = 1e4  # Å from the origin, along (1, 1, 1)


def median_seconds(atoms: Atoms, repeats: int) -> float:
    """Median wall time of ``neighbour_list_from_atoms(atoms, CUTOFF)`` over ``repeats`` runs."""
    neighbour_list_from_atoms(atoms, CUTOFF)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        neighbour_list_from_atoms(atoms, CUTOFF)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per case (>= 20)")
    args = parser.parse_args()
    repeats = max(args.repeats, 20)

    at_origin = molecule("C6H6")  # 12 atoms, no cell, no pbc
    far = at_origin.copy()
    far.translate(DISTANCE / np.sqrt(3.0) * np.ones(3))
    n_edges = len(neighbour_list_from_atoms(at_origin, CUTOFF))
    assert n_edges == len(neighbour_list_from_atoms(far, CUTOFF))

    origin_s = median_seconds(at_origin, repeats)
    far_s = median_seconds(far, repeats)
    ratio = far_s / origin_s

    print("command:", shlex.join(["python", *sys.argv]))
    print(
        f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, numpy {np.__version__}"
    )
    print(f"system: C6H6 (12 atoms, {n_edges} edges), cutoff {CUTOFF} Å, no pbc, {repeats} runs")
    far_label = f"at {DISTANCE:g} Å along (1,1,1)"
    print(f"median {'at origin':<28}: {origin_s * 1e6:8.1f} µs")
    print(f"median {far_label:<28}: {far_s * 1e6:8.1f} µs")
    print(f"ratio far / origin: {ratio:.2f} (required < 2)")
    return 0 if ratio < 2.0 else 1


if __name__ == "__main__":
    sys.exit(main())
