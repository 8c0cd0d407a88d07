"""Reference data for ``silicon-xtb`` set v3: set v2 plus the crystal under small homogeneous
strains and the unrelaxed vacancy, at GFN1-xTB (tblite, Γ point). Resumable.

    export OMP_NUM_THREADS=1
    python scripts/zoo/generate_silicon_v3.py labels    # runs/silicon-xtb-v3/parts/*.xyz
    python scripts/zoo/generate_silicon_v3.py combine   # data/silicon-gfn1xtb-v3.xyz.xz

Why: the v2 model's clamped-ion C11 / C12 / C44 were −17 / +18 / −15 % off GFN1-xTB while its
bulk modulus was within 5 %: sets v1 and v2 strain the crystal by up to ±10 % in volume and
4 % in shear and rattle it by up to 0.15 Å, so the shape of the small-strain response is
drowned in the rattling's stress. Set v3 adds, at GFN1-xTB's lattice constant (``A0``), the
64-atom crystal (not rattled, ions at their ideal sites: clamped-ion) under

- 16 random homogeneous strains, every component of the symmetric strain uniform in ±1.5 %;
- pure uniaxial (ε_xx) and pure shear (ε_yz) strains of ±0.75 % and ±1.5 % (the card's
  elastic check strains by ±0.5 %: its configurations are not trained on);

and the unrelaxed vacancy (63 atoms) at ``A0`` and at ``A0`` × (1 ± 1 %). A GFN1-xTB call on
64 Si atoms takes 15–40 s on one core: 27 calls in all. Every block of frames is its own part
file, written atomically when complete; the same command resumes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read, write

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate_metals_v3 import homogeneously_strained, pure_strains, random_strain
from generate_silicon_v2 import write_blocks
from generate_silicon_xtb import A0, crystal, label

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "runs" / "silicon-xtb-v3"
V2_DATA = ROOT / "data" / "silicon-gfn1xtb-v2.xyz.xz"
OUT = ROOT / "data" / "silicon-gfn1xtb-v3.xyz.xz"


def unrelaxed_vacancy(a: float) -> Atoms:
    atoms = crystal(a)
    del atoms[0]
    return atoms


def blocks() -> dict[str, list[tuple[Atoms, str]]]:
    """Name → the (unlabelled structure, config_type) pairs of that block."""
    rng = np.random.default_rng([0, 3])
    strains = [random_strain(rng, 0.015) for _ in range(16)]
    table = {
        f"strained_{k}": [(homogeneously_strained(crystal(), e), "elastic") for e in strains[k::4]]
        for k in range(4)
    }
    table["pure_strains"] = [
        (homogeneously_strained(crystal(), e), "elastic") for e in pure_strains()
    ]
    table["vacancy_unrelaxed"] = [
        (unrelaxed_vacancy(A0 * s), "vacancy_unrelaxed") for s in (1.0, 0.99, 1.01)
    ]
    return table


def make_labels() -> None:
    write_blocks(
        {
            name: lambda seed, pairs=pairs: [label(atoms, kind) for atoms, kind in pairs]
            for name, pairs in blocks().items()
        },
        RUN / "parts",
    )


def combine() -> None:
    """Set v2's frames, then every block of :func:`blocks` in order → ``OUT``."""
    frames = list(read(V2_DATA, ":"))
    n_v2 = len(frames)
    for name in blocks():
        part = RUN / "parts" / f"{name}.xyz"
        if not part.exists():
            raise SystemExit(f"{part.relative_to(ROOT)} is missing: run the labels stage first")
        frames.extend(read(part, ":"))
    write(OUT, frames, format="extxyz")
    print(f"{len(frames)} frames ({len(frames) - n_v2} after v2's {n_v2}) → {OUT.name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=["labels", "combine"])
    args = parser.parse_args()
    make_labels() if args.stage == "labels" else combine()


if __name__ == "__main__":
    main()
