"""Reference data for ``metals`` set v4: set v3 plus each element's unrattled equation of state
and its perfect host cells at EMT's own lattice constant.

    export OMP_NUM_THREADS=1
    python scripts/zoo/generate_metals_v4.py      # → data/metals-emt-v4.xyz.xz (seconds)

Why: the strain-pair loss (``strain_pairs.py``, stage 5) pins the slope of the stress between
homogeneously strained copies of one structure. Set v3 has such copies only within ±1.5 % of
``a0``; the equation of state over ±5 % in ``a`` was seen through rattled cells only, and a
stage-5 model with exact elastic constants had Al's bulk modulus from the E(V) fit 4.5 % high.
Set v3's vacancies at ``a0`` had no perfect crystal of the same cell beside them, so their
formation energy (a 1 eV difference of two ~400 eV totals) was never a quantity the loss saw
(every element's vacancy energy came out 1.5–6 % low). Set v4 adds, for each of the seven
metals at EMT's ``a0`` (:func:`generate_metals_v3.emt_lattice_constant`):

- the one-atom fcc cell scaled by 0.94, 0.955, … 1.06 (nine unrattled frames; the card's EOS
  check scales the *table* lattice constant by 0.95 … 1.05 in eleven steps: other cells);
- the perfect 32- and 108-atom cubic cells (2×2×2, 3×3×3), unrattled, the hosts of set v3's
  vacancy cells.

Frames are labelled as in v2 (energy, forces, stress) and appended after set v3's, so a split
of v3 extends to v4 frame for frame (:func:`ase_equi.training.checkpoint.extended_split`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.io import read, write
from generate_metals_emt import ELEMENTS, label
from generate_metals_v3 import emt_lattice_constant

ROOT = Path(__file__).resolve().parents[2]
V3_DATA = ROOT / "data" / "metals-emt-v3.xyz.xz"
OUT = ROOT / "data" / "metals-emt-v4.xyz.xz"
EOS_SCALES = np.linspace(0.94, 1.06, 9)


def element_block(el: str) -> list[Atoms]:
    a0 = emt_lattice_constant(el)
    frames = [label(bulk(el, "fcc", a=a0 * s), "eos") for s in EOS_SCALES]
    cubic = bulk(el, "fcc", a=a0, cubic=True)
    frames += [label(cubic.repeat(n), "vacancy_host") for n in (2, 3)]
    return frames


def main() -> None:
    start = time.perf_counter()
    frames = read(V3_DATA, index=":")
    n_v3 = len(frames)
    for el in ELEMENTS:
        frames += element_block(el)
    write(OUT, frames, format="extxyz")
    print(
        f"wrote {len(frames)} frames ({len(frames) - n_v3} new after v3's {n_v3}) to "
        f"{OUT.relative_to(ROOT)} in {time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
