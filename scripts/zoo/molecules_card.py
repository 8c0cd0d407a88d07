"""The ``molecules-pbe`` card's checks against PBE/def2-SVP (PySCF, the training data's settings).

- the training run's test-set errors (energy MAE in meV/atom, force MAE in meV/Å);
- harmonic frequencies of two training molecules (H2O, H2CO), each calculator at its own
  minimum, the PBE Hessian by finite differences (cached: :class:`reference_cache.ReferenceCache`);
- when ``data/molecules-pbe-frequencies.json`` exists (``generate_molecules_v2.py``): the
  frequencies of the held-out molecules against its analytic PBE/def2-SVP ones, the model
  relaxing its own geometry from the PBE minimum first.

Frequencies are paired in ascending order (the i-th lowest model mode with the i-th lowest
reference mode), both sides keeping 3N − 6 modes (3N − 5 if linear), an imaginary mode as a
negative wavenumber. The overall MAE pools every mode of every molecule.
"""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import molecule
from generate_molecules_pyscf import PBE
from generate_molecules_v2 import FREQUENCY_MOLECULES
from physics import MakeCalc, harmonic_frequencies
from reference_cache import ReferenceCache
from targets import measured

ROOT = Path(__file__).resolve().parents[2]
FREQUENCIES = ROOT / "data" / "molecules-pbe-frequencies.json"
TRAINING_MOLECULES = ("H2O", "H2CO")
NOTES = (
    "Test-set errors: the training run's test split. Frequencies: each calculator relaxes the "
    "molecule itself (BFGS, fmax 1e-3 eV/Å), then its Hessian (model: central differences of "
    "forces, ±0.005 Å); modes paired in ascending order; 3N−6 (3N−5 linear) modes, imaginary "
    "as negative. Training molecules H2O, H2CO: PBE Hessian by the same finite differences. "
    "Held-out molecules (data/molecules-pbe-frequencies.json): analytic PBE/def2-SVP Hessian "
    "at the PBE minimum; the model starts from that geometry. Overall MAE over all modes."
)


def frequency_errors(model: list[float], reference: list[float]) -> np.ndarray:
    """Model − reference (cm⁻¹) of modes paired in ascending order; the two lists must have
    the same length (the same molecule's vibrations).

    >>> frequency_errors([3000.0, 1000.0], [990.0, 3020.0]).tolist()
    [10.0, -20.0]
    """
    if len(model) != len(reference):
        raise ValueError(
            f"cannot pair {len(model)} model frequencies with {len(reference)} reference ones"
        )
    return np.sort(np.asarray(model, float)) - np.sort(np.asarray(reference, float))


def test_set_errors(test_errors: dict) -> dict:
    """The run's test-set MAEs as measurement leaves (meV/atom, meV/Å)."""
    if "energy_mae" not in test_errors:
        return {}
    out = {"energy_MAE": measured(test_errors["energy_mae"], "meV/atom")}
    if "forces_mae" in test_errors:
        out["forces_MAE"] = measured(test_errors["forces_mae"], "meV/Å")
    return {"test frames": out}


def training_molecules(calc: MakeCalc, cache: ReferenceCache) -> dict:
    """H2O and H2CO: model and (cached) finite-difference PBE frequencies."""
    rows = {}
    tag = f"PySCF {version('pyscf')} PBE/def2-SVP | G2 {{}} relaxed fmax 1e-3, FD ±0.005 Å"
    for name in TRAINING_MOLECULES:
        w_m = harmonic_frequencies(molecule(name), calc)
        w_r = cache.get(tag.format(name), lambda n=name: harmonic_frequencies(molecule(n), PBE))
        err = frequency_errors(w_m, w_r)
        rows[name] = {
            "frequencies": {
                "model": [round(w, 1) for w in w_m],
                "reference": [round(w, 1) for w in w_r],
            },
            "max_abs_deviation": measured(np.abs(err).max(), "cm⁻¹"),
            "molecule_MAE": measured(np.abs(err).mean(), "cm⁻¹"),
        }
        print(name, rows[name], flush=True)
    return rows


def held_out_molecules(calc: MakeCalc, elements: list[int], path: Path = FREQUENCIES) -> dict:
    """Every molecule of ``path`` whose elements the model has: per-molecule MAE, and the
    pooled MAE over all their modes (its subject says how many of the file's molecules it
    pools); {} when the file is absent."""
    if not path.exists():
        print(f"no {path.name}: held-out frequencies not measured", flush=True)
        return {}
    records = json.loads(path.read_text())["molecules"]
    rows: dict = {}
    errors = []
    for record in records:
        atoms = Atoms(record["symbols"], positions=record["positions_A"])
        if not set(atoms.numbers) <= set(elements):
            rows[record["name"]] = {"skipped": "an element the model does not have"}
            continue
        w_m = harmonic_frequencies(atoms, calc)
        err = frequency_errors(w_m, record["frequencies_cm1"])
        errors.append(err)
        rows[record["name"]] = {
            "frequencies": {
                "model": [round(w, 1) for w in w_m],
                "reference": [round(w, 1) for w in record["frequencies_cm1"]],
            },
            "molecule_MAE": measured(np.abs(err).mean(), "cm⁻¹"),
        }
        print(record["name"], rows[record["name"]]["molecule_MAE"], flush=True)
    if errors:
        pooled = np.abs(np.concatenate(errors))
        planned = len(FREQUENCY_MOLECULES)  # the held-out set of generate_molecules_v2.py
        rows[f"pooled over {len(errors)} of the {planned} held-out molecules"] = {
            "MAE": measured(pooled.mean(), "cm⁻¹"),
            "molecules": measured(len(errors)),
            "modes": measured(len(pooled)),
        }
    return rows


def molecules_checks(
    calc: MakeCalc, cache: ReferenceCache, test_errors: dict, elements: list[int]
) -> tuple[dict, list]:
    """The card's ``physics_checks`` and its sample structures."""
    checks: dict = {
        "test_set_errors": test_set_errors(test_errors),
        "training_molecule_frequencies_cm-1": training_molecules(calc, cache),
    }
    held_out = held_out_molecules(calc, elements)
    if held_out:
        checks["harmonic_frequencies_cm-1"] = held_out
    checks["notes"] = NOTES
    samples = [molecule("H2O"), molecule("CH3OH"), molecule("CH3CH2OH")]
    return checks, samples
