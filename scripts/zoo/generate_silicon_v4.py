"""Reference data for ``silicon-xtb`` set v4: set v3 plus the perfect crystal (64 atoms,
GFN1-xTB as in v1–v3) at ``A0`` and at ``A0`` × (1 ± 1 %), the hosts of the vacancy and
interstitial cells of sets v2 and v3 (the same cells), so that a defect's formation energy is a
difference of two committed frames (``defect_pairs.py``).

    export OMP_NUM_THREADS=1
    python scripts/zoo/generate_silicon_v4.py      # → data/silicon-gfn1xtb-v4.xyz.xz (minutes)
"""

from __future__ import annotations

import sys
from pathlib import Path

from ase.io import read, write

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate_silicon_xtb import A0, crystal, label

ROOT = Path(__file__).resolve().parents[2]
V3_DATA = ROOT / "data" / "silicon-gfn1xtb-v3.xyz.xz"
OUT = ROOT / "data" / "silicon-gfn1xtb-v4.xyz.xz"


def main() -> None:
    frames = list(read(V3_DATA, ":"))
    n_v3 = len(frames)
    frames += [label(crystal(A0 * s), "vacancy_host") for s in (1.0, 0.99, 1.01)]
    write(OUT, frames, format="extxyz")
    print(f"{len(frames)} frames ({len(frames) - n_v3} after v3's {n_v3}) → {OUT.name}")


if __name__ == "__main__":
    main()
