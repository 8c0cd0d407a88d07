"""Reference data for the ``molecules-pbe`` zoo model: small organics at PBE/def2-SVP (PySCF).

    python scripts/zoo/generate_molecules_pyscf.py [--out data/molecules-pbe.xyz.xz] [--seed 0]
    python scripts/zoo/generate_molecules_pyscf.py --xc b3lyp --per-temperature 12 \\
        --out data/molecules-b3lyp.xyz.xz   # the fine-tuning demo's "user" data

Sampling: for each molecule (water, methanol, ethanol, formaldehyde, methane), Langevin MD
driven by GFN2-xTB (tblite, cheap) at 300, 600 and 1000 K; snapshots every 20 steps of 0.5 fs.
Labelling: Kohn–Sham DFT in PySCF at the functional ``--xc`` (default PBE) with the def2-SVP
basis, density fitting (def2-universal-jkfit), grid level 3, SCF converged to 1e-9 Eh.
Isolated atoms (H, C, O) in their spin-polarised ground states (UKS; doublet, triplet,
triplet) at the same level are added as ``config_type=isolated_atom`` frames: they fix the
per-element reference energies E0 that the molecular compositions alone cannot determine.

Energies in eV, forces in eV/Å (ASE units), via ASE's SinglePointCalculator, plus
``config_type`` (``<molecule>_<T>K``). Runs on one core in about 10–15 minutes (PBE).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.build import molecule
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

MOLECULES = ("H2O", "CH3OH", "CH3CH2OH", "H2CO", "CH4")
TEMPERATURES = (300.0, 600.0, 1000.0)
BASIS = "def2-svp"
ATOM_SPIN = {"H": 1, "C": 2, "O": 2}  # 2S of the isolated atoms' ground states


def kohn_sham(atoms: Atoms, xc: str, spin: int = 0):
    """The PySCF Kohn–Sham object of ``atoms`` at ``xc``/def2-SVP (not yet run): density
    fitting, grid level 3, SCF to 1e-9 Eh; UKS for ``spin`` (2S) > 0, else RKS."""
    from pyscf import dft as pyscf_dft
    from pyscf import gto

    mol = gto.M(
        atom=[
            (s, tuple(p))
            for s, p in zip(atoms.get_chemical_symbols(), atoms.positions, strict=True)
        ],
        unit="Angstrom",
        basis=BASIS,
        spin=spin,
        verbose=0,
    )
    mf = (pyscf_dft.UKS(mol) if spin else pyscf_dft.RKS(mol)).density_fit()
    mf.xc = xc
    mf.grids.level = 3
    mf.conv_tol = 1e-9
    return mf


def dft(atoms: Atoms, xc: str, spin: int = 0) -> tuple[float, np.ndarray]:
    """Energy (eV) and forces (eV/Å) of ``atoms`` at ``xc``/def2-SVP."""
    mf = kohn_sham(atoms, xc, spin)
    energy = mf.kernel()
    if not mf.converged:
        raise RuntimeError(f"SCF did not converge for {atoms.get_chemical_formula()}")
    gradient = mf.nuc_grad_method().kernel()  # Eh/Bohr
    return energy * units.Hartree, -gradient * units.Hartree / units.Bohr


class PBE(Calculator):
    """An ASE calculator of PBE/def2-SVP energy and forces, exactly as the data are labelled
    (:func:`dft`; closed shell)."""

    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        energy, forces = dft(self.atoms, "pbe")
        self.results = {"energy": energy, "forces": forces}


def labelled(atoms: Atoms, xc: str, config_type: str, spin: int = 0) -> Atoms:
    energy, forces = dft(atoms, xc, spin)
    out = Atoms(atoms.numbers, atoms.positions)
    out.calc = SinglePointCalculator(out, energy=energy, forces=forces)
    out.info["config_type"] = config_type
    return out


def sample(
    name: str,
    temperature: float,
    n: int,
    rng: np.random.Generator,
    *,
    equilibrate: int = 200,
    every: int = 20,
    gfn2_labels: bool = False,
) -> list[Atoms]:
    """``n`` snapshots of GFN2-xTB Langevin MD of ``name`` at ``temperature`` (K): 0.5 fs steps,
    ``equilibrate`` steps first, then one snapshot every ``every`` steps; ``gfn2_labels``: each
    keeps the MD's own GFN2-xTB energy and forces (a single-point calculator)."""
    from tblite.ase import TBLite

    atoms = molecule(name)
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    dyn = Langevin(
        atoms, 0.5 * units.fs, temperature_K=temperature, friction=0.02, fixcm=False, rng=rng
    )
    dyn.run(equilibrate)
    frames = []
    for _ in range(n):
        dyn.run(every)
        frame = Atoms(atoms.numbers, atoms.positions.copy())
        if gfn2_labels:
            energy, forces = atoms.get_potential_energy(), atoms.get_forces()
            frame.calc = SinglePointCalculator(frame, energy=energy, forces=forces)
        frames.append(frame)
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="data/molecules-pbe.xyz.xz")
    parser.add_argument("--xc", default="pbe", help="PySCF functional name (default: pbe)")
    parser.add_argument(
        "--per-temperature", type=int, default=30, help="snapshots per (molecule, T)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    frames = [labelled(Atoms(s), args.xc, "isolated_atom", spin) for s, spin in ATOM_SPIN.items()]
    for name in MOLECULES:
        for temperature in TEMPERATURES:
            for atoms in sample(name, temperature, args.per_temperature, rng):
                frames.append(labelled(atoms, args.xc, f"{name}_{int(temperature)}K"))
            print(
                f"{name} {temperature:.0f} K: {len(frames)} frames, "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write(args.out, frames, format="extxyz")
    n_atoms = sum(len(a) for a in frames)
    print(
        f"wrote {len(frames)} frames ({n_atoms} atoms) to {args.out} "
        f"in {time.perf_counter() - started:.0f} s ({args.xc}/{BASIS})"
    )


if __name__ == "__main__":
    main()
