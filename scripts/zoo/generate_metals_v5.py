"""Reference data for ``metals`` set v5: set v4 plus adatoms on fcc surfaces. Resumable.

    export OMP_NUM_THREADS=1
    python scripts/zoo/generate_metals_v5.py      # → data/metals-emt-v5.xyz.xz (about 7 min)

Why: the zoo's ``metals`` (stage 5, set v4) overestimates the hop barrier of an adatom on
fcc(100) by 8–24 % against EMT for all seven metals (``scripts/zoo/adatom_barriers.py``,
``benchmarks/results/2026-12-02-adatom-barriers-metals.md``): its data hold clean surfaces,
vacancies and vacancy hops, but no atom sitting on a surface. Set v5 adds, for each of the
seven metals at EMT's own lattice constant (:func:`generate_metals_v3.emt_lattice_constant`),
slabs with 8 Å of vacuum (pbc T, T, F as the earlier surface frames; no stress label), the two
lowest layers fixed while relaxing, one adatom:

- fcc(100), 3×3×4: the adatom relaxed in a hollow site (BFGS to 0.01 eV/Å), the five inner
  images of its climbing-image hop to the next hollow (EMT's NEB, converged to 0.02 eV/Å), and
  the hollow and the saddle each rattled twice (0.04 Å, the adatom and the top layer);
- fcc(110), 3×2×4 (three atoms along the close-packed rows): the adatom relaxed in the
  hollow between two rows and the inner images of its hop along that channel;
- fcc(111), 3×3×4: the adatom relaxed in the fcc and in the hcp hollow, each rattled once. No
  path on (111): the fcc → hcp hop is kept out of the data so that a check of it
  (``adatom_barriers.py --facet 111``) is a check on something not trained on;
- an adatom of another of the seven elements (seeded choice) relaxed in a (100) hollow, and
  rattled once;
- six snapshots of Langevin MD of the (100) adatom slab (EMT, 2 fs, friction 0.02, 1,000 steps
  each at 300 K and at 800 K, a snapshot every 333 steps, the bottom layers fixed).

Each element's block goes to ``runs/metals-emt-v5.parts/`` when complete and is read back on a
rerun. Frames are appended after set v4's, so a split of v4 extends to v5 frame for frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.build import add_adsorbate, fcc100, fcc110, fcc111
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.mep import NEB
from ase.optimize import BFGS, FIRE
from generate_metals_emt import ELEMENTS, label
from generate_metals_v3 import emt_lattice_constant, extend_set

ROOT = Path(__file__).resolve().parents[2]
V4_DATA = ROOT / "data" / "metals-emt-v4.xyz.xz"
OUT = ROOT / "data" / "metals-emt-v5.xyz.xz"
PARTS = ROOT / "runs" / "metals-emt-v5.parts"
BUILDERS = {"100": (fcc100, (3, 3, 4)), "110": (fcc110, (3, 2, 4)), "111": (fcc111, (3, 3, 4))}


def slab_with_adatom(el: str, a: float, facet: str, site: str, adatom: str | None = None):
    """A slab of ``el`` with one adatom (``adatom``, default ``el``) in ``site``; the two lowest
    layers fixed (tags 3, 4)."""
    build, size = BUILDERS[facet]
    slab = build(el, size=size, a=a, vacuum=8.0)
    add_adsorbate(slab, adatom or el, 0.45 * a, site)
    slab.center(vacuum=8.0, axis=2)
    slab.set_constraint(FixAtoms(mask=[atom.tag > 2 for atom in slab]))
    return slab


def relaxed(atoms: Atoms, fmax: float = 0.01) -> Atoms:
    atoms = atoms.copy()
    atoms.calc = EMT()
    BFGS(atoms, logfile=None).run(fmax=fmax, steps=500)
    return atoms


def hop_images(initial: Atoms, shift: np.ndarray) -> list[Atoms]:
    """The inner images of EMT's climbing-image NEB of the adatom (the last atom) moved by
    ``shift`` (Å) from the relaxed ``initial`` to the next equivalent site."""
    final = initial.copy()
    final.positions[-1] += shift
    final = relaxed(final)
    images = [initial] + [initial.copy() for _ in range(5)] + [final]
    for image in images[1:-1]:
        image.calc = EMT()
    band = NEB(images, climb=True, method="improvedtangent")
    band.interpolate()
    if not FIRE(band, logfile=None).run(fmax=0.02, steps=1000):
        raise RuntimeError("EMT's NEB did not converge")
    return images[1:-1]


def rattled(atoms: Atoms, rng: np.random.Generator, amplitude: float = 0.04) -> Atoms:
    """The adatom and the top layer (tag 1) displaced by Gaussian noise of ``amplitude`` Å."""
    atoms = atoms.copy()
    moved = [k for k, atom in enumerate(atoms) if atom.tag in (0, 1)]
    atoms.positions[moved] += rng.normal(0.0, amplitude, (len(moved), 3))
    return atoms


def md_snapshots(start: Atoms, temperature: float, rng: np.random.Generator) -> list[Atoms]:
    atoms = start.copy()
    atoms.calc = EMT()
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    dyn = Langevin(
        atoms, 2 * units.fs, temperature_K=temperature, friction=0.02, rng=rng, logfile=None
    )
    out = []
    for _ in range(3):
        dyn.run(333)
        out.append(atoms.copy())
    return out


def labelled(atoms: Atoms, config_type: str) -> Atoms:
    """EMT labels of every atom (the relaxation's constraint removed first: it is not data)."""
    atoms = atoms.copy()
    atoms.set_constraint()
    atoms.arrays.pop("momenta", None)
    return label(atoms, config_type)


def element_block(el: str, seed: int) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    a = emt_lattice_constant(el)
    frames = []
    hollow = relaxed(slab_with_adatom(el, a, "100", "hollow"))
    path = hop_images(hollow, np.array([hollow.cell[0, 0] / 3, 0.0, 0.0]))
    saddle = path[len(path) // 2]
    frames += [labelled(hollow, "adatom_100")] + [labelled(p, "adatom_hop_100") for p in path]
    frames += [labelled(rattled(s, rng), "adatom_100_rattled") for s in (hollow, saddle) * 2]
    channel = relaxed(slab_with_adatom(el, a, "110", "hollow"))
    along = np.array([channel.cell[0, 0] / 3, 0.0, 0.0])  # one period along the rows
    frames += [labelled(channel, "adatom_110")]
    frames += [labelled(p, "adatom_hop_110") for p in hop_images(channel, along)]
    for site in ("fcc", "hcp"):
        on_111 = relaxed(slab_with_adatom(el, a, "111", site))
        frames += [labelled(on_111, "adatom_111"), labelled(rattled(on_111, rng), "adatom_111")]
    other = str(rng.choice([x for x in ELEMENTS if x != el]))
    foreign = relaxed(slab_with_adatom(el, a, "100", "hollow", adatom=other))
    frames += [
        labelled(foreign, "adatom_100_alloy"),
        labelled(rattled(foreign, rng), "adatom_100_alloy"),
    ]
    for temperature in (300.0, 800.0):
        frames += [labelled(s, "adatom_100_md") for s in md_snapshots(hollow, temperature, rng)]
    return frames


def main() -> None:
    blocks = [
        (el, lambda el=el, k=k: element_block(el, seed=5000 + k)) for k, el in enumerate(ELEMENTS)
    ]
    extend_set(V4_DATA, OUT, blocks, PARTS)


if __name__ == "__main__":
    main()
