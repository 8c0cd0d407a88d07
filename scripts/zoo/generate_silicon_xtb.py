"""Reference data for the ``silicon-xtb`` zoo model: bulk Si at GFN1-xTB (tblite), with stress.

    python scripts/zoo/generate_silicon_xtb.py [--out data/silicon-gfn1xtb.xyz.xz] [--seed 0]

Level of theory: GFN1-xTB as implemented in tblite (``TBLite(method="GFN1-xTB")``), periodic
boundary conditions, Γ-point only, so every cell is a 64-atom (2×2×2 conventional) diamond
supercell or a defect cell derived from it; k-point sampling is then close to converged and
all frames see the same Brillouin-zone sampling. GFN1-xTB's own lattice constant at this
setting is about 5.63 Å (experiment: 5.43 Å), and the sampling is centred on it.

Configurations (energies in eV, forces in eV/Å, stress in eV/Å³):
- the perfect crystal under random strain (volume ±10 %, shear up to 4 %), Gaussian-rattled
  with σ from 0.02 to 0.15 Å (the thermal displacement of Si at 300 K is about 0.07 Å);
- a vacancy (63 atoms) and a split ⟨110⟩ interstitial (65 atoms), strained and rattled;
- small homogeneous volume scans of the unrattled crystal (the equation of state).
Runs on one core in about 15–20 minutes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from generate_metals_emt import strained  # same random homogeneous strain

A0 = 5.63  # Å, GFN1-xTB's Γ-point lattice constant of the 64-atom cell


def label(atoms: Atoms, config_type: str) -> Atoms:
    from tblite.ase import TBLite

    atoms = atoms.copy()
    atoms.calc = TBLite(method="GFN1-xTB", verbosity=0)
    results = {
        "energy": atoms.get_potential_energy(),
        "forces": atoms.get_forces(),
        "stress": atoms.get_stress(),
    }
    atoms.calc = SinglePointCalculator(atoms, **results)
    atoms.info["config_type"] = config_type
    return atoms


def crystal(a: float = A0) -> Atoms:
    return bulk("Si", "diamond", a=a, cubic=True).repeat((2, 2, 2))


def rattled(atoms: Atoms, rng: np.random.Generator, sigma: float) -> Atoms:
    atoms = atoms.copy()
    atoms.positions += rng.normal(0.0, sigma, atoms.positions.shape)
    return atoms


def vacancy() -> Atoms:
    atoms = crystal()
    del atoms[0]
    return atoms


def interstitial() -> Atoms:
    """A ⟨110⟩ split (dumbbell) interstitial: atom 0 replaced by a pair along [110]."""
    atoms = crystal()
    centre = atoms.positions[0].copy()
    shift = np.array([1.0, 1.0, 0.0]) / np.sqrt(2) * 1.1
    atoms.positions[0] = centre + shift
    atoms += Atoms("Si", positions=[centre - shift])
    atoms.wrap()
    return atoms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="data/silicon-gfn1xtb.xyz.xz")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    frames = []
    for scale in np.linspace(0.96, 1.04, 9):
        frames.append(label(crystal(A0 * scale), "eos"))
    for sigma in (0.02, 0.05, 0.08, 0.11, 0.15):
        for _ in range(28):
            frames.append(
                label(
                    rattled(strained(crystal(), rng, 0.10, 0.04), rng, sigma),
                    f"bulk_rattle{sigma:.2f}",
                )
            )
        print(
            f"bulk σ={sigma}: {len(frames)} frames, {time.perf_counter() - started:.0f} s",
            flush=True,
        )
    for name, make in (("vacancy", vacancy), ("interstitial", interstitial)):
        for sigma in (0.0, 0.05, 0.1):
            for _ in range(1 if sigma == 0 else 10):
                frames.append(label(rattled(strained(make(), rng, 0.05, 0.02), rng, sigma), name))
        print(f"{name}: {len(frames)} frames, {time.perf_counter() - started:.0f} s", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write(args.out, frames, format="extxyz")
    print(
        f"wrote {len(frames)} frames ({sum(len(a) for a in frames)} atoms) to {args.out} "
        f"in {time.perf_counter() - started:.0f} s (GFN1-xTB, tblite)"
    )


if __name__ == "__main__":
    main()
