"""Labelled structures for training and evaluation: files → frames → batches → statistics.

One stage per module, data flowing down the list:

:mod:`.extxyz`
    a data file (extxyz, possibly compressed; ASE database; anything ``ase.io.read`` reads) →
    ``Atoms`` that remember their frame index and line (:func:`read_structures`).
:mod:`.frames`
    ``Atoms`` → :class:`Frame` (positions in Å, energy in eV, forces ``[n_atoms, 3]`` in eV/Å,
    stress ``[6]`` in eV/Å³, ASE Voigt order) with the labels found under :class:`DataKeys`
    (:func:`read_frames`, :func:`split_frames`).
:mod:`.batch`
    frames → graphs and batches of graphs with their label tensors (:func:`frames_to_graphs`,
    :func:`make_batch`).
:mod:`.statistics`
    the constants a new model takes from its data: E0, shift, scale, average neighbour count
    (:func:`data_statistics`, :func:`fit_model_config`, :func:`reference_energy_fit`).

Examples
--------
>>> from ase.build import bulk
>>> from ase.calculators.singlepoint import SinglePointCalculator
>>> atoms = bulk("Cu", "fcc", a=3.6)
>>> atoms.calc = SinglePointCalculator(atoms, energy=-3.5, forces=[[0.0, 0.0, 0.0]])
>>> frame = read_frames([atoms])[0]
>>> frame.energy, frame.forces.shape
(-3.5, (1, 3))
"""

from .batch import Batch, frames_to_graphs, make_batch
from .extxyz import MAX_LINE_CHARS, SourcedAtoms, read_structures
from .frames import DataKeys, Frame, load_frames, read_frames, split_frames, split_indices
from .statistics import (
    DataStatistics,
    ReferenceEnergyFit,
    composition_matrix,
    data_statistics,
    fit_model_config,
    fit_reference_energies,
    reference_energy_fit,
)

__all__ = [
    "MAX_LINE_CHARS",
    "Batch",
    "DataKeys",
    "DataStatistics",
    "Frame",
    "ReferenceEnergyFit",
    "SourcedAtoms",
    "composition_matrix",
    "data_statistics",
    "fit_model_config",
    "fit_reference_energies",
    "frames_to_graphs",
    "load_frames",
    "make_batch",
    "read_frames",
    "read_structures",
    "reference_energy_fit",
    "split_frames",
    "split_indices",
]
