"""User data sets for ``finetune_study.py`` at a level of theory other than their parent's, for
the parents other than ``metals`` (whose sets are EMT with modified parameters, in
``finetune_study.py``).

- ``molecules-gfn2``: the parent ``molecules-pbe`` (PBE/def2-SVP) fine-tuned on **GFN2-xTB**
  (tblite) labels of molecules from its own domain: eight H/C/N/O molecules, snapshots of a
  GFN2-xTB Langevin run at 500 K (20 per molecule, every 10 fs after 1 ps of equilibration,
  seeded). No cell, so no stress labels and no equation of state: the set tests the energy
  and forces of another level of theory, and the forgetting per element on the parent's test
  set.

Silicon (the parent ``silicon-xtb``, GFN1-xTB) has no set: tblite computes GFN2-xTB at the
Γ point only, and the parent's 64-atom cells take 40–80 s per frame here (about 2 h for a set),
while 8-atom cells would carry a Γ-point finite-size error that no local model can learn.
"""

from __future__ import annotations

import sys
from pathlib import Path

import ase.io
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent / "zoo"))
from generate_molecules_pyscf import sample

MOLECULES = ("H2O", "CH3OH", "CH3CH2OH", "H2CO", "CH4", "NH3", "CH3CH2NH2", "HCOOH")
LEVEL = "GFN2-xTB (tblite 0.8), gas phase"


def make_molecules_gfn2(path: Path, seed: int = 0) -> dict:
    """Write the ``molecules-gfn2`` set (extxyz) and return what it holds."""
    rng = np.random.default_rng(seed)
    images = []
    for name in MOLECULES:
        for frame in sample(name, 500, 20, rng, equilibrate=2000, every=20, gfn2_labels=True):
            frame.info.update(config_type=f"{name}_500K", level_of_theory=LEVEL)
            images.append(frame)
    ase.io.write(path, images, format="extxyz")
    return {"molecules": list(MOLECULES), "frames": len(images), "level": LEVEL}


#: set name → (parent zoo model, generator)
OTHER_SETS = {"molecules-gfn2": ("molecules-pbe", make_molecules_gfn2)}
