"""Batched ``evaluate`` against the ASE loop (one calculator call per structure), side by side.

Structures: ``--count`` seeded structures of 8-64 atoms of the ``metals`` model's elements
(Al, Ni, Cu, Pd, Ag, Pt, Au, randomly mixed): a third fcc bulk supercells (periodic), a third
fcc(111) slabs (periodic in-plane, 5 Å vacuum each side), a third clusters cut from bulk (no
periodicity, no cell); strained ±2 % and rattled 0.05 Å.

Reference: ``EquivariantCalculator`` on each structure in turn, asking energy, forces and (cells
of rank 3) stress, as ``evaluate`` did before it was batched. Batched: ``evaluate(structures,
calc, batch_size=...)`` for each ``--batch-sizes`` entry, on the calculator's own model (so
model loading is outside both timings). Every batched run is checked against the reference:
largest |ΔE| (eV), |ΔF| (eV/Å), |Δσ| (eV/Å³).

Usage (the numbers in ``benchmarks/results/`` were made with)::

    OMP_NUM_THREADS=1 python benchmarks/evaluate_batched.py --count 200 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk, fcc111

from ase_equi import EquivariantCalculator, evaluate

ELEMENTS = ("Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au")
BULK_REPEATS = [
    (1, 1, 2),
    (1, 1, 3),
    (1, 2, 2),
    (1, 2, 3),
    (2, 2, 2),
    (1, 3, 3),
    (2, 2, 3),
    (2, 2, 4),
]
SLAB_SIZES = [
    (2, 2, 2),
    (2, 2, 3),
    (2, 2, 4),
    (3, 3, 2),
    (2, 2, 6),
    (3, 3, 3),
    (4, 4, 2),
    (4, 4, 4),
]


def _mix(atoms: Atoms, rng: np.random.Generator) -> Atoms:
    """Random elements (about half of the atoms changed), ±2 % strain, 0.05 Å rattle."""
    numbers = atoms.numbers.copy()
    change = rng.random(len(atoms)) < 0.5
    numbers[change] = [Atoms(s).numbers[0] for s in rng.choice(ELEMENTS, change.sum())]
    atoms.numbers = numbers
    if atoms.cell.rank == 3:
        strain = np.eye(3) + 0.02 * rng.uniform(-1, 1, (3, 3))
        atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
    atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
    return atoms


def structures(count: int, seed: int = 0) -> list[Atoms]:
    """``count`` mixed structures (kinds cycle bulk, slab, cluster; sizes 8-64 atoms)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(count):
        element = str(rng.choice(ELEMENTS))
        a = 3.9 + 0.15 * rng.uniform(-1, 1)
        kind = k % 3
        if kind == 0:
            repeat = BULK_REPEATS[rng.integers(len(BULK_REPEATS))]
            atoms = bulk(element, "fcc", a=a, cubic=True).repeat(repeat)
        elif kind == 1:
            size = SLAB_SIZES[rng.integers(len(SLAB_SIZES))]
            atoms = fcc111(element, size=size, a=a, vacuum=5.0)
        else:
            block = bulk(element, "fcc", a=a, cubic=True).repeat(3)
            centre = block.positions.mean(0) + rng.uniform(-0.5, 0.5, 3)
            n = int(rng.integers(8, 65))
            nearest = np.argsort(np.linalg.norm(block.positions - centre, axis=1))[:n]
            atoms = Atoms(block.numbers[nearest], block.positions[nearest])
        out.append(_mix(atoms, rng))
    return out


def ase_loop(images: list[Atoms], calc: EquivariantCalculator) -> list[dict]:
    """The reference: one calculator call per structure (energy, forces, stress if defined)."""
    results = []
    for atoms in images:
        atoms = atoms.copy()
        atoms.calc = calc
        r = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        if atoms.cell.rank == 3:
            r["stress"] = atoms.get_stress()
        results.append(r)
    return results


def differences(reference: list[dict], predicted: list[Atoms]) -> dict[str, float]:
    """Largest absolute differences between the two: energy, forces, stress."""
    worst = {"energy_eV": 0.0, "forces_eV_A": 0.0, "stress_eV_A3": 0.0}
    for ref, pred in zip(reference, predicted, strict=True):
        res = pred.calc.results
        worst["energy_eV"] = max(worst["energy_eV"], abs(ref["energy"] - res["energy"]))
        worst["forces_eV_A"] = max(
            worst["forces_eV_A"], np.abs(ref["forces"] - res["forces"]).max()
        )
        if "stress" in ref:
            worst["stress_eV_A3"] = max(
                worst["stress_eV_A3"], np.abs(ref["stress"] - res["stress"]).max()
            )
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--batch-sizes", default="auto,1,8,32,128")
    parser.add_argument("--json", help="write the results here as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = structures(args.count)
    n_atoms = sum(len(a) for a in images)
    calc = EquivariantCalculator("metals", dtype=args.dtype)
    print("command:", " ".join(["python", *sys.argv]))
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"threads: {torch.get_num_threads()}, dtype {args.dtype}, model metals")
    print(
        f"structures: {args.count}, {n_atoms} atoms ({min(map(len, images))}-"
        f"{max(map(len, images))} per structure); kinds cycle bulk/slab/cluster"
    )
    ase_loop(images[:3], calc)  # warm-up
    start = time.perf_counter()
    reference = ase_loop(images, calc)
    t_ase = time.perf_counter() - start
    print(f"ASE loop: {t_ase:.2f} s, {n_atoms / t_ase:.0f} atoms/s")
    rows = [{"method": "ASE loop", "seconds": t_ase, "speedup": 1.0}]
    for size in args.batch_sizes.split(","):
        batch_size: int | str = size if size == "auto" else int(size)
        start = time.perf_counter()
        predicted = evaluate(images, calc, batch_size=batch_size, verbose=False)
        seconds = time.perf_counter() - start
        worst = differences(reference, predicted)
        rows.append(
            {
                "method": f"evaluate(batch_size={size})",
                "seconds": seconds,
                "speedup": t_ase / seconds,
                **worst,
            }
        )
        print(
            f"evaluate(batch_size={size}): {seconds:.2f} s, {n_atoms / seconds:.0f} atoms/s, "
            f"{t_ase / seconds:.2f}x the ASE loop; max |dE| {worst['energy_eV']:.1e} eV, "
            f"|dF| {worst['forces_eV_A']:.1e} eV/A, |ds| {worst['stress_eV_A3']:.1e} eV/A^3"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the process: {peak:.0f} MiB")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"count": args.count, "atoms": n_atoms, "rows": rows, "peak_rss_mib": peak},
                fh,
                indent=1,
            )


if __name__ == "__main__":
    main()
