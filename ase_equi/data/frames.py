"""Labelled structures: ``Atoms`` (or a data file) with reference labels → checked frames.

A :class:`Frame` is one structure with its reference energy (eV), forces (eV/Å, ``[n, 3]``) and,
where present, stress (eV/Å³, ASE Voigt order xx yy zz yz xz xy, positive = tensile). Labels
are looked up, for each quantity, in the results of the structure's calculator (what ASE's
``SinglePointCalculator`` holds after reading an extxyz file with ``energy=``/``forces``/
``stress=``), in ``atoms.info`` and in ``atoms.arrays``, under the names of a :class:`DataKeys`
(batching: :mod:`ase_equi.data.batch`; fitted constants: :mod:`ase_equi.data.statistics`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms
from ase.stress import full_3x3_to_voigt_6_stress

from ..errors import DataFileError
from ..graph import check_neutral, element_indices
from .extxyz import SourcedAtoms, read_structures
from .split import split_frames, split_indices  # re-exported: they lived here

__all__ = ["DataKeys", "Frame", "load_frames", "read_frames", "split_frames", "split_indices"]


@dataclass(frozen=True)
class DataKeys:
    """Names under which the reference labels are stored.

    The default names are ASE's (``energy``, ``forces``, ``stress``); MACE-style data sets use
    ``DataKeys(energy="REF_energy", forces="REF_forces", stress="REF_stress")``.

    Examples
    --------
    >>> DataKeys.ref()
    DataKeys(energy='REF_energy', forces='REF_forces', stress='REF_stress')
    """

    energy: str = "energy"
    forces: str = "forces"
    stress: str = "stress"

    @classmethod
    def ref(cls) -> DataKeys:
        return cls("REF_energy", "REF_forces", "REF_stress")


@dataclass
class Frame:
    """One labelled structure.

    ``atoms`` carries numbers, positions, cell and pbc only (no calculator); ``energy`` is in eV,
    ``forces [n, 3]`` in eV/Å (None if absent), ``stress [6]`` in eV/Å³, ASE Voigt order (None
    if absent); ``index`` is the position of the frame in its source; ``weight`` multiplies the
    frame's terms in the training loss (e.g. replayed frames in fine-tuning); ``head``: the
    readout head of a multi-head model it is evaluated with (None: the model's active head);
    ``config_type``: ``atoms.info["config_type"]`` of the source ("" if absent).
    """

    atoms: Atoms
    energy: float
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    index: int = 0
    weight: float = 1.0
    head: int | None = None
    config_type: str = ""

    @property
    def is_isolated_atom(self) -> bool:
        """One atom without periodicity: its energy is the element's reference energy."""
        return bool(len(self.atoms) == 1 and not self.atoms.pbc.any())

    @property
    def has_stress(self) -> bool:
        """A stress label that means something: present and with a cell of rank 3."""
        return bool(self.stress is not None and self.atoms.cell.rank == 3)


@dataclass(frozen=True)
class _Where:
    """Names a frame in an error: ``frame k`` or ``frame k of FILE``, and for files the line
    and a reminder that frames are counted from 0."""

    item: SourcedAtoms
    source: str = ""

    def __str__(self) -> str:
        return f"frame {self.item.index}" + (f" of {self.source}" if self.source else "")

    def error(self, text: str, *, atom: int | None = None, header: bool = False) -> DataFileError:
        """``DataFileError("frame k[ of FILE]" + text + location)``."""
        message = f"{self}{text}"
        if self.source:
            line = self.item.line_of(atom=atom, header=header)
            at = f"line {line}; " if line is not None else ""
            message += f" [{at}frames are counted from 0]"
        return DataFileError(message)


def _candidates(atoms: Atoms, name: str) -> list[tuple[str, Any]]:
    """Every place ``name`` is stored: calculator results, info, arrays."""
    found = []
    results = getattr(atoms.calc, "results", None) or {}
    if name in results:
        found.append(("calculator", results[name]))
    if name in atoms.info:
        found.append(("info", atoms.info[name]))
    if name in atoms.arrays:
        found.append(("arrays", atoms.arrays[name]))
    return found


def _keys_found(atoms: Atoms) -> str:
    results = getattr(atoms.calc, "results", None) or {}
    parts = [f"calculator: {sorted(results)}", f"info: {sorted(atoms.info)}"]
    parts.append(f"arrays: {sorted(k for k in atoms.arrays if k not in ('numbers', 'positions'))}")
    return "; ".join(parts)


def _same(a: Any, b: Any) -> bool:
    try:
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    except (TypeError, ValueError):
        return False
    return a.size == b.size and np.allclose(a.ravel(), b.ravel(), rtol=1e-6, atol=1e-8)


def _label(atoms: Atoms, quantity: str, keys: DataKeys | None, where: _Where) -> Any:
    """The value of one label, or None; raises when it is ambiguous."""
    name = getattr(keys or DataKeys(), quantity)
    found = _candidates(atoms, name)
    rivals = [] if keys is not None else _candidates(atoms, "REF_" + name)
    if keys is None:
        rivals = [("REF_" + name + f" ({w})", v) for w, v in rivals]
    found_named = [(f"{name} ({w})", v) for w, v in found]
    everything = found_named + rivals
    if found_named and any(not _same(everything[0][1], v) for _, v in everything[1:]):
        listed = ", ".join(label for label, _ in everything)
        raise where.error(
            f": {quantity} is ambiguous, {listed} hold different values; choose one "
            f"with keys=DataKeys({quantity}=...) (CLI: --{quantity}-key). "
            f"Keys found: {_keys_found(atoms)}",
            header=True,
        )
    return found_named[0][1] if found_named else None


def _first_bad_row(values: np.ndarray) -> int | None:
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    return int(bad[0]) if bad.size else None


def _checked_positions(atoms: Atoms, where: _Where, elements: Sequence[int] | None) -> np.ndarray:
    """``positions [n_atoms, 3]`` (Å) after checking atoms, positions, cell and elements."""
    if len(atoms) == 0:
        raise where.error(" has no atoms")
    positions = np.asarray(atoms.positions, dtype=float)
    bad = _first_bad_row(positions)
    if bad is not None:
        raise where.error(f": positions contain NaN or inf at atom {bad}", atom=bad)
    if not np.isfinite(atoms.cell.array).all():
        raise where.error(": cell contains NaN or inf", header=True)
    odd = np.flatnonzero((atoms.numbers < 1) | (atoms.numbers > 118))
    if odd.size:
        i = int(odd[0])
        raise where.error(
            f": atom {i} has atomic number Z={int(atoms.numbers[i])}, which is no element",
            atom=i,
        )
    if elements is not None:
        try:
            element_indices(atoms.numbers, elements, "the model's elements")
        except ValueError as err:
            first = int(np.flatnonzero(~np.isin(atoms.numbers, list(elements)))[0])
            raise where.error(f": {err}", atom=first) from None
    try:
        check_neutral(atoms, "a model of ase_equi")
    except ValueError as err:
        raise where.error(f": {err}", header=True) from None
    return positions


def _energy(atoms: Atoms, where: _Where, keys: DataKeys | None) -> float:
    """The energy label (eV): present, one number, finite."""
    used = keys or DataKeys()
    energy = _label(atoms, "energy", keys, where)
    if energy is None:
        raise where.error(
            f" has no energy under '{used.energy}'. Keys found: {_keys_found(atoms)}; "
            "pass keys=DataKeys(energy=..., forces=..., stress=...) (CLI: --energy-key ...)",
            header=True,
        )
    try:
        energy = float(np.asarray(energy, dtype=float).reshape(()))
    except (TypeError, ValueError):
        raise where.error(
            f": energy '{used.energy}' is not one number: {energy!r}", header=True
        ) from None
    if not np.isfinite(energy):
        raise where.error(f": energy is {energy}", header=True)
    return energy


def _forces(
    atoms: Atoms, where: _Where, keys: DataKeys | None, *, required: bool
) -> np.ndarray | None:
    """The forces label ``[n_atoms, 3]`` (eV/Å), finite; None when absent and not required."""
    used = keys or DataKeys()
    forces = _label(atoms, "forces", keys, where)
    if forces is None:
        if required:
            raise where.error(
                f" has no forces under '{used.forces}'. Keys found: {_keys_found(atoms)}",
                header=True,
            )
        return None
    try:
        forces = np.array(forces, dtype=float)
    except (TypeError, ValueError):
        raise where.error(f": forces '{used.forces}' are not numbers", header=True) from None
    if forces.shape != (len(atoms), 3):
        raise where.error(
            f": forces have shape {forces.shape}, expected ({len(atoms)}, 3)", header=True
        )
    bad = _first_bad_row(forces)
    if bad is not None:
        raise where.error(f": forces contain NaN or inf at atom {bad}", atom=bad)
    return forces


def _stress(atoms: Atoms, where: _Where, keys: DataKeys | None) -> np.ndarray | None:
    """The stress label as Voigt ``[6]`` (eV/Å³; a 3×3 or 9-value label is converted), finite;
    None when absent."""
    used = keys or DataKeys()
    stress = _label(atoms, "stress", keys, where)
    if stress is None:
        return None
    try:
        stress = np.array(stress, dtype=float)
    except (TypeError, ValueError):
        raise where.error(
            f": stress '{used.stress}' is not numbers: {stress!r}", header=True
        ) from None
    if stress.shape in ((9,), (3, 3)):
        stress = full_3x3_to_voigt_6_stress(stress.reshape(3, 3))
    if stress.shape != (6,):
        raise where.error(
            f": stress has shape {stress.shape}, expected Voigt (6,) or 3x3 (9 values)",
            header=True,
        )
    if not np.isfinite(stress).all():
        raise where.error(": stress contains NaN or inf", header=True)
    return stress


def _frame_from_atoms(
    atoms: Atoms,
    where: _Where,
    *,
    keys: DataKeys | None,
    elements: Sequence[int] | None,
    require_forces: bool,
) -> Frame:
    """One checked :class:`Frame`: structure first, then energy, forces and stress labels (the
    first problem found raises a :class:`DataFileError` naming the frame)."""
    positions = _checked_positions(atoms, where, elements)
    energy = _energy(atoms, where, keys)
    forces = _forces(atoms, where, keys, required=require_forces)
    stress = _stress(atoms, where, keys)
    bare = Atoms(numbers=atoms.numbers, positions=positions, cell=atoms.cell, pbc=atoms.pbc)
    kind = str(atoms.info.get("config_type", ""))
    return Frame(bare, energy, forces, stress, index=where.item.index, config_type=kind)


def load_frames(
    data: str | os.PathLike | Sequence[Frame] | Sequence[Atoms],
    *,
    keys: DataKeys | None = None,
    elements: Sequence[int] | None = None,
) -> tuple[str, list[Frame]]:
    """``(source, frames)`` from a file path, labelled ``Atoms`` or ready :class:`Frame` objects.

    ``source`` is the path as given (for a model card), or ``""`` for objects in memory.
    Paths and ``Atoms`` go through :func:`read_frames`; ``Frame`` objects are taken as they are.
    """
    if isinstance(data, (str, os.PathLike)):
        return str(data), read_frames(data, keys=keys, elements=elements)
    frames = [f for f in data if isinstance(f, Frame)]
    if frames and len(frames) == len(data):
        return "", frames
    structures = [a for a in data if isinstance(a, Atoms)]
    if len(structures) != len(data):
        raise TypeError("data must be a path, a sequence of Frame or a sequence of ase.Atoms")
    return "", read_frames(structures, keys=keys, elements=elements)


def read_frames(
    source: str | os.PathLike | Sequence[Atoms],
    *,
    keys: DataKeys | None = None,
    elements: Sequence[int] | None = None,
    require_forces: bool = True,
) -> list[Frame]:
    """Read and validate labelled structures.

    Parameters
    ----------
    source:
        An extxyz file (or anything ``ase.io.read`` understands, all frames), an ASE database
        (``.db``; key-value pairs go to ``info``, per-atom ``data`` arrays to ``arrays``), or a
        list of ``Atoms`` carrying labels.
    keys:
        Where the labels are. ``None`` means ASE's names ``energy``/``forces``/``stress``, and
        a ``REF_``-prefixed copy with a different value makes the frame ambiguous.
    elements:
        Atomic numbers the model knows; a frame with any other element is an error.
    require_forces:
        Whether a frame without forces is an error (else its forces are not trained on).

    Raises
    ------
    FileNotFoundError
        ``source`` is a path that does not exist.
    DataFileError
        (a ``ValueError``) Naming the file, the frame (counted from 0) and, for extxyz, the
        line: a file that is empty, not text or not extxyz, a line with the wrong number of
        columns, a word where a number belongs, an unknown element symbol (see
        :func:`ase_equi.data.extxyz.read_structures`); missing or ambiguous labels (with the keys
        found), NaN/inf in positions, cell, energy, forces or stress, forces not ``[n, 3]``,
        stress neither 6 nor 9 values, an element the model does not know.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from ase.calculators.emt import EMT
    >>> from ase.calculators.singlepoint import SinglePointCalculator
    >>> atoms = bulk("Cu", "fcc", a=3.6)
    >>> atoms.calc = EMT()
    >>> atoms.calc = SinglePointCalculator(atoms, energy=atoms.get_potential_energy(),
    ...                                    forces=atoms.get_forces(), stress=atoms.get_stress())
    >>> frame, = read_frames([atoms], elements=[29])
    >>> frame.forces.shape, frame.stress.shape, frame.has_stress
    ((1, 3), (6,), True)
    """
    if isinstance(source, (str, os.PathLike)):
        items, name = read_structures(source), str(source)
    else:
        items, name = [SourcedAtoms(a, k) for k, a in enumerate(source)], ""
        if not items:
            raise DataFileError("no structures in the data (an empty list)")
    return [
        _frame_from_atoms(
            item.atoms,
            _Where(item, name),
            keys=keys,
            elements=elements,
            require_forces=require_forces,
        )
        for item in items
    ]
