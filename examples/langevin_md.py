"""Langevin MD and a cell relaxation with the bundled ``metals`` zoo model (about a minute).

    python examples/langevin_md.py [--steps 400] [--model metals]

1. NVT Langevin dynamics of a 108-atom Cu3Au-like fcc alloy at 300 K (float32, 5 fs steps),
   with a live progress line (temperature, potential energy, steps per second).
2. A cell relaxation (FIRE on a FrechetCellFilter, float64) of strained, rattled fcc Cu,
   printing the relaxed lattice constant next to EMT's, the level of theory the model learned.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.optimize import FIRE

from ase_equi import EquivariantCalculator


def run_md(model: str, steps: int) -> None:
    atoms = bulk("Cu", "fcc", a=3.70, cubic=True).repeat(3)
    rng = np.random.default_rng(0)
    atoms.numbers[rng.choice(len(atoms), size=len(atoms) // 4, replace=False)] = 79
    atoms.calc = EquivariantCalculator(model, dtype="float32")
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=rng)
    dyn = Langevin(atoms, 5 * units.fs, temperature_K=300, friction=0.01 / units.fs,
                   fixcm=False, rng=np.random.default_rng(1))
    start = time.perf_counter()

    def progress() -> None:
        rate = dyn.nsteps / max(time.perf_counter() - start, 1e-9)
        sys.stdout.write(
            f"\rMD step {dyn.nsteps:5d}/{steps}  T = {atoms.get_temperature():6.1f} K  "
            f"E_pot = {atoms.get_potential_energy():10.4f} eV  ({rate:5.1f} steps/s)"
        )
        sys.stdout.flush()

    dyn.attach(progress, interval=1)
    dyn.run(steps)
    print(f"\n{steps} steps ({steps * 5 / 1000:.1f} ps) of {len(atoms)} atoms "
          f"({atoms.get_chemical_formula()}) with '{model}'")


def relax_cell(model: str) -> None:
    def relaxed_a(calc) -> float:
        atoms = bulk("Cu", "fcc", a=3.75, cubic=True).repeat(2)
        atoms.set_cell(atoms.cell.array @ np.diag([1.02, 0.99, 1.0]), scale_atoms=True)
        atoms.rattle(0.02, seed=0)
        atoms.calc = calc
        FIRE(FrechetCellFilter(atoms), logfile=None).run(fmax=1e-3, steps=1000)
        return float(np.cbrt(atoms.get_volume() / len(atoms) * 4))

    a_model = relaxed_a(EquivariantCalculator(model, dtype="float64"))
    a_emt = relaxed_a(EMT())
    print(f"cell relaxation of Cu: a = {a_model:.4f} Å ({model}), {a_emt:.4f} Å (EMT), "
          f"difference {100 * (a_model - a_emt) / a_emt:+.2f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--model", default="metals", help="zoo name or model file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    run_md(args.model, args.steps)
    relax_cell(args.model)


if __name__ == "__main__":
    main()
