"""Reference data for ``molecules-pbe`` v2: 35 small H/C/N/O molecules at PBE/def2-SVP (PySCF),
and harmonic frequencies of 10 molecules kept out of training. Resumable.

    export OMP_NUM_THREADS=1
    python scripts/zoo/generate_molecules_v2.py labels       # runs/molecules-pbe-v2/parts/
    python scripts/zoo/generate_molecules_v2.py frequencies  # runs/molecules-pbe-v2/frequencies/
    python scripts/zoo/generate_molecules_v2.py combine      # data/molecules-pbe-v2.xyz.xz and
                                                             # data/molecules-pbe-frequencies.json

The same command resumes: every (molecule, temperature) block of labelled frames and every
molecule's frequencies is its own file, written atomically when it is complete; a killed run
loses at most the block it was working on.

Level of theory: that of ``data/molecules-pbe.xyz.xz`` (``generate_molecules_pyscf.dft``):
Kohn–Sham PBE, def2-SVP, density fitting, grid level 3, SCF to 1e-9 Eh. Its five molecules
(30 frames per temperature) are taken over as they are; the 30 others are sampled the same way
(GFN2-xTB Langevin MD at 300, 600 and 1000 K, 0.5 fs, 200 steps of equilibration, a frame every
20 steps) with ``--per-temperature`` frames each (default 8). Isolated N (quartet, UKS) joins
H, C and O (``config_type=isolated_atom``): it fixes nitrogen's E0.

Frequencies (``FREQUENCY_MOLECULES``, none of them in training): the G2 geometry relaxed with
PySCF forces (ASE BFGS to 1e-3 eV/Å; a relaxation that does not get there stops the run), then
the analytic PBE/def2-SVP Hessian (PySCF, density fitting), mass-weighted with ASE's masses; the
3N − 6 (3N − 5 for a linear molecule) harmonic frequencies of largest magnitude, in cm⁻¹, an
imaginary one as a negative number.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.build import molecule
from ase.io import read, write

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate_molecules_pyscf import BASIS, PBE, TEMPERATURES, kohn_sham, labelled, sample

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "runs" / "molecules-pbe-v2"
V1_DATA = ROOT / "data" / "molecules-pbe.xyz.xz"
NEW_MOLECULES = (
    # small inorganics and triple bonds
    "H2", "N2", "CO", "CO2", "HCN", "NH3", "N2H4", "H2O2", "C2H2",
    # hydrocarbons
    "C2H4", "C2H6", "C3H8", "trans-butane", "isobutane", "isobutene", "butadiene", "C6H6",
    # carbonyls, acids, esters, ethers
    "CH3CHO", "CH3COCH3", "HCOOH", "CH3COOH", "HCOOCH3", "CH3OCH3",
    # amines, nitriles, amides, heteroaromatics
    "H3CNH2", "CH3CH2NH2", "C2H6NH", "CH3CN", "CH3CONH2", "C5H5N", "C4H4O",
)  # fmt: skip
FREQUENCY_MOLECULES = (
    "C2H6CHOH",  # isopropanol
    "CH3CH2OCH3",  # methyl ethyl ether
    "OCHCHO",  # glyoxal
    "H2CCO",  # ketene
    "CH2OCH2",  # oxirane
    "CH2NHCH2",  # aziridine
    "C4H4NH",  # pyrrole
    "H2CCHCN",  # acrylonitrile
    "C3H9N",  # trimethylamine
    "C3H6_Cs",  # propene
)
ATOM_SPIN = {"H": 1, "C": 2, "N": 3, "O": 2}  # 2S of the isolated atoms' ground states


def write_atomic(path: Path, text_or_frames: str | list[Atoms]) -> None:
    """Write a file whole or not at all (a temporary name, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(text_or_frames, str):
        tmp.write_text(text_or_frames)
    else:
        write(tmp, text_or_frames, format="extxyz")
    os.replace(tmp, path)


def block_seed(name: str, temperature: float) -> int:
    """A seed per (molecule, temperature), independent of the order blocks are run in."""
    return int.from_bytes(f"{name}/{temperature:.0f}".encode(), "little") % (2**32)


def make_labels(per_temperature: int) -> None:
    """Label every missing (molecule, temperature) block and the isolated atoms."""
    started = time.perf_counter()
    atoms_file = RUN / "parts" / "isolated_atoms.xyz"
    if not atoms_file.exists():
        frames = [labelled(Atoms(s), "pbe", "isolated_atom", spin) for s, spin in ATOM_SPIN.items()]
        write_atomic(atoms_file, frames)
    for name in NEW_MOLECULES:
        for temperature in TEMPERATURES:
            part = RUN / "parts" / f"{name}_{int(temperature)}K.xyz"
            if part.exists():
                continue
            rng = np.random.default_rng(block_seed(name, temperature))
            frames = [
                labelled(a, "pbe", f"{name}_{int(temperature)}K")
                for a in sample(name, temperature, per_temperature, rng)
            ]
            write_atomic(part, frames)
            print(f"{part.name}: {time.perf_counter() - started:.0f} s", flush=True)


def relaxed(name: str) -> Atoms:
    """The G2 geometry of ``name`` relaxed at PBE/def2-SVP (ASE BFGS on PySCF forces)."""
    from ase.optimize import BFGS

    atoms = molecule(name)
    atoms.calc = PBE()
    if not BFGS(atoms, logfile=None).run(fmax=1e-3, steps=200):
        raise RuntimeError(f"{name}: the PBE relaxation did not reach 1e-3 eV/Å in 200 steps")
    return Atoms(atoms.numbers, atoms.positions)


def harmonic_frequencies(atoms: Atoms) -> list[float]:
    """Harmonic frequencies (cm⁻¹) from the analytic PBE/def2-SVP Hessian at ``atoms``."""
    from ase.vibrations import VibrationsData

    mf = kohn_sham(atoms, "pbe")
    mf.kernel()
    if not mf.converged:
        raise RuntimeError(f"SCF did not converge for {atoms.get_chemical_formula()}")
    n = len(atoms)
    hessian = mf.Hessian().kernel()  # [N, N, 3, 3] Eh/Bohr²
    hessian = hessian.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n) * units.Hartree / units.Bohr**2
    energies = VibrationsData.from_2d(atoms, hessian).get_energies()  # eV, complex if imaginary
    # an imaginary mode as a negative wavenumber (not folded into a real one)
    wavenumbers = (np.real(energies) - np.imag(energies)) / units.invcm
    linear = n == 2 or np.linalg.matrix_rank(atoms.positions - atoms.positions.mean(0)) == 1
    keep = 3 * n - (5 if linear else 6)
    vibrations = wavenumbers[np.argsort(np.abs(wavenumbers))[-keep:]]
    return sorted(float(w) for w in vibrations)


