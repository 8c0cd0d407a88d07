"""Bulk modulus of an fcc metal against the range of its equation-of-state fit: EMT and models.

    OMP_NUM_THREADS=1 python scripts/zoo/eos_fit_range.py Al
    OMP_NUM_THREADS=1 python scripts/zoo/eos_fit_range.py Al --model metals --model RUN/metals.json

The card's ``B`` is a Birch–Murnaghan fit over a0 × (1 ± 5 %) (``metals_card.py``); its elastic
constants are central differences at a0. For a smooth E(V) both give the same bulk modulus,
whatever the fit range. This prints B (GPa) from fits over a0 × (1 ± r) for r = 1 … 5 %
(11 points each, at the calculator's own a0: the minimum of a ±5 % fit, refined by a ±1 %
fit). A B
that falls with the range means an E(V) that softens under large strain beyond what the
Birch–Murnaghan form holds: for EMT's Al, the fourth neighbour shell (a0 √2 = 5.65 Å) enters
the smooth cutoff (5.36 Å, width ~0.4 Å) when the lattice is compressed by a few per cent.
"""

from __future__ import annotations

import argparse

import numpy as np
from ase.build import bulk
from ase.calculators.calculator import Calculator
from ase.calculators.emt import EMT
from ase.eos import EquationOfState
from ase.units import GPa

from ase_equi import EquivariantCalculator

RANGES = (0.01, 0.02, 0.03, 0.04, 0.05)


def bulk_modulus(
    element: str, calc: Calculator, a0: float, half_range: float
) -> tuple[float, float]:
    """(a0 of the fit in Å, B in GPa) from 11 points over a0 × (1 ± half_range)."""
    volumes, energies = [], []
    for s in np.linspace(1 - half_range, 1 + half_range, 11):
        atoms = bulk(element, "fcc", a=a0 * s)
        atoms.calc = calc
        volumes.append(atoms.get_volume())
        energies.append(atoms.get_potential_energy())
    v0, _, b = EquationOfState(volumes, energies, eos="birchmurnaghan").fit()
    return float((4 * v0) ** (1 / 3)), float(b / GPa)


def row(element: str, name: str, calc: Calculator, guess: float) -> str:
    a0, _ = bulk_modulus(element, calc, guess, 0.05)
    a0, _ = bulk_modulus(element, calc, a0, 0.01)
    moduli = [bulk_modulus(element, calc, a0, r)[1] for r in RANGES]
    return f"| {name} | {a0:.4f} | " + " | ".join(f"{b:.2f}" for b in moduli) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("element")
    parser.add_argument("--model", action="append", default=[], help="zoo name or file")
    args = parser.parse_args()
    guess = bulk(args.element, "fcc").cell.lengths()[0] * np.sqrt(2)
    header = " | ".join(f"±{100 * r:.0f} %" for r in RANGES)
    print(f"B (GPa) of {args.element} from Birch–Murnaghan fits over a0 × (1 ± r)\n")
    print(f"| calculator | a0 (Å) | {header} |")
    print("|---|---|" + "---|" * len(RANGES))
    print(row(args.element, "EMT", EMT(), guess))
    for model in args.model:
        calc = EquivariantCalculator(model, dtype="float64")
        print(row(args.element, model, calc, guess))


if __name__ == "__main__":
    main()
