"""Bulk and molecular checks shared by the zoo card script: equation of state, elastic constants
(clamped- and relaxed-ion) and harmonic frequencies, computed the same way for a model and for
its reference calculator (defects and surfaces: :mod:`defects`).

All energies in eV, lengths in Å, moduli in GPa, frequencies in cm⁻¹.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.eos import EquationOfState
from ase.optimize import BFGS

MakeCalc = Callable[[], Calculator]


def equation_of_state(
    make: Callable[[float], Atoms], a_guess: float, calc: MakeCalc, span: float = 0.05
) -> dict[str, float]:
    """Birch–Murnaghan fit of E(V) over lattice constants ``a_guess·(1 ± span)``.

    Returns the lattice constant ``a0`` (Å), bulk modulus ``B`` (GPa) and ``E0`` (eV/atom).
    """
    scales = np.linspace(1 - span, 1 + span, 11)
    volumes, energies = [], []
    for s in scales:
        atoms = make(a_guess * s)
        atoms.calc = calc()
        volumes.append(atoms.get_volume() / len(atoms))
        energies.append(atoms.get_potential_energy() / len(atoms))
    eos = EquationOfState(volumes, energies, eos="birchmurnaghan")
    v0, e0, b = eos.fit()
    a0 = a_guess * (v0 / (make(a_guess).get_volume() / len(make(a_guess)))) ** (1 / 3)
    return {"a0": float(a0), "B": float(b / units.GPa), "E0": float(e0)}


def _strained_stress(atoms: Atoms, strain: np.ndarray, calc: MakeCalc) -> np.ndarray:
    """Stress (3×3, eV/Å³) of ``atoms`` under the homogeneous strain ``strain`` (3×3)."""
    atoms = atoms.copy()
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
    atoms.calc = calc()
    return atoms.get_stress(voigt=False)


def cubic_elastic_constants(atoms: Atoms, calc: MakeCalc, delta: float = 0.005) -> dict[str, float]:
    """Clamped-ion C11, C12, C44 (GPa) of a cubic crystal by central differences of stress.

    ε_xx = ±δ gives σ_xx = C11 ε and σ_yy = C12 ε; ε_yz = ε_zy = ±δ/2 gives σ_yz = C44 γ with
    γ = 2ε_yz. For a Bravais lattice (fcc metals) clamped-ion equals relaxed-ion.
    """
    e = np.zeros((3, 3))
    e[0, 0] = delta
    d1 = (_strained_stress(atoms, e, calc) - _strained_stress(atoms, -e, calc)) / (2 * delta)
    s = np.zeros((3, 3))
    s[1, 2] = s[2, 1] = delta / 2
    d2 = (_strained_stress(atoms, s, calc) - _strained_stress(atoms, -s, calc)) / (2 * delta)
    return {
        "C11": float(d1[0, 0] / units.GPa),
        "C12": float(0.5 * (d1[1, 1] + d1[2, 2]) / units.GPa),
        "C44": float(d2[1, 2] / units.GPa),
    }


def relaxed_ion_c44(
    atoms: Atoms, calc: MakeCalc, delta: float = 0.005, *, fmax: float = 0.005, steps: int = 200
) -> float:
    """Relaxed-ion C44 (GPa): the clamped-ion shear of :func:`cubic_elastic_constants`, with
    the ions relaxed (BFGS to ``fmax`` eV/Å, cell fixed) in each strained cell before the
    stress is taken. In diamond the shear moves the two fcc sublattices against each other
    (Kleinman's internal strain), so this is below the clamped-ion C44; C11 and C12 have no
    internal strain in diamond (the clamped-ion values are the relaxed ones).
    """
    stresses = []
    for sign in (1.0, -1.0):
        strained = atoms.copy()
        s = np.zeros((3, 3))
        s[1, 2] = s[2, 1] = sign * delta / 2
        strained.set_cell(strained.cell.array @ (np.eye(3) + s), scale_atoms=True)
        strained.calc = calc()
        BFGS(strained, logfile=None).run(fmax=fmax, steps=steps)
        stresses.append(strained.get_stress(voigt=False))
    return float((stresses[0][1, 2] - stresses[1][1, 2]) / (2 * delta) / units.GPa)


def harmonic_frequencies(atoms: Atoms, calc: MakeCalc, *, fmax: float = 1e-3) -> list[float]:
    """Harmonic wavenumbers (cm⁻¹, ascending; see :func:`vibrational_wavenumbers`) at the
    calculator's own minimum.

    The geometry is relaxed with ``calc`` (BFGS to ``fmax`` eV/Å, at most 500 steps); the
    Hessian comes from central differences of the forces (±0.005 Å).
    """
    atoms = atoms.copy()
    atoms.calc = calc()
    BFGS(atoms, logfile=None).run(fmax=fmax, steps=500)
    x0 = atoms.positions.copy()
    n = len(atoms)
    h = 0.005
    hessian = np.zeros((3 * n, 3 * n))
    for k in range(3 * n):
        plus, minus = x0.copy(), x0.copy()
        plus.flat[k] += h
        minus.flat[k] -= h
        atoms.positions = plus
        f_plus = atoms.get_forces().ravel()
        atoms.positions = minus
        f_minus = atoms.get_forces().ravel()
        hessian[k] = -(f_plus - f_minus) / (2 * h)
    atoms.positions = x0
    hessian = 0.5 * (hessian + hessian.T)
    return vibrational_wavenumbers(hessian, atoms)


def vibrational_wavenumbers(hessian: np.ndarray, atoms: Atoms) -> list[float]:
    """Harmonic wavenumbers (cm⁻¹, ascending) of the Hessian ``[3N, 3N]`` (eV/Å²) at ``atoms``.

    The convention of ``data/molecules-pbe-frequencies.json``: the 3N − 6 (3N − 5 for a linear
    molecule) modes of largest magnitude, an imaginary one as a negative wavenumber. Masses are
    ASE's.
    """
    m = np.repeat(atoms.get_masses(), 3)
    eigen = np.linalg.eigvalsh(hessian / np.sqrt(np.outer(m, m)))  # eV/(Å² amu)
    # ω² = λ; ħω in eV is √λ · ħ/√(Å² amu), then eV → cm⁻¹
    hbar_omega = np.sqrt(np.abs(eigen)) * units._hbar * 1e10 / np.sqrt(units._amu * units._e)
    wavenumbers = np.sign(eigen) * hbar_omega / units.invcm
    n = len(atoms)
    centred = atoms.positions - atoms.positions.mean(0)
    linear = n == 2 or np.linalg.matrix_rank(centred, tol=1e-3) == 1
    keep = 3 * n - (5 if linear else 6)
    return sorted(float(w) for w in wavenumbers[np.argsort(np.abs(wavenumbers))[-keep:]])
