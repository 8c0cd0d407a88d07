"""Relax many structures at once: rattled, strained fcc alloy cells, positions and cells.

One batched model call per FIRE step for all structures still relaxing; each structure follows
the path ASE's FIRE + FrechetCellFilter would take on it alone. Run:

    OMP_NUM_THREADS=1 python examples/relax_many.py --n 20 --output relaxed.xyz
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from ase.build import bulk
from ase.io import write

from ase_equi import relax

LATTICE = {"Cu": 3.61, "Ag": 4.09, "Au": 4.08, "Pd": 3.89, "Ni": 3.52}  # Å, fcc


def starting_structures(n: int, seed: int = 0):
    """``n`` four-atom fcc cells of two metals, strained by ~3 % and rattled by 0.1 Å."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        first, second = rng.choice(list(LATTICE), size=2, replace=False)
        atoms = bulk(first, "fcc", a=0.5 * (LATTICE[first] + LATTICE[second]), cubic=True)
        atoms.symbols[rng.random(4) < 0.5] = second
        strain = 0.03 * rng.standard_normal((3, 3))
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.5 * (strain + strain.T)), scale_atoms=True)
        atoms.rattle(0.1, seed=int(rng.integers(1 << 31)))
        out.append(atoms)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="Relax many alloy cells at once.")
    parser.add_argument("--n", type=int, default=20, help="number of structures")
    parser.add_argument("--fmax", type=float, default=0.05, help="eV/Å")
    parser.add_argument("--output", help="write the relaxed structures here (extxyz)")
    args = parser.parse_args()
    structures = starting_structures(args.n)
    start = time.perf_counter()
    result = relax(structures, "metals", fmax=args.fmax, cell=True)
    print(result, f"in {time.perf_counter() - start:.1f} s")
    print(" k  formula   steps  converged  E/atom (eV)  V/atom before -> after (Å³)")
    for k, (before, after) in enumerate(zip(structures, result.structures, strict=True)):
        n = len(after)
        print(
            f"{k:2d}  {after.get_chemical_formula():8s} {result.steps[k]:6d}  "
            f"{bool(result.converged[k])!s:9s}  {after.get_potential_energy() / n:11.4f}  "
            f"{before.get_volume() / n:6.2f} -> {after.get_volume() / n:6.2f}"
        )
    if args.output:
        write(args.output, result.structures)  # energies, forces, stress in the extxyz


if __name__ == "__main__":
    main()
