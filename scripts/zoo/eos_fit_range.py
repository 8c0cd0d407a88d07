"""Bulk modulus of an fcc metal against the range of its equation-of-state fit: EMT and models.

    OMP_NUM_THREADS=1 python scripts/zoo/eos_fit_range.py Al
    OMP_NUM_THREADS=1 python scripts/zoo/eos_fit_range.py Al --model metals --model RUN/metals.json

The card's ``B`` is a Birch–Murnaghan fit over a fixed lattice constant × (1 ± 5 %) (Al: 4.05 Å,
EMT's a0 × 0.963–1.065; ``metals_card.py``); its elastic
constants are central differences at a0. For a smooth E(V) both give the same bulk modulus,
whatever the fit range. This prints B (GPa) from fits over a0 × (1 ± r) for r = 1 … 5 %
(11 points each, at the calculator's own a0: the minimum of a ±5 % fit, refined by a ±1 %
fit). A B
that falls with the range means an E(V) that softens under large strain beyond what the
Birch–Murnaghan form holds: for EMT's Al, the fourth neighbour shell (a0 √2 = 5.65 Å) enters
the smooth cutoff (a Fermi function at 5.38 Å, 0.18 Å from 90 % to 10 %) when the lattice
is compressed by a few per cent.

``--curvature`` also prints d²E/da² (eV/Å², central differences, h = 0.004 Å) at a0 × 0.94 …
1.06 with the fourth shell's distance: where EMT's curvature swings, that shell crosses its
cutoff. Each model's energy error there (relative to a0) is printed beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from ase.build import bulk
from ase.calculators.calculator import Calculator
from ase.calculators.emt import EMT
from ase.eos import EquationOfState, birchmurnaghan

from ase_equi import EquivariantCalculator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from physics import equation_of_state

RANGES = (0.01, 0.02, 0.03, 0.04, 0.05)


def fcc(element: str):
    """The card's cell (``metals_card``): the 4-atom cubic fcc cell at lattice constant a."""
    return lambda a: bulk(element, "fcc", a=a, cubic=True)


def fitted_a0(element: str, calc: Calculator, guess: float) -> float:
    """The calculator's own a0 (Å): a ±5 % fit from ``guess``, refined by a ±1 % fit."""
    a0 = equation_of_state(fcc(element), guess, lambda: calc)["a0"]
    return equation_of_state(fcc(element), a0, lambda: calc, span=0.01)["a0"]


def row(element: str, name: str, calc: Calculator, a0: float) -> str:
    """B (GPa) over each fit range of :data:`RANGES`, centred on ``a0``, as the card fits it
    (:func:`physics.equation_of_state`)."""
    moduli = [equation_of_state(fcc(element), a0, lambda: calc, span=r)["B"] for r in RANGES]
    return f"| {name} | {a0:.4f} | " + " | ".join(f"{b:.2f}" for b in moduli) + " |"


def curvature_table(element: str, calculators: dict[str, Calculator], a0: float) -> None:
    """d²E/da² (eV/Å² per atom) of each calculator on a0 × 0.94 … 1.06."""
    h = 0.004

    def energy(a: float, calc: Calculator) -> float:
        atoms = bulk(element, "fcc", a=a)
        atoms.calc = calc
        return atoms.get_potential_energy()

    emt = EMT()
    near = np.linspace(0.98, 1.02, 9)
    smooth = EquationOfState(
        [(a0 * x) ** 3 / 4 for x in near], [energy(a0 * x, emt) for x in near], "birchmurnaghan"
    )
    smooth.fit()
    print(f"\nd²E/da² (eV/Å²) of {element}; EMT's a0 = {a0:.4f} Å; EMT − BM: EMT's energy")
    models = [name for name in calculators if name != "EMT"]
    misses = " | ".join(f"{name}: ΔE" for name in models)
    print("less the Birch–Murnaghan curve fitted over a0 × (1 ± 2 %), meV/atom; ΔE: a model's")
    print("E(a) − E(a0) less EMT's, meV/atom\n")
    print(f"| a / a0 | a (Å) | 4th shell (Å) | {' | '.join(calculators)} | EMT − BM | {misses} |")
    print("|---|---|---|" + "---|" * (len(calculators) + 1 + len(models)))
    at_a0 = {name: energy(a0, c) for name, c in calculators.items()}
    for s in np.arange(0.94, 1.0601, 0.01):
        a = a0 * s
        values = [
            (energy(a + h, c) - 2 * energy(a, c) + energy(a - h, c)) / h**2
            for c in calculators.values()
        ]
        off = 1000 * (energy(a, emt) - birchmurnaghan(a**3 / 4, *smooth.eos_parameters))
        relative = {name: energy(a, c) - at_a0[name] for name, c in calculators.items()}
        miss = [1000 * (relative[name] - relative["EMT"]) for name in models]
        cells = " | ".join(f"{v:.3f}" for v in values)
        extra = "".join(f" {v:.2f} |" for v in miss)
        print(f"| {s:.2f} | {a:.3f} | {a * np.sqrt(2):.3f} | {cells} | {off:.2f} |{extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("element")
    parser.add_argument("--model", action="append", default=[], help="zoo name or file")
    parser.add_argument("--curvature", action="store_true", help="also d²E/da² against a")
    args = parser.parse_args()
    guess = bulk(args.element, "fcc").cell.lengths()[0] * np.sqrt(2)
    header = " | ".join(f"±{100 * r:.0f} %" for r in RANGES)
    print(f"B (GPa) of {args.element} from Birch–Murnaghan fits over a0 × (1 ± r)\n")
    print(f"| calculator | a0 (Å) | {header} |")
    print("|---|---|" + "---|" * len(RANGES))
    calculators: dict[str, Calculator] = {"EMT": EMT()}
    for model in args.model:
        calculators[model] = EquivariantCalculator(model, dtype="float64")
    a0 = {name: fitted_a0(args.element, calc, guess) for name, calc in calculators.items()}
    for name, calc in calculators.items():
        print(row(args.element, name, calc, a0[name]))
    if args.curvature:
        curvature_table(args.element, calculators, a0["EMT"])


if __name__ == "__main__":
    main()
