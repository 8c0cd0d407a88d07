"""Defect and surface energies for the zoo cards, computed the same way for a model and for its
reference calculator: each calculator relaxes its own structures, at its own lattice constant.

All energies in eV, lengths in Å, surface energies in J/m² (1 eV/Å² = 16.0218 J/m²).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from ase import Atoms, units
from ase.build import fcc111
from ase.calculators.calculator import Calculator
from ase.optimize import BFGS

MakeCalc = Callable[[], Calculator]
EV_PER_A2_IN_J_PER_M2 = units._e * 1e20  # 16.0218 J/m² per eV/Å²


def relax_ions(atoms: Atoms, fmax: float, steps: int) -> Atoms:
    """Relax the ions of ``atoms`` (which carries its calculator) at a fixed cell, BFGS to
    ``fmax`` eV/Å; refuses to return an unconverged structure."""
    if not BFGS(atoms, logfile=None).run(fmax=fmax, steps=steps):
        raise RuntimeError(
            f"{atoms.get_chemical_formula()}: the ionic relaxation did not reach fmax = {fmax} "
            f"eV/Å in {steps} steps"
        )
    return atoms


def point_defect_energy(e_defect: float, n_defect: int, e_perfect: float, n_perfect: int) -> float:
    """Formation energy (eV) of a vacancy or self-interstitial in an elemental crystal:
    E_f = E(defect cell, n_defect atoms) − n_defect · E(perfect cell)/n_perfect, the chemical
    potential being the perfect crystal's energy per atom.

    >>> round(point_defect_energy(-10.0, 3, -16.0, 4), 6)   # −10 − 3·(−4)
    2.0
    """
    return float(e_defect - n_defect * e_perfect / n_perfect)


def vacancy_formation_energies(
    perfect: Atoms, calc: MakeCalc, *, fmax: float = 0.01, steps: int = 300
) -> dict[str, float]:
    """Vacancy formation energy (eV) of an elemental crystal, atom 0 removed, the cell fixed:
    ``unrelaxed`` (the other ions on their lattice sites) and ``relaxed`` (ions relaxed, BFGS
    to ``fmax`` eV/Å)."""
    host = perfect.copy()
    host.calc = calc()
    e_perfect = host.get_potential_energy()
    defect = perfect.copy()
    del defect[0]
    defect.calc = calc()
    n = len(perfect)
    unrelaxed = point_defect_energy(defect.get_potential_energy(), n - 1, e_perfect, n)
    relax_ions(defect, fmax, steps)
    relaxed = point_defect_energy(defect.get_potential_energy(), n - 1, e_perfect, n)
    return {"unrelaxed": unrelaxed, "relaxed": relaxed}


def split_110_interstitial(perfect: Atoms, half_length: float = 1.1) -> Atoms:
    """``perfect`` with atom 0 replaced by a ⟨110⟩ dumbbell: two atoms at ± ``half_length`` Å
    along [110] around its site (the starting geometry of ``generate_silicon_xtb``)."""
    atoms = perfect.copy()
    centre = atoms.positions[0].copy()
    shift = np.array([1.0, 1.0, 0.0]) / np.sqrt(2.0) * half_length
    atoms.positions[0] = centre + shift
    atoms += Atoms(atoms.get_chemical_symbols()[0], positions=[centre - shift])
    atoms.wrap()
    return atoms


def interstitial_formation_energy(
    perfect: Atoms, calc: MakeCalc, *, fmax: float = 0.02, steps: int = 300
) -> dict[str, float]:
    """Relaxed formation energy (eV) of the split-⟨110⟩ self-interstitial in ``perfect``
    (cell fixed, ions relaxed with BFGS to ``fmax`` eV/Å), and the dumbbell's length after
    relaxation (Å), which says whether it stayed a dumbbell."""
    host = perfect.copy()
    host.calc = calc()
    e_perfect = host.get_potential_energy()
    defect = split_110_interstitial(perfect)
    defect.calc = calc()
    relax_ions(defect, fmax, steps)
    n = len(perfect)
    energy = point_defect_energy(defect.get_potential_energy(), n + 1, e_perfect, n)
    return {"relaxed": energy, "dumbbell_length_A": float(defect.get_distance(0, n, mic=True))}


def slab_surface_energy(e_slab: float, n_slab: int, e_bulk_per_atom: float, area: float) -> float:
    """Surface energy (J/m²) of a slab with two equal faces of ``area`` Å each:
    γ = (E_slab − N · e_bulk) / (2 A).

    >>> round(slab_surface_energy(-9.0, 10, -1.0, EV_PER_A2_IN_J_PER_M2 / 2), 6)  # 1 eV / 2A
    1.0
    """
    return float((e_slab - n_slab * e_bulk_per_atom) / (2.0 * area) * EV_PER_A2_IN_J_PER_M2)


def fcc111_surface_energy(
    symbol: str,
    a0: float,
    calc: MakeCalc,
    *,
    size: tuple[int, int, int] = (2, 2, 7),
    vacuum: float = 8.0,
    fmax: float = 0.01,
) -> dict[str, float]:
    """(111) surface energy (J/m²) of fcc ``symbol`` at the calculator's own lattice constant
    ``a0`` (Å): a ``size`` slab (periodic in-plane, ``vacuum`` Å either side), bulk energy per
    atom from the 4-atom cubic cell at ``a0``. ``unrelaxed``: bulk-terminated; ``relaxed``:
    every ion relaxed (BFGS to ``fmax`` eV/Å; the middle keeps its bulk positions by symmetry).
    """
    from ase.build import bulk

    crystal = bulk(symbol, "fcc", a=a0, cubic=True)
    crystal.calc = calc()
    e_bulk = crystal.get_potential_energy() / len(crystal)
    slab = fcc111(symbol, size=size, a=a0, vacuum=vacuum, periodic=False)
    slab.pbc = (True, True, False)
    slab.calc = calc()
    area = float(np.linalg.norm(np.cross(slab.cell[0], slab.cell[1])))
    unrelaxed = slab_surface_energy(slab.get_potential_energy(), len(slab), e_bulk, area)
    relax_ions(slab, fmax, 300)
    relaxed = slab_surface_energy(slab.get_potential_energy(), len(slab), e_bulk, area)
    return {"unrelaxed": unrelaxed, "relaxed": relaxed}
