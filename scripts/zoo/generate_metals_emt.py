"""Reference data for the ``metals`` zoo model: ASE's EMT on Cu, Ag, Au, Ni, Pd, Pt, Al and alloys.

    python scripts/zoo/generate_metals_emt.py [--out data/metals-emt.xyz.xz] [--seed 0]
    python scripts/zoo/generate_metals_emt.py --set v2      # → data/metals-emt-v2.xyz.xz

Set v1 (the default, reproducible as before):

Configurations (energies in eV, forces in eV/Å, stress in eV/Å³ for periodic cells):

- bulk fcc of each element under random strain (volume ±8 %, shear up to 4 %), rattled;
- random fcc alloys (2 or 3 elements, Vegard lattice constant), strained and rattled;
- vacancies (one atom removed from a 32-atom cell), rattled;
- (111) and (100) slabs with 8 Å vacuum (pbc T,T,F in a finite box: stress is the box's);
- clusters (icosahedra, octahedra: no periodicity, no stress);
- Langevin MD snapshots of bulk and alloys from 300 K up to about the EMT melting range.

Set v2 (:func:`generate_v2`) is v1's frames (read from ``data/metals-emt.xyz.xz``) plus the
configurations where the v1 model was weak: compressed and sheared cells and pushed-together
pairs down to 0.72 × the nearest-neighbour distance, relaxed vacancies and relaxed vacancy-hop
images, (111)/(100)/(110) surfaces, liquid snapshots, more alloys. It is written in chunks
under ``runs/`` and resumes from them when interrupted.

Writes an extxyz (xz-compressed) whose frames carry ``energy``, ``forces`` and, for cells of
rank 3 with full periodicity, ``stress`` via ASE's SinglePointCalculator, plus ``config_type``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.build import bulk, fcc100, fcc110, fcc111
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.cluster import Icosahedron, Octahedron
from ase.constraints import FixAtoms
from ase.io import read, write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.optimize import BFGS

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


# --- set v2: more data where the v1 model was weak ---------------------------------------------
ROOT = Path(__file__).resolve().parents[2]
V1_DATA = ROOT / "data" / "metals-emt.xyz.xz"


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(1 << 31))


def nearest_neighbour(symbol: str) -> float:
    """fcc nearest-neighbour distance a/√2 (Å) at the table's lattice constant."""
    return LATTICE[symbol] / np.sqrt(2.0)


def pushed_pair(atoms: Atoms, ratio: float, rng: np.random.Generator) -> Atoms:
    """Move one atom and its nearest neighbour symmetrically along their bond until they are
    ``ratio`` × their current distance apart (a short contact inside a bulk cell)."""
    atoms = atoms.copy()
    i = int(rng.integers(len(atoms)))
    d = atoms.get_distances(i, range(len(atoms)), mic=True, vector=True)
    r = np.linalg.norm(d, axis=1)
    r[i] = np.inf
    j = int(np.argmin(r))
    shift = 0.5 * (1.0 - ratio) * d[j]
    atoms.positions[i] += shift
    atoms.positions[j] -= shift
    return atoms


def short_contacts(el: str, rng: np.random.Generator) -> list[Atoms]:
    """Compressed + sheared cells (linear scale 0.80-0.97) and pushed pairs (0.72-0.95 × d_nn)."""
    frames = []
    cell = bulk(el, "fcc", a=LATTICE[el], cubic=True).repeat((2, 2, 2))
    for _ in range(16):
        a = strained(cell, rng, volume=0.0, shear=0.08)
        a.set_cell(a.cell.array * rng.uniform(0.80, 0.97), scale_atoms=True)
        a.rattle(0.06, seed=_seed(rng))
        frames.append(label(a, "compressed_sheared"))
    for _ in range(16):
        a = strained(cell, rng, volume=0.06, shear=0.05)
        a.rattle(0.04, seed=_seed(rng))
        frames.append(label(pushed_pair(a, rng.uniform(0.72, 0.95), rng), "short_pair"))
    return frames


def relaxed(atoms: Atoms, fmax: float = 0.05, fixed: tuple[int, ...] = ()) -> Atoms:
    """EMT-relaxed copy (BFGS to ``fmax`` eV/Å, at most 200 steps), ``fixed`` atoms held."""
    atoms = atoms.copy()
    if fixed:
        atoms.set_constraint(FixAtoms(indices=list(fixed)))
    atoms.calc = EMT()
    BFGS(atoms, logfile=None).run(fmax=fmax, steps=200)
    atoms.set_constraint()
    return atoms


def vacancies(el: str, rng: np.random.Generator) -> list[Atoms]:
    """Relaxed vacancies (32- and 108-atom cells, plus rattled copies) and a relaxed hop path:
    a neighbour moved linearly into the vacant site in 5 images, each relaxed with the
    hopping atom held."""
    frames = []
    for reps in (2, 3):
        a = bulk(el, "fcc", a=LATTICE[el], cubic=True).repeat(reps)
        del a[0]
        r = relaxed(a, fmax=0.01)
        frames.append(label(r, "vacancy_relaxed"))
        for _ in range(2):
            c = r.copy()
            c.rattle(0.04, seed=_seed(rng))
            frames.append(label(c, "vacancy_relaxed"))
    a = bulk(el, "fcc", a=LATTICE[el], cubic=True).repeat(2)
    site = a.positions[0].copy()
    del a[0]
    start = relaxed(a, fmax=0.02)
    hop = int(np.argmin(np.linalg.norm(start.positions - site, axis=1)))  # a neighbour
    for t in np.linspace(0.2, 1.0, 5):
        image = start.copy()
        image.positions[hop] = start.positions[hop] + t * (site - start.positions[hop])
        image = relaxed(image, fmax=0.05, fixed=(hop,))
        frames.append(label(image, "vacancy_hop"))
        image.rattle(0.03, seed=_seed(rng))
        frames.append(label(image, "vacancy_hop"))
    return frames


