"""How wrong, and how uncertain, is the zoo's ``metals`` model on structure types its data
lack? EMT Langevin MD of six of them, the model's errors and both LLPR force estimates.

    OMP_NUM_THREADS=1 python scripts/uncertainty/unseen_structures_scan.py

The data of ``metals`` hold fcc crystals, random fcc alloys, surfaces, vacancies, clusters
and liquids (its card). Here: B2 NiAl, L1₀ CuAu, hcp Pt, bcc Cu, L1₂ Cu₃Au and L1₂ Ag₃Cu
(the lattice constants set by hand near EMT's: a strained start the MD relaxes), 2 fs
Langevin at 900 K (friction 0.02 in ASE's units, about 0.002 /fs; seed 0), a frame every 40
steps after 40, 8 frames per structure labelled by EMT. Per structure: the model's force
RMSE (eV/Å) and the mean over the frames of the largest atomic ``forces_uncertainty`` of
the shipped estimate (threshold: its card's validation p95) and, when
``runs/llpr-jacobian/metals.json`` is there (``llpr_rank_form.py metals --write
runs/llpr-jacobian``), of the rank-4 Jacobian form (its own card's p95). Writes
``benchmarks/results/2026-12-03-metals-unseen-structures.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md.langevin import Langevin

from ase_equi import EquivariantCalculator

ROOT = Path(__file__).resolve().parents[2]
JACOBIAN = ROOT / "runs" / "llpr-jacobian" / "metals.json"
OUT = ROOT / "benchmarks" / "results" / "2026-12-03-metals-unseen-structures.json"


def structures() -> dict[str, Atoms]:
    """The six structure types (start cells)."""
    b2 = bulk("Ni", "bcc", a=2.86, cubic=True)
    b2.numbers[1] = 13
    l10 = bulk("Cu", "fcc", a=3.75, cubic=True)
    l10.numbers[[0, 1]] = 79
    cu3au = bulk("Cu", "fcc", a=3.71, cubic=True)
    cu3au.numbers[0] = 79
    ag3cu = bulk("Ag", "fcc", a=4.09, cubic=True)
    ag3cu.numbers[0] = 29
    return {
        "B2 NiAl": b2.repeat(3),
        "L1_0 CuAu": l10.repeat(2),
        "hcp Pt": bulk("Pt", "hcp", a=2.77, c=4.52).repeat((3, 3, 2)),
        "bcc Cu": bulk("Cu", "bcc", a=2.87, cubic=True).repeat(3),
        "L1_2 Cu3Au": cu3au.repeat(2),
        "L1_2 Ag3Cu": ag3cu.repeat(2),
    }


def threshold(calc: EquivariantCalculator) -> float:
    """The validation p95 of the largest atomic force uncertainty on ``calc``'s model card."""
    card = calc.loaded.card
    return float(card["uncertainty"]["uncertainty_threshold_eV_per_A"]["valid_p95"])


def main() -> None:
    torch.set_num_threads(1)
    estimates = {"shipped": "metals"}
    if JACOBIAN.is_file():
        estimates["jacobian_rank4"] = str(JACOBIAN)
    calcs = {k: EquivariantCalculator(v) for k, v in estimates.items()}
    result = {
        "command": "OMP_NUM_THREADS=1 python scripts/uncertainty/unseen_structures_scan.py",
        "md": (
            "EMT Langevin 2 fs, 900 K, friction 0.02 (ASE units), seed 0; 8 frames every 40 steps"
        ),
        "thresholds_valid_p95_eV_per_A": {k: threshold(c) for k, c in calcs.items()},
        "structures": {},
    }
    for name, atoms in structures().items():
        atoms.calc = EMT()
        dyn = Langevin(
            atoms, 2 * units.fs, temperature_K=900, friction=0.02, rng=np.random.default_rng(0)
        )
        sq, largest = [], {k: [] for k in calcs}
        for _ in range(8):
            dyn.run(40)
            reference = atoms.get_forces()
            for key, calc in calcs.items():
                copy = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=True)
                copy.calc = calc
                if key == "shipped":
                    sq.append(np.mean((copy.get_forces() - reference) ** 2))
                largest[key].append(float(calc.get_property("forces_uncertainty", copy).max()))
        row = {
            "atoms": len(atoms),
            "force_rmse_eV_per_A": float(np.sqrt(np.mean(sq))),
            **{f"mean_largest_u_{k}": float(np.mean(v)) for k, v in largest.items()},
        }
        result["structures"][name] = row
        print(name, row, flush=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
