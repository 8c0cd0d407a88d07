"""The equation of state of one structure of the new data, before and after fine-tuning.

Where the new data hold a volume scan (at least five frames of the same periodic structure,
the cell scaled isotropically, the fractional positions the same), a Birch–Murnaghan fit of
E(V) gives the equilibrium lattice constant ``a0`` (Å, the length of the first cell vector
at V0) and the bulk modulus ``B`` (GPa) of the labels, of the parent after the E0 refit
("before") and of the fine-tuned model ("after").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from ase.units import GPa

from ..data.frames import Frame
from ..model.mace import MaceModel
from .adaptation import predict_energies

MIN_POINTS = 5


def _key(frame: Frame) -> tuple | None:
    """Frames of one isotropic volume scan share this key (None: not a periodic bulk cell)."""
    atoms = frame.atoms
    if not atoms.pbc.all() or atoms.cell.rank != 3:
        return None
    shape = np.asarray(atoms.cell) / atoms.get_volume() ** (1 / 3)
    fractional = atoms.get_scaled_positions(wrap=True)
    return (
        tuple(atoms.numbers),
        tuple(np.round(shape, 4).ravel()),
        tuple(np.round(fractional, 4).ravel()),
    )


def find_volume_scan(frames: Sequence[Frame]) -> list[Frame]:
    """The largest volume scan in ``frames`` (sorted by volume), or [] when none has five
    distinct volumes."""
    groups: dict[tuple, list[Frame]] = {}
    for f in frames:
        key = _key(f)
        if key is not None:
            groups.setdefault(key, []).append(f)
    best: list[Frame] = []
    for members in groups.values():
        volumes = {round(f.atoms.get_volume(), 6) for f in members}
        if len(volumes) >= MIN_POINTS and len(members) > len(best):
            best = members
    return sorted(best, key=lambda f: f.atoms.get_volume())


def fit_eos(frames: Sequence[Frame], energies: np.ndarray) -> dict[str, float]:
    """``{"a0": Å, "B": GPa, "V0": Å³}`` of a Birch–Murnaghan fit to ``energies`` (eV)."""
    from ase.eos import EquationOfState

    volumes = np.array([f.atoms.get_volume() for f in frames])
    v0, _, b = EquationOfState(volumes, np.asarray(energies), eos="birchmurnaghan").fit()
    ref = frames[0].atoms
    a0 = float(np.linalg.norm(ref.cell[0]) * (v0 / ref.get_volume()) ** (1 / 3))
    return {"a0": a0, "B": float(b / GPa), "V0": float(v0)}


def eos_report(
    frames: Sequence[Frame], before: MaceModel, after: MaceModel
) -> dict[str, Any] | None:
    """Lattice constant and bulk modulus of the labels, ``before`` and ``after`` on the volume
    scan of ``frames`` (None without one), with the E(V) points for a plot."""
    scan = find_volume_scan(frames)
    if not scan:
        return None
    energies = {
        "labels": np.array([f.energy for f in scan]),
        "before": predict_energies(before, scan),
        "after": predict_energies(after, scan),
    }
    out: dict[str, Any] = {
        "formula": scan[0].atoms.get_chemical_formula(),
        "n_frames": len(scan),
        "volumes": [f.atoms.get_volume() for f in scan],
        "energies": {k: v.tolist() for k, v in energies.items()},
    }
    for name, values in energies.items():
        try:
            out[name] = fit_eos(scan, values)
        except (RuntimeError, ValueError) as err:  # no minimum inside the scan
            out[name] = {"error": f"no fit: {err}"}
    for name in ("before", "after"):
        if "a0" in out[name] and "a0" in out["labels"]:
            out[name]["a0_error_percent"] = 100 * (out[name]["a0"] / out["labels"]["a0"] - 1)
            out[name]["B_error_percent"] = 100 * (out[name]["B"] / out["labels"]["B"] - 1)
    return out
