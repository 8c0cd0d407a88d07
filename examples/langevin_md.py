"""Langevin MD and a cell relaxation with the bundled ``metals`` zoo model (about a minute).

    python examples/langevin_md.py [--steps 400] [--model metals] [--relax-steps 1000]

1. NVT Langevin dynamics of a 108-atom Cu3Au-like fcc alloy at 300 K (float32, 5 fs steps),
   with a live progress line on stderr (temperature, potential energy, steps per second).
2. A cell relaxation (FIRE on a FrechetCellFilter, float64) of strained, rattled fcc Cu, with a
   live progress line on stderr (step, largest force, lattice constant, steps per second),
   printing the relaxed lattice constant next to EMT's, the level of theory the model learned.

Results go to stdout, progress to stderr (``2>/dev/null`` hides it).
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
    dyn = Langevin(
        atoms,
        5 * units.fs,
        temperature_K=300,
        friction=0.01 / units.fs,
        fixcm=False,
        rng=np.random.default_rng(1),
    )
    start = time.perf_counter()

    def progress() -> None:
        rate = dyn.nsteps / max(time.perf_counter() - start, 1e-9)
        sys.stderr.write(
            f"\rMD step {dyn.nsteps:5d}/{steps}  T = {atoms.get_temperature():6.1f} K  "
            f"E_pot = {atoms.get_potential_energy():10.4f} eV  ({rate:5.1f} steps/s)"
        )
        sys.stderr.flush()

    dyn.attach(progress, interval=1)
    dyn.run(steps)
    sys.stderr.write("\n")
    print(
        f"{steps} steps ({steps * 5 / 1000:.1f} ps) of {len(atoms)} atoms "
        f"({atoms.get_chemical_formula()}) with '{model}'"
    )


def relax_cell(model: str, max_steps: int = 1000) -> None:
    def relaxed_a(calc, label: str) -> tuple[float, bool]:
        atoms = bulk("Cu", "fcc", a=3.75, cubic=True).repeat(2)
        atoms.set_cell(atoms.cell.array @ np.diag([1.02, 0.99, 1.0]), scale_atoms=True)
        atoms.rattle(0.02, seed=0)
        atoms.calc = calc
        cell_filter = FrechetCellFilter(atoms)
        opt = FIRE(cell_filter, logfile=None)
        start = time.perf_counter()

        def progress() -> None:
            fmax = float(np.sqrt((cell_filter.get_forces() ** 2).sum(axis=1).max()))
            a = np.cbrt(atoms.get_volume() / len(atoms) * 4)
            rate = opt.nsteps / max(time.perf_counter() - start, 1e-9)
            sys.stderr.write(
                f"\rrelax ({label}) step {opt.nsteps:4d}  fmax = {fmax:.2e} eV/Å "
                f"(target 1e-3)  a = {a:.4f} Å  ({rate:5.1f} steps/s)"
            )
            sys.stderr.flush()

        opt.attach(progress, interval=1)
        converged = opt.run(fmax=1e-3, steps=max_steps)
        sys.stderr.write("\n")
        return float(np.cbrt(atoms.get_volume() / len(atoms) * 4)), bool(converged)

    a_model, done_model = relaxed_a(EquivariantCalculator(model, dtype="float64"), model)
    a_emt, done_emt = relaxed_a(EMT(), "EMT")
    if not (done_model and done_emt):
        print(f"cell relaxation NOT converged to fmax 1e-3 eV/Å within {max_steps} steps:")
    print(
        f"cell relaxation of Cu: a = {a_model:.4f} Å ({model}), {a_emt:.4f} Å (EMT), "
        f"difference {100 * (a_model - a_emt) / a_emt:+.2f} %"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--model", default="metals", help="zoo name or model file")
    parser.add_argument("--relax-steps", type=int, default=1000, help="FIRE step limit")
    args = parser.parse_args()
    torch.set_num_threads(1)
    run_md(args.model, args.steps)
    relax_cell(args.model, args.relax_steps)


if __name__ == "__main__":
    main()
