"""Reference data for the ``metals`` zoo model: ASE's EMT on Cu, Ag, Au, Ni, Pd, Pt, Al and alloys.

    python scripts/zoo/generate_metals_emt.py [--out data/metals-emt.xyz.xz] [--seed 0]

Configurations (energies in eV, forces in eV/Å, stress in eV/Å³ for periodic cells):

- bulk fcc of each element under random strain (volume ±8 %, shear up to 4 %), rattled;
- random fcc alloys (2 or 3 elements, Vegard lattice constant), strained and rattled;
- vacancies (one atom removed from a 32-atom cell), rattled;
- (111) and (100) slabs with 8 Å vacuum (pbc T,T,F in a finite box: stress is the box's);
- clusters (icosahedra, octahedra: no periodicity, no stress);
- Langevin MD snapshots of bulk and alloys from 300 K up to about the EMT melting range.

Writes an extxyz (xz-compressed) whose frames carry ``energy``, ``forces`` and, for cells of
rank 3 with full periodicity, ``stress`` via ASE's SinglePointCalculator, plus ``config_type``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.build import bulk, fcc100, fcc111
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.cluster import Icosahedron, Octahedron
from ase.io import write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

ELEMENTS = ("Cu", "Ag", "Au", "Ni", "Pd", "Pt", "Al")
LATTICE = {"Cu": 3.61, "Ag": 4.09, "Au": 4.08, "Ni": 3.52, "Pd": 3.89, "Pt": 3.92, "Al": 4.05}


def label(atoms: Atoms, config_type: str) -> Atoms:
    """Attach EMT energy, forces (and stress where periodic) as a single-point result."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if atoms.pbc.all():
        results["stress"] = atoms.get_stress()
    atoms.calc = SinglePointCalculator(atoms, **results)
    atoms.info["config_type"] = config_type
    return atoms


def strained(atoms: Atoms, rng: np.random.Generator, volume: float = 0.08, shear: float = 0.04):
    eps = rng.uniform(-shear, shear, (3, 3))
    eps = 0.5 * (eps + eps.T)
    eps += np.eye(3) * ((1 + rng.uniform(-volume, volume)) ** (1 / 3) - 1)
    atoms = atoms.copy()
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    return atoms


def random_alloy(rng: np.random.Generator, n_species: int) -> Atoms:
    species = list(rng.choice(ELEMENTS, size=n_species, replace=False))
    atoms = bulk("Cu", "fcc", a=1.0, cubic=True).repeat((2, 2, 2))
    symbols = rng.choice(species, size=len(atoms))
    a = float(np.mean([LATTICE[s] for s in symbols]))
    atoms.set_chemical_symbols(symbols)
    atoms.set_cell(atoms.cell.array * a, scale_atoms=True)
    return atoms


def md_snapshots(atoms: Atoms, temperature: float, n: int, rng: np.random.Generator) -> list:
    atoms = atoms.copy()
    atoms.calc = EMT()
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    dyn = Langevin(atoms, 4 * units.fs, temperature_K=temperature, friction=0.05, rng=rng)
    frames = []
    for _ in range(n):
        dyn.run(25)
        frames.append(label(atoms, f"md_{int(temperature)}K"))
    return frames


def generate(seed: int) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    frames: list[Atoms] = []
    for el in ELEMENTS:
        cell = bulk(el, "fcc", a=LATTICE[el], cubic=True)
        for _ in range(40):
            a = strained(cell.repeat((2, 2, 2)), rng)
            a.rattle(0.08, seed=int(rng.integers(1 << 31)))
            frames.append(label(a, "bulk_strained"))
        prim = bulk(el, "fcc", a=LATTICE[el])
        for _ in range(20):  # small cells: periodic images inside the cutoff
            a = strained(prim.repeat((2, 2, 2)), rng)
            a.rattle(0.05, seed=int(rng.integers(1 << 31)))
            frames.append(label(a, "bulk_small"))
        for _ in range(10):
            a = cell.repeat((2, 2, 2))
            del a[int(rng.integers(len(a)))]
            a.rattle(0.05, seed=int(rng.integers(1 << 31)))
            frames.append(label(a, "vacancy"))
        for build in (fcc111, fcc100):
            for _ in range(6):
                slab = build(el, size=(2, 2, 4), a=LATTICE[el], vacuum=8.0)
                slab.pbc = (True, True, False)
                slab.rattle(0.05, seed=int(rng.integers(1 << 31)))
                frames.append(label(slab, f"surface_{build.__name__[3:]}"))
        for cluster in (Icosahedron(el, 2), Octahedron(el, 3, 1)):
            for _ in range(4):
                c = cluster.copy()
                c.rattle(0.08, seed=int(rng.integers(1 << 31)))
                frames.append(label(c, "cluster"))
        for temperature in (300.0, 800.0, 1400.0):
            frames += md_snapshots(cell.repeat((2, 2, 2)), temperature, 6, rng)
    for _ in range(120):
        a = strained(random_alloy(rng, int(rng.integers(2, 4))), rng, volume=0.05, shear=0.03)
        a.rattle(0.08, seed=int(rng.integers(1 << 31)))
        frames.append(label(a, "alloy"))
    for temperature in (300.0, 900.0, 1500.0):
        for _ in range(5):
            frames += md_snapshots(random_alloy(rng, 2), temperature, 4, rng)
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/metals-emt.xyz.xz")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    frames = generate(args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write(out, frames, format="extxyz")
    n_atoms = sum(len(f) for f in frames)
    print(
        f"wrote {len(frames)} frames ({n_atoms} atoms) to {out} in "
        f"{time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