def surfaces(el: str, rng: np.random.Generator) -> list[Atoms]:
    """(111), (100), (110) slabs (2×2×5, 8 Å vacuum, pbc T,T,F): rattled and relaxed."""
    frames = []
    for build in (fcc111, fcc100, fcc110):
        slab = build(el, size=(2, 2, 5), a=LATTICE[el], vacuum=8.0)
        slab.pbc = (True, True, False)
        name = f"surface_{build.__name__[3:]}"
        frames.append(label(relaxed(slab, fmax=0.02), name))
        for _ in range(3):
            s = slab.copy()
            s.rattle(0.08, seed=_seed(rng))
            frames.append(label(s, name))
    return frames


def liquid(atoms: Atoms, temperature: float, n: int, rng: np.random.Generator) -> list[Atoms]:
    """``n`` Langevin snapshots (every 40 steps of 2 fs) after 400 steps of melting at
    ``temperature`` (K); the cell expanded by 4 % in volume as a liquid's density."""
    atoms = atoms.copy()
    atoms.set_cell(atoms.cell.array * 1.04 ** (1 / 3), scale_atoms=True)
    atoms.calc = EMT()
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    dyn = Langevin(atoms, 2 * units.fs, temperature_K=temperature, friction=0.05, rng=rng)
    dyn.run(400)
    frames = []
    for _ in range(n):
        dyn.run(40)
        frames.append(label(atoms, "liquid"))
    return frames


def alloys_v2(rng: np.random.Generator) -> list[Atoms]:
    """More random alloys: strained, compressed to short contacts, liquid."""
    frames = []
    for _ in range(120):
        a = strained(random_alloy(rng, int(rng.integers(2, 4))), rng, volume=0.08, shear=0.05)
        a.rattle(0.08, seed=_seed(rng))
        frames.append(label(a, "alloy"))
    for _ in range(50):
        a = strained(random_alloy(rng, int(rng.integers(2, 4))), rng, volume=0.0, shear=0.06)
        a.set_cell(a.cell.array * rng.uniform(0.82, 0.97), scale_atoms=True)
        a.rattle(0.05, seed=_seed(rng))
        if rng.random() < 0.5:
            a = pushed_pair(a, rng.uniform(0.75, 0.95), rng)
        frames.append(label(a, "alloy_short"))
    for _ in range(6):
        frames += liquid(random_alloy(rng, int(rng.integers(2, 4))), 2200.0, 5, rng)
    return frames


def _v2_chunks() -> list[tuple[str, callable]]:
    chunks = []
    for el in ELEMENTS:
        chunks.append((f"short-{el}", lambda rng, el=el: short_contacts(el, rng)))
        chunks.append((f"vacancy-{el}", lambda rng, el=el: vacancies(el, rng)))
        chunks.append((f"surface-{el}", lambda rng, el=el: surfaces(el, rng)))
        cell = bulk(el, "fcc", a=LATTICE[el], cubic=True).repeat(2)
        chunks.append(
            (
                f"liquid-{el}",
                lambda rng, c=cell: liquid(c, 2000.0, 8, rng) + liquid(c, 2800.0, 8, rng),
            )
        )
    chunks.append(("alloys", alloys_v2))
    return chunks


def generate_v2(seed: int, out: Path) -> list[Atoms]:
    """v1's frames then the v2 chunks; each chunk (own seed ``[seed, k]``) is written to
    ``runs/OUTNAME.parts/k-name.xyz`` (git-ignored) and read back instead of recomputed on a
    rerun."""
    frames = read(V1_DATA, index=":")
    parts = ROOT / "runs" / f"{out.name}.parts"
    parts.mkdir(parents=True, exist_ok=True)
    for k, (name, make) in enumerate(_v2_chunks()):
        path = parts / f"{k:02d}-{name}.xyz"
        if not path.exists():
            t = time.perf_counter()
            chunk = make(np.random.default_rng([seed, k]))
            write(str(path) + ".tmp", chunk, format="extxyz")
            Path(str(path) + ".tmp").replace(path)
            print(f"{name}: {len(chunk)} frames in {time.perf_counter() - t:.1f} s", flush=True)
        frames += read(path, index=":")
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=("v1", "v2"), default="v1", dest="data_set")
    parser.add_argument("--out", help="default data/metals-emt.xyz.xz (v1), -v2.xyz.xz (v2)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    suffix = "" if args.data_set == "v1" else "-v2"
    out = Path(args.out or f"data/metals-emt{suffix}.xyz.xz")
    if args.data_set == "v1":
        frames = generate(args.seed)
    else:
        frames = generate_v2(args.seed, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write(out, frames, format="extxyz")
    n_atoms = sum(len(f) for f in frames)
    print(
        f"wrote {len(frames)} frames ({n_atoms} atoms) to {out} in "
        f"{time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
