"""Errors of a model's predictions against reference labels of the same structures.

:func:`label_errors` takes the output of :func:`ase_equi.evaluate.evaluate` and the labelled
structures (read as :func:`ase_equi.data.read_frames` reads training data) and returns a
:class:`LabelErrors`: MAE and RMSE of the energy per atom (meV/atom), of the force components
(meV/Å), of the stress components (meV/Å³; 1 meV/Å³ = 0.1602 GPa), the force errors by the
element of the atom, and all three per ``config_type`` (``atoms.info``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from .data.frames import DataKeys, Frame, read_frames

__all__ = ["ErrorStats", "GroupErrors", "LabelErrors", "has_energy_labels", "label_errors"]


@dataclass(frozen=True)
class ErrorStats:
    """Mean absolute and root-mean-square error over ``count`` values (units: see the owner)."""

    mae: float
    rmse: float
    count: int

    @classmethod
    def of(cls, errors: np.ndarray) -> ErrorStats | None:
        """Statistics of an array of signed errors; None when it is empty."""
        errors = np.asarray(errors, dtype=float).ravel()
        if errors.size == 0:
            return None
        return cls(float(np.abs(errors).mean()), float(np.sqrt((errors**2).mean())), errors.size)


@dataclass(frozen=True)
class GroupErrors:
    """Errors of one set of frames.

    ``energy``: per frame, (E_pred − E_ref) / n_atoms in meV/atom, ``count`` = frames;
    ``forces``: per Cartesian component of each labelled atom, meV/Å, ``count`` = components;
    ``stress``: per Voigt component of each frame with a stress label and a cell of rank 3,
    meV/Å³, ``count`` = components. None where the frames have no such label.
    """

    energy: ErrorStats | None
    forces: ErrorStats | None
    stress: ErrorStats | None

    def as_dict(self) -> dict[str, Any]:
        return {k: None if v is None else vars(v) for k, v in vars(self).items()}


@dataclass(frozen=True)
class LabelErrors:
    """Errors of predictions against labels: ``overall``, ``forces_by_element`` (symbol →
    force-component errors of the atoms of that element, meV/Å) and ``by_config_type``
    (``atoms.info["config_type"]`` → :class:`GroupErrors`; frames without one are not
    grouped). Units: meV/atom, meV/Å, meV/Å³ (× 0.1602 for GPa)."""

    overall: GroupErrors
    forces_by_element: dict[str, ErrorStats] = field(default_factory=dict)
    by_config_type: dict[str, GroupErrors] = field(default_factory=dict)
    n_frames: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-clean form (units in the keys' documentation above)."""
        return {
            "units": {"energy": "meV/atom", "forces": "meV/A", "stress": "meV/A^3"},
            "n_frames": self.n_frames,
            "overall": self.overall.as_dict(),
            "forces_by_element": {k: vars(v) for k, v in self.forces_by_element.items()},
            "by_config_type": {k: v.as_dict() for k, v in self.by_config_type.items()},
        }

    def table(self) -> str:
        """A markdown table: one row per group, MAE / RMSE of energy, forces and stress."""

        def number(x: float) -> str:
            return f"{x:.0f}" if abs(x) >= 1000 else f"{x:.3g}"

        def cell(stats: ErrorStats | None) -> str:
            return "–" if stats is None else f"{number(stats.mae)} / {number(stats.rmse)}"

        rows = [("all", self.overall)] + [
            (f"config_type={name}", group) for name, group in self.by_config_type.items()
        ]
        lines = [
            f"errors against the labels of {self.n_frames} frames (MAE / RMSE)",
            "",
            "| frames | E (meV/atom) | F (meV/Å) | σ (meV/Å³) |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {name} | {cell(g.energy)} | {cell(g.forces)} | {cell(g.stress)} |"
            for name, g in rows
        ]
        if self.forces_by_element:
            lines += ["", "| element | F (meV/Å) | components |", "|---|---|---|"]
            lines += [
                f"| {symbol} | {cell(stats)} | {stats.count} |"
                for symbol, stats in self.forces_by_element.items()
            ]
        return "\n".join(lines) + "\n"


def _labels(
    labelled: str | os.PathLike | Sequence[Atoms] | Sequence[Frame], keys: DataKeys | None
) -> list[Frame]:
    if not isinstance(labelled, (str, os.PathLike)) and all(isinstance(f, Frame) for f in labelled):
        return list(labelled)  # type: ignore[arg-type]
    return read_frames(labelled, keys=keys, require_forces=False)  # type: ignore[arg-type]


def _predictions(atoms: Atoms, k: int) -> dict[str, Any]:
    results = getattr(atoms.calc, "results", None) or {}
    if "energy" not in results:
        raise ValueError(
            f"predicted structure {k} carries no energy: pass the output of evaluate() "
            "(structures with a calculator's results)"
        )
    return results


