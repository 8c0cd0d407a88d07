"""The ``metals`` card's checks against ASE's EMT, for every element Al, Ni, Cu, Pd, Ag, Pt, Au.

Each calculator (the model, EMT) is measured on its own: its own equilibrium lattice constant
from its own equation of state, and its own relaxed defects and surfaces at that lattice
constant. Energies in eV, moduli in GPa, surface energies in J/m², forces in eV/Å.
"""

from __future__ import annotations

import time

from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from check_short_contacts import check as short_contact_check
from defects import fcc111_surface_energy, vacancy_formation_energies
from physics import MakeCalc, cubic_elastic_constants, equation_of_state
from targets import compare, measured

LATTICE = {"Cu": 3.61, "Ag": 4.09, "Au": 4.08, "Ni": 3.52, "Pd": 3.89, "Pt": 3.92, "Al": 4.05}
VACANCY_REPEAT = 3  # 3×3×3 cubic cells: 108 sites, 107 atoms with the vacancy
NOTES = (
    "EOS: Birch–Murnaghan over 11 lattice constants a·(1±5 %) around a fixed a per element "
    "(Cu 3.61, Ag 4.09, Au 4.08, Ni 3.52, Pd 3.89, Pt 3.92, Al 4.05 Å), the same for model and "
    "EMT, 4-atom cubic cell. Elastic constants: central "
    "differences of stress at ±0.5 % strain at each calculator's own a0 (fcc is a Bravais "
    "lattice: clamped-ion = relaxed-ion). Vacancy: 3×3×3 cubic cell (108 sites, 107 atoms) at "
    "each calculator's own a0, cell fixed, E(N−1) − (N−1)/N·E(N); unrelaxed, and ions relaxed "
    "with BFGS to fmax 0.01 eV/Å. (111) surface energy γ = (E_slab − N e_bulk)/(2A) in J/m²: "
    "2×2×7 slab (28 atoms, 8 Å vacuum each side, periodic in-plane) at each calculator's own "
    "a0; unrelaxed (bulk-terminated) and relaxed (all ions, BFGS to fmax 0.01 eV/Å). Short "
    "contacts: scripts/zoo/check_short_contacts.py defaults (per element 10 compressed-and-"
    "sheared and 10 pushed-pair 32-atom cells, shortest contact ≥ 0.8 × EMT's d_nn, seed 17); "
    "the largest per-atom force-error norm |F_model − F_EMT| over them."
)


def _fcc(symbol: str):
    return lambda a: bulk(symbol, "fcc", a=a, cubic=True)


def element_checks(symbol: str, calc: MakeCalc) -> dict[str, dict]:
    """Every bulk, defect and surface check of one element: ``{check: comparison leaves}``."""
    a_guess = LATTICE[symbol]
    eos = {
        name: equation_of_state(_fcc(symbol), a_guess, c) for name, c in (("m", calc), ("r", EMT))
    }
    a0 = {k: eos[k]["a0"] for k in eos}
    elastic = {
        k: cubic_elastic_constants(_fcc(symbol)(a0[k]), c) for k, c in (("m", calc), ("r", EMT))
    }
    vacancy = {
        k: vacancy_formation_energies(_fcc(symbol)(a0[k]).repeat(VACANCY_REPEAT), c)
        for k, c in (("m", calc), ("r", EMT))
    }
    surface = {k: fcc111_surface_energy(symbol, a0[k], c) for k, c in (("m", calc), ("r", EMT))}
    return {
        "equation_of_state": compare(eos["m"], eos["r"]),
        "elastic_constants_GPa": compare(elastic["m"], elastic["r"], 2),
        "vacancy_formation_eV": compare(vacancy["m"], vacancy["r"]),
        "surface_energy_111_J_m2": compare(surface["m"], surface["r"]),
    }


def metals_checks(calc: MakeCalc) -> tuple[dict, list[Atoms]]:
    """The card's ``physics_checks`` and its sample structures."""
    checks: dict = {}
    for symbol in LATTICE:
        started = time.perf_counter()
        for check, leaves in element_checks(symbol, calc).items():
            checks.setdefault(check, {})[symbol] = leaves
        summary = {
            c: checks[c][symbol] for c in ("vacancy_formation_eV", "surface_energy_111_J_m2")
        }
        print(symbol, f"{time.perf_counter() - started:.0f} s", summary, flush=True)
    contacts = short_contact_check(calc())
    checks["short_contact_forces"] = {
        el: {
            "max_force_error": measured(row["max_force_error"], "eV/Å"),
            "force_rmse": measured(row["force_rmse_meV_A"], "meV/Å"),
            "worst_configuration": f"{row['kind']}, shortest contact {row['contact_ratio']} d_nn",
        }
        for el, row in contacts["elements"].items()
    }
    checks["notes"] = NOTES
    samples = [
        bulk("Cu", "fcc", a=3.61),
        bulk("Al", "fcc", a=4.05, cubic=True),
        _alloy_sample(),
        Atoms("Pt3", positions=[[0, 0, 0], [2.6, 0, 0], [1.3, 2.2, 0]]),
    ]
    return checks, samples


def _alloy_sample() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.75, cubic=True)
    atoms.set_chemical_symbols(["Au", "Cu", "Cu", "Cu"])
    atoms.positions[1] += [0.05, -0.03, 0.02]
    return atoms
