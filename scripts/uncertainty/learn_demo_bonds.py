"""Did a molecules demonstration run break a bond? For every run folder of
``learn_demo_molecules.py`` (``runs/learn_demo/molecules-pbe-*/{on_the_fly,every_nth}``), the
longest of the start structure's bonds (pairs closer than 1.6 Å in ``three_molecules()``) in
the run's last state and in its labelled structures.

    python scripts/uncertainty/learn_demo_bonds.py

``--ring-opening``: the every-N-th run of ``--rate-ceiling 0.01`` replayed (the same start and
MD: 100 steps with the parent, then its model after the first call), oxirane's C–C distance
and the largest atomic force uncertainty (of that model and of the parent) every 5 steps up to
step 195, where its next call failed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from ase.io import read
from learn_demo_molecules import start_bonds, three_molecules

ROOT = Path(__file__).resolve().parents[2]


def ring_opening() -> None:
    from ase import units
    from ase.md.verlet import VelocityVerlet
    from learn_demo_molecules import with_momenta

    from ase_equi import EquivariantCalculator

    run = ROOT / "runs/learn_demo/molecules-pbe-paced-rate-ceiling0.01/every_nth"
    start, parts = three_molecules()
    atoms = with_momenta(start, parts, 900.0, 0)
    parent = EquivariantCalculator("molecules-pbe")
    atoms.calc = parent
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    dyn.run(100)
    for step in range(100, 200):
        if step == 100:
            atoms.calc = EquivariantCalculator(str(run / "model-1.json"))
        else:
            dyn.run(1)
        if step % 5 == 0 or step == 101:
            u = float(atoms.calc.get_property("forces_uncertainty", atoms).max())
            seen = atoms.copy()
            seen.calc = parent
            u0 = float(parent.get_property("forces_uncertainty", seen).max())
            print(
                f"step {step}: C-C {atoms.get_distance(0, 2):.2f} Å, max sigma_F {u:.3f} eV/Å "
                f"(the parent's on the same structure: {u0:.3f})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ring-opening", action="store_true", help="see the docstring")
    if parser.parse_args().ring_opening:
        ring_opening()
        return
    bonds = start_bonds(three_molecules()[0])

    def longest(positions: np.ndarray) -> float:
        p = np.asarray(positions)
        return max(float(np.linalg.norm(p[i] - p[j])) for i, j in bonds)

    for folder in sorted((ROOT / "runs" / "learn_demo").glob("molecules-pbe-*/*/")):
        if not (folder / "state.json").exists():
            continue
        state = json.loads((folder / "state.json").read_text())
        learned = folder / "learned.xyz"
        frames = read(learned, ":") if learned.exists() else []
        in_learned = max((longest(f.positions) for f in frames), default=float("nan"))
        print(
            f"{folder.relative_to(ROOT)}: step {state['step']}, longest bond (Å): last state "
            f"{longest(state['positions']):.2f}, labelled structures {in_learned:.2f}"
        )


if __name__ == "__main__":
    main()
