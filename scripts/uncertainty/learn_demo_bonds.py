"""Did a molecules demonstration run break a bond? For every run folder of
``learn_demo_molecules.py`` (``runs/learn_demo/molecules-pbe-*/{on_the_fly,every_nth}``), the
longest of the start structure's bonds (pairs closer than 1.6 Å in ``three_molecules()``) in
the run's last state and in its labelled structures.

    python scripts/uncertainty/learn_demo_bonds.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from ase.io import read
from learn_demo_molecules import three_molecules

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    start, _ = three_molecules()
    d = start.get_all_distances()
    bonds = [(i, j) for i in range(len(start)) for j in range(i + 1, len(start)) if d[i, j] < 1.6]

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
