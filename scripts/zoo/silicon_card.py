"""The ``silicon-xtb`` card's checks against GFN1-xTB (tblite, the training data's settings).

All in the 64-atom cubic diamond cell (2×2×2 conventional cells, Γ point, as the training
data), each calculator at its own lattice constant: equation of state, clamped-ion C11/C12/C44
and relaxed-ion C44, the vacancy (unrelaxed and relaxed) and the split-⟨110⟩ interstitial
(relaxed), cell fixed. MD stability comes from ``md_stability.py`` (its JSON), the model only.
GFN1-xTB results are cached (:class:`reference_cache.ReferenceCache`): one GFN1-xTB call on
64 atoms takes seconds to tens of seconds on one core.
"""

from __future__ import annotations

import json
import time
from importlib.metadata import version
from pathlib import Path

from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from defects import interstitial_formation_energy, vacancy_formation_energies
from generate_silicon_xtb import A0, label
from physics import MakeCalc, cubic_elastic_constants, equation_of_state, relaxed_ion_c44
from reference_cache import ReferenceCache
from targets import compare, measured

EOS_SPAN = 0.04
VACANCY_FMAX = 0.02  # eV/Å
INTERSTITIAL_FMAX = 0.02  # eV/Å
C44_FMAX = 0.005  # eV/Å
MD_TEMPERATURES = (300.0, 1200.0)  # K, issue 17
MD_PS = 50.0  # a shorter run is never judged stable
NOTES = (
    "64-atom diamond cell (GFN1-xTB at the Γ point, as in the training data), each calculator "
    "at its own a0. EOS: Birch–Murnaghan over a0·(1±4 %). Elastic constants: central "
    "differences of stress at ±0.5 % strain; clamped-ion C11, C12, C44 and relaxed-ion C44 "
    f"(ions relaxed in each sheared cell, BFGS to fmax {C44_FMAX} eV/Å; in diamond C11 and C12 "
    "have no internal strain). Vacancy: atom 0 removed, cell fixed, E(N−1) − (N−1)/N·E(N); "
    f"unrelaxed, and relaxed (BFGS to fmax {VACANCY_FMAX} eV/Å). Split-⟨110⟩ interstitial: "
    "atom 0 replaced by a [110] dumbbell of half-length 1.1 Å, relaxed (BFGS to fmax "
    f"{INTERSTITIAL_FMAX} eV/Å), E(N+1) − (N+1)/N·E(N). MD: scripts/zoo/md_stability.py."
)


