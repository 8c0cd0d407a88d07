"""Does a metals run fit its own equation-of-state frames? Energy errors and local B per frame.

    OMP_NUM_THREADS=1 python scripts/zoo/eos_frame_errors.py runs/metals-v3-r6-b20-p2 [--element Al]

Set v4 (``generate_metals_v4.py``) holds each element's unrattled equation of state: one-atom
primitive fcc cells at 9 lattice constants a0 × 0.94 … 1.06 (EMT's a0). For the element's EOS
frames of ``data/metals-emt-v4.xyz.xz`` this prints the lattice constant, the frame's role in
the run's split (``RUN/split.json``; "–" without one, e.g. ``models``) and the model's energy
error against EMT (meV/atom; the run's ``metals.json`` in float64); then, between neighbouring
frames, the local bulk modulus B = −V dP/dV (GPa; P = −tr σ / 3, difference quotient of the
two frames' pressures at their mean volume) of EMT's labels and of the model. A model that
misses frames it was trained on is short of capacity or of training there, not of data; a
reference whose local B swings faster than a smooth model can bend shows where.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from ase.units import GPa

from ase_equi import EquivariantCalculator
from ase_equi.data import read_frames

ROOT = Path(__file__).resolve().parents[2]


def local_bulk_moduli(volumes: np.ndarray, pressures: np.ndarray) -> np.ndarray:
    """−V dP/dV between neighbouring volumes (GPa), at their mean volume; inputs in Å³, eV/Å³."""
    slope = np.diff(pressures) / np.diff(volumes)
    return -0.5 * (volumes[1:] + volumes[:-1]) * slope / GPa


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "run", help="a folder with metals.json (a training run's, or models/) and split.json if any"
    )
    parser.add_argument("--element", default="Al")
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = Path(args.run)
    split = json.loads((run / "split.json").read_text()) if (run / "split.json").exists() else {}
    role = {i: kind for kind in ("train", "valid", "test") for i in split.get(kind, [])}
    calc = EquivariantCalculator(str(run / "metals.json"), dtype="float64")
    rows = []  # (a, role, energy error, volume per atom, EMT pressure, model pressure)
    for i, frame in enumerate(read_frames(ROOT / "data" / "metals-emt-v4.xyz.xz")):
        atoms = frame.atoms
        if frame.config_type != "eos" or set(atoms.symbols) != {args.element}:
            continue
        n = len(atoms)
        atoms.calc = calc
        error = 1000 * (atoms.get_potential_energy() - frame.energy) / n
        volume = atoms.get_volume() / n
        a = float(np.cbrt(4.0 * volume))  # fcc: a³/4 per atom
        pressures = -frame.stress[:3].mean(), -atoms.get_stress()[:3].mean()
        rows.append((a, role.get(i, "–"), error, volume, *pressures))
    print("| a (Å) | role | energy error (meV/atom) |\n|---|---|---|")
    for a, kind, error, *_ in rows:
        print(f"| {a:.4f} | {kind} | {error:+.2f} |")
    a, volume, reference, model = (np.array([r[k] for r in rows]) for k in (0, 3, 4, 5))
    b_reference, b_model = local_bulk_moduli(volume, reference), local_bulk_moduli(volume, model)
    print("\n| a (Å), between frames | local B, EMT (GPa) | local B, model (GPa) |\n|---|---|---|")
    for k in range(len(b_reference)):
        print(f"| {a[k]:.4f}–{a[k + 1]:.4f} | {b_reference[k]:.1f} | {b_model[k]:.1f} |")


if __name__ == "__main__":
    main()
