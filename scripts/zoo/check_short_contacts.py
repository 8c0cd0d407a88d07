"""Largest force error of a metals model against ASE's EMT at short contacts.

    python scripts/zoo/check_short_contacts.py metals [--n 10] [--seed 17] [--min-ratio 0.8]
    python scripts/zoo/check_short_contacts.py runs/metals-v2/metals.json --json out.json

The metals card (``make_card.py metals``) runs :func:`check` with the defaults as its
``short_contact_forces`` check.

For each of Cu, Ag, Au, Ni, Pd, Pt, Al, ``n`` compressed-and-sheared 32-atom fcc cells
(linear scale 0.85-1.0, symmetric shear up to 6 %, rattled by 0.05 Å) and ``n`` cells with one
pair pushed together along its bond (0.80-0.95 × d_nn) are drawn; a configuration is kept only
if its shortest contact is at least ``min_ratio`` × d_nn, where d_nn = a0/√2 at EMT's own
equilibrium lattice constant (Birch–Murnaghan fit). The seed differs from the training data's.

Reports, per element: the largest force error max_i |F_i(model) − F_i(EMT)| (eV/Å, the norm of
the per-atom difference vector) with the kind and shortest contact of that configuration, and
the force RMSE over all components (meV/Å). The issue's target: no error above 0.5 eV/Å.
A last row, outside the target set, repeats the issue's own case: a sheared Ni cell with one
contact at 1.90 Å (0.77 × d_nn).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT

sys.path.insert(0, str(Path(__file__).parent))
from generate_metals_emt import ELEMENTS, LATTICE, pushed_pair, strained
from physics import equation_of_state

from ase_equi import EquivariantCalculator


def shortest_contact(atoms: Atoms) -> float:
    """Shortest interatomic distance (Å), periodic images included."""
    d = atoms.get_all_distances(mic=True)
    np.fill_diagonal(d, np.inf)
    return float(d.min())


def draw(el: str, a0: float, kind: str, rng: np.random.Generator, min_contact: float) -> Atoms:
    """One configuration of ``kind`` ('compressed_sheared' or 'short_pair') whose shortest
    contact is at least ``min_contact`` (Å); redrawn until it is."""
    cell = bulk(el, "fcc", a=a0, cubic=True).repeat(2)
    while True:
        if kind == "compressed_sheared":
            a = strained(cell, rng, volume=0.0, shear=0.06)
            a.set_cell(a.cell.array * rng.uniform(0.85, 1.0), scale_atoms=True)
            a.rattle(0.05, seed=int(rng.integers(1 << 31)))
        else:
            a = strained(cell, rng, volume=0.04, shear=0.03)
            a.rattle(0.03, seed=int(rng.integers(1 << 31)))
            a = pushed_pair(a, rng.uniform(0.80, 0.95), rng)
        if shortest_contact(a) >= min_contact:
            return a


def force_error(atoms: Atoms, calc) -> tuple[float, np.ndarray]:
    """(largest per-atom force-error norm in eV/Å, the [n_atoms, 3] differences)."""
    ref = atoms.copy()
    ref.calc = EMT()
    f_ref = ref.get_forces()
    atoms = atoms.copy()
    atoms.calc = calc
    diff = atoms.get_forces() - f_ref
    return float(np.linalg.norm(diff, axis=1).max()), diff


def issue_case(calc) -> dict:
    """The issue's sheared Ni cell (shear 4 %) with atom 0 and its nearest neighbour pushed
    together along their bond to exactly 1.90 Å."""
    a = bulk("Ni", "fcc", a=LATTICE["Ni"], cubic=True).repeat(2)
    a.set_cell(a.cell.array @ (np.eye(3) + np.array([[0, 0.04, 0], [0, 0, 0], [0, 0, 0]])), True)
    d = a.get_distances(0, range(len(a)), mic=True, vector=True)
    r = np.linalg.norm(d, axis=1)
    r[0] = np.inf
    j = int(np.argmin(r))
    shift = 0.5 * (r[j] - 1.90) * d[j] / r[j]
    a.positions[0] += shift
    a.positions[j] -= shift
    err, _ = force_error(a, calc)
    return {"shortest_contact_A": round(shortest_contact(a), 3), "max_force_error": err}


def check(calc, n: int = 10, seed: int = 17, min_ratio: float = 0.8) -> dict:
    """Largest force error and force RMSE per element against EMT (see the module docstring)
    of the ASE calculator ``calc`` (one instance, reused for every configuration)."""
    rng = np.random.default_rng(seed)
    rows = {}
    for el in ELEMENTS:
        a0 = equation_of_state(lambda a, el=el: bulk(el, "fcc", a=a, cubic=True), LATTICE[el], EMT)
        d_nn = a0["a0"] / np.sqrt(2.0)
        worst, diffs = {"max_force_error": -1.0}, []
        for kind in ("compressed_sheared", "short_pair"):
            for _ in range(n):
                atoms = draw(el, a0["a0"], kind, rng, min_ratio * d_nn)
                err, diff = force_error(atoms, calc)
                diffs.append(diff)
                if err > worst["max_force_error"]:
                    contact = shortest_contact(atoms)
                    worst = {"max_force_error": err, "kind": kind, "contact_ratio": contact / d_nn}
        rmse = 1000.0 * float(np.sqrt(np.mean(np.concatenate(diffs) ** 2)))
        worst["contact_ratio"] = round(float(worst["contact_ratio"]), 4)
        rows[el] = {"d_nn_A": round(float(d_nn), 4), "force_rmse_meV_A": round(rmse, 1), **worst}
        print(el, rows[el], flush=True)
    return {"configurations_per_element": 2 * n, "min_ratio": min_ratio, "elements": rows}


def markdown(result: dict, issue: dict) -> str:
    lines = [
        "| element | d_nn (Å) | largest force error (eV/Å) | worst config | its shortest "
        "contact / d_nn | force RMSE (meV/Å) |",
        "|---|---|---|---|---|---|",
    ]
    for el, r in result["elements"].items():
        lines.append(
            f"| {el} | {r['d_nn_A']:.3f} | {r['max_force_error']:.3f} | {r['kind']} | "
            f"{r['contact_ratio']:.3f} | {r['force_rmse_meV_A']:.0f} |"
        )
    worst = max(r["max_force_error"] for r in result["elements"].values())
    lines.append(f"\nlargest over all elements: {worst:.3f} eV/Å (target ≤ 0.5)")
    lines.append(
        f"issue's case, Ni with a {issue['shortest_contact_A']:.2f} Å contact: "
        f"{issue['max_force_error']:.3f} eV/Å"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="zoo name or model file")
    parser.add_argument("--n", type=int, default=10, help="configurations per kind and element")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--min-ratio", type=float, default=0.8, help="shortest contact / d_nn")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    args = parser.parse_args()
    if args.n < 1 or not 0.5 <= args.min_ratio <= 1.0:
        parser.error("--n must be ≥ 1 and --min-ratio within [0.5, 1.0]")
    result = check(EquivariantCalculator(args.model), args.n, args.seed, args.min_ratio)
    issue = issue_case(EquivariantCalculator(args.model))
    result["issue_case_Ni"] = issue
    print(markdown(result, issue))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