def _check_same_structure(atoms: Atoms, ref: Atoms, k: int) -> None:
    """``ValueError`` naming frame ``k`` unless predicted ``atoms`` and labelled ``ref`` have
    the same atoms, positions, periodicity and periodic cell vectors (within 1e-6 Å)."""
    if len(atoms) != len(ref) or not np.array_equal(atoms.numbers, ref.numbers):
        raise ValueError(f"frame {k}: predicted and labelled structures have other atoms")
    if not np.allclose(atoms.positions, ref.positions, rtol=0, atol=1e-6):
        raise ValueError(f"frame {k}: predicted and labelled positions differ")
    if not np.array_equal(atoms.pbc, ref.pbc):
        raise ValueError(
            f"frame {k}: predicted pbc {atoms.pbc.tolist()}, labelled {ref.pbc.tolist()}"
        )
    periodic = atoms.pbc | (atoms.cell.rank == 3)  # a box's volume enters the stress
    if not np.allclose(atoms.cell.array[periodic], ref.cell.array[periodic], rtol=0, atol=1e-6):
        raise ValueError(f"frame {k}: predicted and labelled cells differ")


def label_errors(
    predicted: Sequence[Atoms],
    labelled: str | os.PathLike | Sequence[Atoms] | Sequence[Frame],
    *,
    keys: DataKeys | None = None,
) -> LabelErrors:
    """MAE and RMSE of ``predicted`` (from :func:`evaluate`) against the labels of ``labelled``.

    Parameters
    ----------
    predicted:
        Structures with predictions in their calculator's results (``energy``, ``forces``,
        ``stress``), in the same order as ``labelled``.
    labelled:
        The same structures with reference labels: a data file, ``Atoms`` or
        :class:`~ase_equi.data.Frame` objects. Every frame needs an energy; forces and stress
        are compared where present (stress only for cells of rank 3).
    keys:
        Names of the labels (default ``energy``/``forces``/``stress``, see
        :class:`~ase_equi.data.DataKeys`).

    Returns
    -------
    LabelErrors
        Energy per atom in meV/atom, force components in meV/Å, stress components in meV/Å³.

    Raises
    ------
    ValueError
        The two lists differ in length, or a pair differs in atoms or positions (naming the
        frame); a labelled frame is invalid (:class:`~ase_equi.errors.DataFileError`).

    Examples
    --------
    >>> from ase import Atoms
    >>> from ase.calculators.singlepoint import SinglePointCalculator
    >>> ref, pred = Atoms("H2", [[0, 0, 0], [0, 0, 0.74]]), Atoms("H2", [[0, 0, 0], [0, 0, 0.74]])
    >>> ref.calc = SinglePointCalculator(ref, energy=-1.0)
    >>> pred.calc = SinglePointCalculator(pred, energy=-0.99)
    >>> round(label_errors([pred], [ref]).overall.energy.mae, 6)  # 10 meV over 2 atoms
    5.0
    """
    frames = _labels(labelled, keys)
    if len(frames) != len(predicted):
        raise ValueError(f"{len(predicted)} predicted structures but {len(frames)} labelled frames")
    energy: list[float] = []
    forces: list[np.ndarray] = []
    stress: list[np.ndarray] = []
    groups: dict[str, list[int]] = {}
    by_element: dict[int, list[np.ndarray]] = {}
    frame_forces: list[np.ndarray | None] = []
    frame_stress: list[np.ndarray | None] = []
    for k, (atoms, frame) in enumerate(zip(predicted, frames, strict=True)):
        ref = frame.atoms
        _check_same_structure(atoms, ref, k)
        results = _predictions(atoms, k)
        n = len(atoms)
        energy.append((float(results["energy"]) - frame.energy) / n * 1e3)
        df = None
        if frame.forces is not None and results.get("forces") is not None:
            df = (np.asarray(results["forces"]) - frame.forces) * 1e3  # [n, 3] meV/Å
            forces.append(df)
            for z in np.unique(atoms.numbers):
                by_element.setdefault(int(z), []).append(df[atoms.numbers == z])
        ds = None
        if frame.has_stress and results.get("stress") is not None:
            ds = (np.asarray(results["stress"]) - frame.stress) * 1e3  # [6] meV/Å³
            stress.append(ds)
        frame_forces.append(df)
        frame_stress.append(ds)
        config_type = atoms.info.get("config_type", ref.info.get("config_type"))
        if config_type is not None:
            groups.setdefault(str(config_type), []).append(k)

    def group(ids: Sequence[int]) -> GroupErrors:
        f = [x for x in (frame_forces[i] for i in ids) if x is not None]
        s = [x for x in (frame_stress[i] for i in ids) if x is not None]
        return GroupErrors(
            energy=ErrorStats.of(np.array([energy[i] for i in ids])),
            forces=ErrorStats.of(np.concatenate(f)) if f else None,
            stress=ErrorStats.of(np.stack(s)) if s else None,
        )

    return LabelErrors(
        overall=group(range(len(frames))),
        forces_by_element={
            chemical_symbols[z]: ErrorStats.of(np.concatenate(by_element[z]))  # type: ignore[misc]
            for z in sorted(by_element)
        },
        by_config_type={name: group(ids) for name, ids in sorted(groups.items())},
        n_frames=len(frames),
    )


def has_energy_labels(structures: Sequence[Atoms], keys: DataKeys | None = None) -> bool:
    """Whether any structure holds an energy label under ``keys.energy`` (calculator results,
    ``info`` or ``arrays``), i.e. whether :func:`label_errors` has something to compare."""
    name = (keys or DataKeys()).energy
    for atoms in structures:
        results = getattr(atoms.calc, "results", None) or {}
        if name in results or name in atoms.info:
            return True
    return False