def make_frequencies() -> None:
    for name in FREQUENCY_MOLECULES:
        out = RUN / "frequencies" / f"{name}.json"
        if out.exists():
            continue
        started = time.perf_counter()
        atoms = relaxed(name)
        record = {
            "name": name,
            "symbols": atoms.get_chemical_symbols(),
            "positions_A": atoms.positions.tolist(),
            "frequencies_cm1": harmonic_frequencies(atoms),
        }
        write_atomic(out, json.dumps(record, indent=1))
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)


def combine() -> None:
    """The v1 frames of its five molecules + every finished block → one compressed file."""
    frames = list(read(V1_DATA, ":"))
    frames = [a for a in frames if a.info.get("config_type") != "isolated_atom"]
    parts = sorted((RUN / "parts").glob("*.xyz"))
    for part in parts:
        frames.extend(read(part, ":"))
    for a in frames:
        a.info["level_of_theory"] = f"PBE/{BASIS} (PySCF, density fitting)"
    write(ROOT / "data" / "molecules-pbe-v2.xyz.xz", frames, format="extxyz")
    done = sorted((RUN / "frequencies").glob("*.json"))
    records = [json.loads(p.read_text()) for p in done]
    text = json.dumps({"level_of_theory": f"PBE/{BASIS}", "molecules": records}, indent=1)
    (ROOT / "data" / "molecules-pbe-frequencies.json").write_text(text + "\n")
    print(f"{len(frames)} frames from {len(parts)} blocks + v1; {len(records)} frequency sets")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=["labels", "frequencies", "combine"])
    parser.add_argument("--per-temperature", type=int, default=8)
    args = parser.parse_args()
    if args.stage == "labels":
        make_labels(args.per_temperature)
    elif args.stage == "frequencies":
        make_frequencies()
    else:
        combine()


if __name__ == "__main__":
    main()
