"""Screen Cu-Au orderings with one batched ``evaluate`` call (a few seconds on a CPU).

    python examples/screening.py [--model metals] [--cells 2] [--output screened.xyz]

Up to 60 distinct (seeded, random; symmetry-equivalent ones not merged) ways of putting Cu
and Au on the 8 sites of a 2×2×2 fcc primitive supercell are evaluated in batches (many
structures per model call, energies only: no forces or stress are computed), with the pure
elements as references. The formation
energy per atom, ΔE = (E − n_Cu e_Cu − n_Au e_Au) / n (eV/atom), ranks the orderings; the five
lowest are printed, and ``--output`` writes all predictions (``ase.io.read`` gives them back
with their energies).
"""

from __future__ import annotations

import argparse

import numpy as np
from ase import Atoms
from ase.build import bulk

from ase_equi import evaluate

A_CU, A_AU = 3.61, 4.08  # Å, fcc lattice constants


def orderings(repeat: int, count: int, seed: int = 0) -> list[Atoms]:
    """Up to ``count`` Cu/Au decorations of a ``repeat``³ primitive fcc supercell, every Au
    fraction, lattice constant by Vegard's law."""
    rng = np.random.default_rng(seed)
    n = repeat**3
    seen: set[tuple[int, ...]] = set()
    out = []
    for _ in range(50 * count):
        numbers = tuple(int(z) for z in rng.choice([29, 79], n))
        if numbers in seen:
            continue
        seen.add(numbers)
        x_au = numbers.count(79) / n
        atoms = bulk("Cu", "fcc", a=(1 - x_au) * A_CU + x_au * A_AU).repeat(repeat)
        atoms.numbers = numbers
        out.append(atoms)
        if len(out) == count:
            break
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="metals")
    parser.add_argument("--cells", type=int, default=2, help="supercell repeat (8 atoms: 2)")
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--output", help="write the predictions here (extxyz)")
    args = parser.parse_args()

    references = [bulk("Cu", "fcc", a=A_CU), bulk("Au", "fcc", a=A_AU)]
    candidates = orderings(args.cells, args.count)
    predicted = evaluate(references + candidates, args.model, properties=("energy",))
    e_cu, e_au = (atoms.get_potential_energy() for atoms in predicted[:2])

    rows = []
    for atoms in predicted[2:]:
        n_cu, n_au = int((atoms.numbers == 29).sum()), int((atoms.numbers == 79).sum())
        formation = (atoms.get_potential_energy() - n_cu * e_cu - n_au * e_au) / len(atoms)
        rows.append((formation, atoms.get_chemical_formula(), n_au / len(atoms)))
    rows.sort()
    print(f"{len(candidates)} Cu-Au orderings evaluated with '{args.model}' (energies only)")
    print("lowest formation energies (eV/atom):")
    for formation, formula, x_au in rows[:5]:
        print(f"  {formula:>10s}  x_Au = {x_au:.3f}  dE = {formation:+.4f}")
    if args.output:
        import ase.io

        ase.io.write(args.output, predicted, format="extxyz")
        print(f"wrote {len(predicted)} predictions to {args.output}")


if __name__ == "__main__":
    main()
