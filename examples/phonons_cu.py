"""Phonons of fcc Cu from the exact Hessian of a supercell, against phonopy's finite displacements.

The zoo model ``metals`` gives the Γ-point Hessian of a 3×3×3 supercell of the primitive cell
(27 atoms) by automatic differentiation: these are the supercell's force constants, handed to
phonopy as they are. The same calculator then runs phonopy's own finite displacements (one
symmetry-distinct displacement, ± ``--distance``), and both give the band structure along
Γ-X-W-K-Γ-L and the density of states. Needs phonopy (``pip install ase-equi[phonons]``).

Run::

    OMP_NUM_THREADS=1 python examples/phonons_cu.py [--plot bands.png]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from ase import Atoms
from ase.build import bulk
from phonopy import Phonopy
from phonopy.structure.atoms import PhonopyAtoms

from ase_equi import EquivariantCalculator

A_CU = 3.61  # Å


def to_ase(cell: PhonopyAtoms) -> Atoms:
    return Atoms(cell.symbols, positions=cell.positions, cell=cell.cell, pbc=True)


def new_phonopy(unit: Atoms) -> Phonopy:
    cell = PhonopyAtoms(
        symbols=unit.get_chemical_symbols(), cell=unit.cell.array, positions=unit.positions
    )
    return Phonopy(cell, supercell_matrix=3 * np.eye(3, dtype=int))


def band_qpoints(unit: Atoms, per_segment: int = 30) -> tuple[np.ndarray, list[str]]:
    """q-points (reduced coordinates of the primitive cell) along Γ-X-W-K-Γ-L."""
    special = unit.cell.bandpath().special_points
    labels = ["G", "X", "W", "K", "G", "L"]
    points = [special[name] for name in labels]
    path = [
        a + (b - a) * t
        for a, b in zip(points[:-1], points[1:], strict=True)
        for t in np.linspace(0.0, 1.0, per_segment, endpoint=False)
    ]
    return np.array([*path, points[-1]]), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--distance", type=float, default=0.01, help="phonopy displacement, Å")
    parser.add_argument("--plot", help="write the two band structures to this image file")
    args = parser.parse_args()
    unit = bulk("Cu", "fcc", a=A_CU)
    calc = EquivariantCalculator("metals")

    exact = new_phonopy(unit)
    start = time.perf_counter()
    supercell = to_ase(exact.supercell)  # phonopy's atom order
    n = len(supercell)
    supercell.calc = calc
    hessian = calc.get_property("hessian", supercell)  # (3N, 3N) eV/Å², the Γ-point Hessian
    # phonopy's force constants fc[i, j, a, b] = ∂²E/∂r_ia ∂r_jb
    exact.force_constants = hessian.reshape(n, 3, n, 3).transpose(0, 2, 1, 3)
    t_exact = time.perf_counter() - start

    finite = new_phonopy(unit)
    start = time.perf_counter()
    finite.generate_displacements(distance=args.distance, is_plusminus=True)
    forces = []
    for displaced in finite.supercells_with_displacements:
        atoms = to_ase(displaced)
        atoms.calc = calc
        forces.append(atoms.get_forces().copy())
    finite.forces = forces
    finite.produce_force_constants()
    t_finite = time.perf_counter() - start

    qpoints, labels = band_qpoints(unit)
    bands = {}
    for name, p in (("exact", exact), ("finite", finite)):
        p.run_qpoints(qpoints)
        bands[name] = p.qpoints.frequencies  # [n_q, 3] THz
    difference = np.abs(bands["exact"] - bands["finite"]).max()
    print(f"supercell: {len(exact.supercell)} atoms; path {'-'.join(labels)}")
    print(f"exact Hessian: {t_exact:.1f} s; phonopy finite displacements: {t_finite:.1f} s "
          f"({len(forces)} force calls, ±{args.distance} Å)")  # fmt: skip
    for name, k in (("X", 30), ("L", -1)):
        print(f"  {name}: exact {np.round(bands['exact'][k], 3)} THz, "
              f"finite {np.round(bands['finite'][k], 3)} THz")  # fmt: skip
    print(f"max |Δν| along the path: {difference:.2e} THz")
    for name, p in (("exact", exact), ("finite", finite)):
        p.run_mesh([12, 12, 12], is_gamma_center=True)
        p.run_total_dos()
        peak = p.total_dos.frequency_points[np.argmax(p.total_dos.dos)]
        print(f"DOS ({name}): highest peak at {peak:.2f} THz, max ν {p.mesh.frequencies.max():.3f}")
    if args.plot:
        import matplotlib.pyplot as plt

        for name, style in (("exact", "-"), ("finite", "--")):
            plt.plot(bands[name], style, color="k" if name == "exact" else "r", lw=1)
        plt.xticks(np.arange(len(labels)) * 30, labels)
        plt.ylabel("frequency (THz)")
        plt.savefig(args.plot, dpi=120)


if __name__ == "__main__":
    main()
