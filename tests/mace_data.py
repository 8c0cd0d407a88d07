"""The MACE reference files in tests/fixtures/mace, decompressed on first use.

The ``.model`` files are stored xz-compressed (their symmetric-contraction U matrices are sparse);
each test process decompresses the ones it needs into one temporary folder.
"""

from __future__ import annotations

import functools
import json
import lzma
import tempfile
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

DATA = Path(__file__).parent / "fixtures" / "mace"
NAMES = sorted(
    p.name.removesuffix(".model.xz")
    for p in DATA.glob("*.model.xz")
    if not p.name.startswith(("unsupported_", "multihead"))
)


@functools.cache
def _cache_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="ase_equi_mace_"))


def model_file(name: str) -> Path:
    """Path of the decompressed ``<name>.model``."""
    out = _cache_dir() / f"{name}.model"
    if not out.exists():
        out.write_bytes(lzma.decompress((DATA / f"{name}.model.xz").read_bytes()))
    return out


@functools.cache
def _reference_text(name: str) -> str:
    return (DATA / f"reference_{name}.json").read_text()


def reference(name: str) -> dict:
    """mace-torch's record of ``<name>.model`` (a fresh copy: callers may change it)."""
    return json.loads(_reference_text(name))


def head_references(name: str) -> dict[str, dict]:
    """Per head, ``{structure: {"atoms": ..., "float64": ..., "float32": ...}}`` for a multi-head
    file (its reference's ``heads``); ``{}`` for a file with one head."""
    ref = reference(name)
    return {
        head: {
            label: {"atoms": ref["structures"][label]["atoms"], **results}
            for label, results in per_structure.items()
        }
        for head, per_structure in ref.get("heads", {}).items()
    }


#: multi-head files and the single-head files, by whether their reference lists heads
MULTIHEAD_NAMES = [n for n in NAMES if "heads" in reference(n)]
SINGLE_HEAD_NAMES = [n for n in NAMES if n not in MULTIHEAD_NAMES]


def atoms_from_record(record: dict) -> Atoms:
    return Atoms(
        numbers=record["numbers"],
        positions=record["positions"],
        cell=record["cell"],
        pbc=record["pbc"],
    )


def compare_with_reference(calc, ref_structures: dict, dtype: str) -> dict[str, float]:
    """Worst deviations of ``calc`` from mace-torch's results in ``ref_structures`` (energy per
    atom, forces, per-atom energies, stress of periodic cells), in ``dtype``."""
    worst = {"energy": 0.0, "forces": 0.0, "energies": 0.0, "stress": 0.0}
    for record in ref_structures.values():
        atoms = atoms_from_record(record["atoms"])
        atoms.calc = calc
        ref = record[dtype]
        bulk = bool(atoms.pbc.all())
        if bulk:
            stress = atoms.get_stress()  # asked first: one pass gives everything
            # float32, as for forces: relative to the largest stress above 1 eV/Å³
            scale = max(1.0, float(np.abs(ref["stress"]).max())) if dtype == "float32" else 1.0
            worst["stress"] = max(worst["stress"], np.abs(stress - ref["stress"]).max() / scale)
        n = len(atoms)
        worst["energy"] = max(
            worst["energy"], abs(atoms.get_potential_energy() - ref["energy"]) / n
        )
        # float32 resolves forces to ~6e-8 of their size in either code: above 1 eV/Å (the
        # ZBL short contact reaches 62 eV/Å) its tolerance is relative to the largest force
        size = max(1.0, float(np.abs(ref["forces"]).max())) if dtype == "float32" else 1.0
        deviation = np.abs(atoms.get_forces() - ref["forces"]).max() / size
        worst["forces"] = max(worst["forces"], deviation)
        worst["energies"] = max(
            worst["energies"], np.abs(atoms.get_potential_energies() - ref["energies"]).max()
        )
        assert atoms.get_potential_energy() == pytest.approx(atoms.get_potential_energies().sum())
    return worst