class GFN1xTB(Calculator):
    """GFN1-xTB exactly as the training data were labelled (``generate_silicon_xtb.label``):
    energy (eV), forces (eV/Å), stress (eV/Å³) from one call."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        labelled = label(self.atoms, "card")
        self.results = {
            "energy": labelled.get_potential_energy(),
            "free_energy": labelled.get_potential_energy(),
            "forces": labelled.get_forces(),
            "stress": labelled.get_stress(),
        }


def crystal(a: float) -> Atoms:
    """The 64-atom cubic diamond cell at lattice constant ``a`` (Å)."""
    return bulk("Si", "diamond", a=a, cubic=True).repeat(2)


def measure(calc: MakeCalc, get) -> dict[str, dict]:
    """Every static check with ``calc``; ``get(key, compute)`` caches (reference) or computes
    (model). Keys name the quantity and settings; the a0 a quantity is taken at is in its key."""
    eos = get(
        f"EOS 64-atom diamond, a {A0}·(1±{EOS_SPAN}), 11 points",
        lambda: equation_of_state(crystal, A0, calc, span=EOS_SPAN),
    )
    a0 = eos["a0"]
    at = f"at a0 = {a0:.6f} Å"
    clamped = get(
        f"clamped-ion C11 C12 C44, ±0.5 % {at}", lambda: cubic_elastic_constants(crystal(a0), calc)
    )
    c44 = get(
        f"relaxed-ion C44, ±0.5 %, fmax {C44_FMAX} {at}",
        lambda: relaxed_ion_c44(crystal(a0), calc, fmax=C44_FMAX),
    )
    vacancy = get(
        f"vacancy, atom 0, fmax {VACANCY_FMAX} {at}",
        lambda: vacancy_formation_energies(crystal(a0), calc, fmax=VACANCY_FMAX),
    )
    inter = get(
        f"split-110 interstitial, half-length 1.1, fmax {INTERSTITIAL_FMAX} {at}",
        lambda: interstitial_formation_energy(crystal(a0), calc, fmax=INTERSTITIAL_FMAX),
    )
    return {
        "eos": eos,
        "clamped": clamped,
        "c44": {"C44": c44},
        "vacancy": vacancy,
        "inter": inter,
    }


def md_check(path: Path, weights_sha256: str) -> dict | None:
    """The ``md_stability`` check from ``md_stability.py``'s JSON, or None if there is none
    or it was run with other weights than ``weights_sha256``."""
    if not path.exists():
        print(f"no MD results ({path}): run scripts/zoo/md_stability.py first", flush=True)
        return None
    result = json.loads(path.read_text())
    if result["weights_sha256"] != weights_sha256:
        print(f"{path} is of another model (weights hash): MD not on the card", flush=True)
        return None
    runs = {f"{r['temperature_K']:.0f} K": r for r in result["runs"]}
    out: dict = {}
    for temperature in MD_TEMPERATURES:
        key = f"{temperature:.0f} K"
        if key not in runs:
            out[key] = {"stable": measured(False), "note": "no run at this temperature"}
            continue
        r = runs[key]
        long_enough = r["complete"] and r["simulated_ps"] >= MD_PS
        out[key] = {
            "stable": measured(bool(long_enough and r["stable"])),
            "simulated_ps": measured(r["simulated_ps"], "ps"),
            "shortest_contact": measured(r["shortest_contact_A"], "Å"),
            "mean_temperature": measured(r["mean_temperature_K"], "K"),
            "rdf_first_peak": measured(r["rdf_first_peak_A"], "Å"),
            "mean_coordination": measured(r["mean_coordination"], "within 3.0 Å"),
        }
        if not long_enough:
            out[key]["note"] = f"shorter than the {MD_PS:g} ps the target asks for"
    return out


def silicon_checks(
    calc: MakeCalc, cache: ReferenceCache, md_results: Path, weights_sha256: str
) -> tuple[dict, list]:
    """The card's ``physics_checks`` and its sample structures."""
    started = time.perf_counter()
    tag = f"GFN1-xTB tblite {version('tblite')} | "
    reference = measure(GFN1xTB, lambda key, compute: cache.get(tag + key, compute))
    print(f"GFN1-xTB references: {time.perf_counter() - started:.0f} s", flush=True)
    model = measure(calc, lambda key, compute: compute())
    print(f"all static checks: {time.perf_counter() - started:.0f} s", flush=True)
    inter_m, inter_r = model["inter"], reference["inter"]
    checks = {
        "equation_of_state": {"Si": compare(model["eos"], reference["eos"])},
        "elastic_constants_GPa": {
            "Si (clamped-ion)": compare(model["clamped"], reference["clamped"], 2),
            "Si (relaxed-ion)": compare(model["c44"], reference["c44"], 2),
        },
        "vacancy_formation_eV": {"Si": compare(model["vacancy"], reference["vacancy"])},
        "interstitial_formation_eV": {
            "Si split-<110>": {
                **compare({"relaxed": inter_m["relaxed"]}, {"relaxed": inter_r["relaxed"]}),
                "dumbbell_length_A": {
                    "model": round(inter_m["dumbbell_length_A"], 3),
                    "reference": round(inter_r["dumbbell_length_A"], 3),
                },
            }
        },
        "notes": NOTES,
    }
    md = md_check(md_results, weights_sha256)
    if md is not None:
        checks["md_stability"] = md
    samples = [crystal(A0), bulk("Si", "diamond", a=5.6, cubic=True)]
    samples[1].positions[0] += [0.1, 0.0, -0.05]
    return checks, samples
