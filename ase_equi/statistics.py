"""Constants a new model takes from its training data (see :func:`fit_model_config`).

Statistics that fix a new model's constants (see :func:`fit_model_config`):

``reference_energies`` E0
    least squares ``min_E0 || N E0 − E ||`` over the frames (``N[k, z]`` = number of atoms of
    element z in frame k); an element with isolated-atom frames (one atom, no periodicity) takes
    the mean energy of those instead, and the others are fitted to what remains.
``shift``
    mean over frames of the interaction energy per atom, ``(E − Σ_i E0_{z_i}) / n``.
``scale``
    root-mean-square of the force components (MACE's ``rms_forces_scaling``): the readout
    then works on numbers of order one.
``avg_num_neighbors``
    number of edges divided by number of atoms at the model's cutoff.

Isolated-atom frames only enter E0; they are left out of shift, scale and neighbour counts.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase.data import chemical_symbols

from .batch import frames_to_graphs
from .data import Frame
from .graph import Graph, element_indices
from .model.config import ModelConfig

log = logging.getLogger(__name__)

__all__ = ["DataStatistics", "data_statistics", "fit_model_config", "fit_reference_energies"]


def fit_reference_energies(frames: Sequence[Frame], elements: Sequence[int]) -> np.ndarray:
    """Per-element reference energies E0 ``[n_elements]`` (eV) by least squares.

    Solves ``min_E0 || N E0 − E ||₂`` with ``N[k, z]`` the number of atoms of element z in
    frame k. Elements with isolated-atom frames take the mean of those energies and the rest
    are fitted to ``E − N_fixed E0_fixed``. An element in no frame gets 0 (with a warning); an
    under-determined fit (compositions linearly dependent) gets the minimum-norm solution.

    Examples
    --------
    >>> from ase import Atoms
    >>> e0 = {29: -3.0, 13: -1.5}
    >>> frames = [Frame(Atoms(s), sum(e0[z] for z in Atoms(s).numbers)) for s in ("Cu2Al", "CuAl3")]
    >>> fit_reference_energies(frames, [13, 29]).round(6).tolist()
    [-1.5, -3.0]
    """
    elements = list(elements)
    counts = np.zeros((len(frames), len(elements)))
    for k, frame in enumerate(frames):
        idx = element_indices(frame.atoms.numbers, elements, "the element list")
        counts[k] = np.bincount(idx, minlength=len(elements))
    energies = np.array([f.energy for f in frames])
    isolated = np.array([f.is_isolated_atom for f in frames], dtype=bool)

    e0 = np.zeros(len(elements))
    fixed = np.zeros(len(elements), dtype=bool)
    for j in range(len(elements)):
        mine = isolated & (counts[:, j] > 0)
        if mine.any():
            e0[j], fixed[j] = energies[mine].mean(), True
    rest = ~isolated
    target = energies[rest] - counts[rest][:, fixed] @ e0[fixed]
    present = ~fixed & (counts[rest].sum(axis=0) > 0)
    for j in np.flatnonzero(~fixed & ~present):
        log.warning(
            "no frame contains %s (Z=%d): its reference energy E0 is set to 0 eV",
            chemical_symbols[elements[j]],
            elements[j],
        )
    if present.any():
        design = counts[rest][:, present]
        solution, _, rank, _ = np.linalg.lstsq(design, target, rcond=None)
        if rank < int(present.sum()):
            log.warning(
                "the E0 fit is under-determined (%d independent compositions for %d elements); "
                "using the minimum-norm solution",
                rank,
                int(present.sum()),
            )
        e0[present] = solution
    return e0


@dataclass(frozen=True)
class DataStatistics:
    """Constants of a new model measured on its training data (see the module docstring)."""

    reference_energies: tuple[float, ...]
    shift: float
    scale: float
    avg_num_neighbors: float


def data_statistics(
    frames: Sequence[Frame],
    elements: Sequence[int],
    cutoff: float,
    *,
    graphs: Sequence[Graph] | None = None,
) -> DataStatistics:
    """E0, shift, scale and average neighbour count of ``frames`` (see the module docstring)."""
    e0 = fit_reference_energies(frames, elements)
    bulk = [k for k, f in enumerate(frames) if not f.is_isolated_atom]
    if not bulk:
        raise ValueError("only isolated-atom frames: nothing to measure shift and scale on")
    if graphs is None:
        graphs = frames_to_graphs([frames[k] for k in bulk], elements, cutoff)
    else:
        graphs = [graphs[k] for k in bulk]
    table = dict(zip(elements, e0, strict=True))
    per_atom = [
        (frames[k].energy - sum(table[int(z)] for z in frames[k].atoms.numbers))
        / len(frames[k].atoms)
        for k in bulk
    ]
    forces = [frames[k].forces for k in bulk if frames[k].forces is not None]
    scale = float(np.sqrt(np.mean(np.concatenate(forces) ** 2))) if forces else 0.0
    if not scale > 0:
        log.warning("forces are all zero or absent: scale set to 1")
        scale = 1.0
    edges = sum(int(g.senders.shape[0]) for g in graphs)
    atoms = sum(g.num_atoms for g in graphs)
    return DataStatistics(
        reference_energies=tuple(float(x) for x in e0),
        shift=float(np.mean(per_atom)),
        scale=scale,
        avg_num_neighbors=max(edges / atoms, 1e-3),  # ModelConfig needs > 0 (no edges at all)
    )


def fit_model_config(
    config: ModelConfig, frames: Sequence[Frame], *, graphs: Sequence[Graph] | None = None
) -> ModelConfig:
    """``config`` with E0, shift, scale and avg_num_neighbors measured on ``frames``.

    Examples
    --------
    >>> from ase import Atoms
    >>> from ase.build import bulk
    >>> frames = [Frame(bulk("Cu", "fcc", a=3.6), -1.0, np.zeros((1, 3))),
    ...           Frame(Atoms("Cu"), -0.25, np.zeros((1, 3)))]
    >>> cfg = fit_model_config(ModelConfig(elements=(29,), reference_energies=(0.0,),
    ...                                    r_max=3.0), frames)
    >>> cfg.reference_energies, cfg.shift, cfg.avg_num_neighbors
    ((-0.25,), -0.75, 12.0)
    """
    stats = data_statistics(frames, config.elements, config.r_max, graphs=graphs)
    return dataclasses.replace(config, **dataclasses.asdict(stats))
