"""Constants a new model takes from its training data (see :func:`fit_model_config`).

Statistics that fix a new model's constants (see :func:`fit_model_config`):

``reference_energies`` E0
    least squares ``min_E0 || N E0 − E ||`` over the frames (``N[k, z]`` = number of atoms of
    element z in frame k), the solution closest to a prior (the config's E0 when given): see
    :func:`reference_energy_fit`; an element with isolated-atom frames (one atom, no
    periodicity) takes the mean energy of those instead, and the others are fitted to what
    remains.
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

from ..errors import AseEquiError
from ..graph import Graph, element_indices
from ..model.config import ModelConfig
from .batch import frames_to_graphs
from .frames import Frame

log = logging.getLogger(__name__)

__all__ = [
    "DataStatistics",
    "ReferenceEnergyFit",
    "composition_matrix",
    "data_statistics",
    "fit_model_config",
    "fit_reference_energies",
    "reference_energy_fit",
]


@dataclass(frozen=True)
class ReferenceEnergyFit:
    """Reference energies E0 fitted to data, and what the data determined about each.

    ``values [n_elements]`` (eV) in the order of ``elements``; ``status[z]`` per atomic number:

    ``"isolated atom"``   the mean energy of that element's isolated-atom frames;
    ``"fitted"``          determined by the data (e_z lies in the row space of N);
    ``"partly fitted"``   present, but only in combinations (e.g. 2 E0_H + E0_O from water
                          alone): the prior's value moved by the minimum change;
    ``"kept"``            in no frame: the prior's value, unchanged.
    """

    elements: tuple[int, ...]
    values: np.ndarray
    status: dict[int, str]

    @property
    def fitted(self) -> list[int]:
        """Atomic numbers whose E0 the data changed (fully or partly determined)."""
        return [z for z in self.elements if self.status[z] != "kept"]

    @property
    def kept(self) -> list[int]:
        """Atomic numbers whose E0 is the prior's, unchanged."""
        return [z for z in self.elements if self.status[z] == "kept"]

    def summary(self) -> dict[str, str]:
        """``{symbol: status}``, JSON-clean (for cards and reports)."""
        return {chemical_symbols[z]: self.status[z] for z in self.elements}


def composition_matrix(frames: Sequence[Frame], elements: Sequence[int]) -> np.ndarray:
    """``N [n_frames, n_elements]``: number of atoms of each element in each frame."""
    counts = np.zeros((len(frames), len(elements)))
    for k, frame in enumerate(frames):
        idx = element_indices(frame.atoms.numbers, elements, "the element list")
        counts[k] = np.bincount(idx, minlength=len(elements))
    return counts


def reference_energy_fit(
    frames: Sequence[Frame],
    elements: Sequence[int],
    prior: Sequence[float] | np.ndarray | None = None,
    *,
    refit_prior: bool = True,
) -> ReferenceEnergyFit:
    """E0 ``[n_elements]`` (eV) closest to ``prior`` among the least-squares fits to ``frames``.

    With ``N[k, z]`` the number of atoms of element z in frame k and ``E`` the frame energies,

        E0 = E0_prior + δ,   δ = N⁺ (E − N E0_prior)

    (``N⁺`` the pseudo-inverse): δ is the smallest change that minimises ``|| N E0 − E ||₂``,
    so every direction of E0 that the data do not determine keeps the prior's value. An element
    in no frame has an all-zero column and keeps its prior E0 exactly; with water frames only,
    just ``2 E0_H + E0_O`` moves. Elements with isolated-atom frames (one atom, no periodicity)
    take the mean of those energies, and the rest is fitted to ``E − N_fixed E0_fixed``.

    Parameters
    ----------
    frames:
        Labelled frames (their ``energy`` is the target, eV).
    elements:
        Atomic numbers, the order of ``N``'s columns and of the result.
    prior:
        E0 (eV) to stay closest to (a parent model's, or a user's); NaN for an element with
        no prior value (an element new to a fine-tuned model), None for none at all (plain
        least squares). Elements without a prior absorb the fitted shift first (the prior
        values then change least); an element without a prior that is in no frame is
        refused (its E0 would be invented), and one the data determine only in combination
        takes the minimum-norm value (relative to 0 eV), with a warning.
    refit_prior:
        False: elements with a prior value keep it exactly (status ``"kept"``); only those
        without one are fitted (fine-tuning with ``refit_e0=False`` and new elements).

    Raises
    ------
    AseEquiError
        An element without a prior value is in no frame (named).

    Examples
    --------
    Water alone determines only 2 E0_H + E0_O; carbon is kept, H and O move least:

    >>> from ase.build import molecule
    >>> prior = np.array([-13.6, -1027.0, -2039.0])          # H, C, O
    >>> water = Frame(molecule("H2O"), 2 * -13.6 - 2039.0 - 3.0)  # 3 eV lower than the prior
    >>> fit = reference_energy_fit([water], [1, 6, 8], prior)
    >>> (fit.values - prior).round(6).tolist()              # δ ∝ (2, 0, 1), 2 δ_H + δ_O = −3
    [-1.2, 0.0, -0.6]
    >>> fit.summary()
    {'H': 'partly fitted', 'C': 'kept', 'O': 'partly fitted'}
    """
    elements = [int(z) for z in elements]
    counts = composition_matrix(frames, elements)
    energies = np.array([f.energy for f in frames], dtype=float)
    isolated = np.array([f.is_isolated_atom for f in frames], dtype=bool)
    e0 = np.full(len(elements), np.nan) if prior is None else np.array(prior, dtype=float)
    if e0.shape != (len(elements),):
        raise AseEquiError(f"prior E0 has shape {e0.shape}, expected ({len(elements)},)")
    free = np.isnan(e0)  # no prior value: the data alone decide
    e0[free] = 0.0

    status = dict.fromkeys(elements, "kept")
    fitted = free | refit_prior  # the columns the data may change
    fixed = np.zeros(len(elements), dtype=bool)
    for j, z in enumerate(elements):
        mine = isolated & (counts[:, j] > 0)
        if mine.any() and fitted[j]:
            e0[j], fixed[j], status[z] = energies[mine].mean(), True, "isolated atom"
    rest = ~isolated
    present = ~fixed & (counts[rest].sum(axis=0) > 0)
    unknown = [z for j, z in enumerate(elements) if free[j] and not fixed[j] and not present[j]]
    if unknown:
        names = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in unknown)
        raise AseEquiError(
            f"no training frame contains {names}: the data do not determine its reference "
            "energy E0; give ModelConfig.reference_energies, add frames with it, or drop it "
            "from ModelConfig.elements"
        )
    if (present & fitted).any():
        zs = [z for j, z in enumerate(elements) if present[j] and fitted[j]]
        design = counts[rest][:, present]  # N [n_frames, n_present]
        residual = energies[rest] - counts[rest] @ e0  # r = E − N E0_prior
        delta = _minimum_change(design, residual, free[present], refit_prior=refit_prior)
        e0[present] += delta
        # e_z is determined iff it lies in the row space of N: (1 − N⁺N) e_z = 0
        design = counts[rest][:, present & fitted]
        null = np.eye(len(zs)) - np.linalg.pinv(design) @ design
        determined = np.abs(null).max(axis=0) < 1e-9
        for z, ok in zip(zs, determined, strict=True):
            status[z] = "fitted" if ok else "partly fitted"
        if not determined.all():
            loose = [chemical_symbols[z] for z, ok in zip(zs, determined, strict=True) if not ok]
            no_prior = [
                chemical_symbols[z]
                for z, ok, f in zip(zs, determined, free[present & fitted], strict=True)
                if not ok and f
            ]
            log.warning(
                "the data determine only %d combination(s) of the E0 of %s; the other "
                "directions keep the prior's values (minimum change)%s",
                np.linalg.matrix_rank(design),
                ", ".join(loose),
                f"; {', '.join(no_prior)} had no prior value: minimum-norm rule (0 eV "
                "prior), give ModelConfig.reference_energies to choose them"
                if no_prior
                else "",
            )
    return ReferenceEnergyFit(tuple(elements), e0, status)


def _minimum_change(
    design: np.ndarray, residual: np.ndarray, free: np.ndarray, *, refit_prior: bool = True
) -> np.ndarray:
    """δ ``[n_columns]`` minimising ``|| design δ − residual ||₂``, and among those the one with
    the smallest change of the columns with a prior (``~free``); the ``free`` columns (no prior)
    take up what they can first, and are themselves of minimum norm.

    With ``P`` the projector onto the span of the free columns ``N_f``, the prior columns
    solve ``min || (1 − P) (N_p δ_p − r) ||`` (minimum norm), then ``N_f δ_f ≈ r − N_p δ_p``.
    Without free columns this is ``δ = N⁺ r``; with ``refit_prior=False``, ``δ_p = 0``.
    """
    delta = np.zeros(design.shape[1])
    n_free = design[:, free]
    basis = np.zeros((len(residual), 0))  # orthonormal basis of span(N_f) [n_frames, rank]
    if free.any():
        u, sv, _ = np.linalg.svd(n_free, full_matrices=False)
        basis = u[:, sv > sv.max() * max(n_free.shape) * np.finfo(float).eps]

    def keep(x: np.ndarray) -> np.ndarray:  # (1 − P) x without an [n_frames, n_frames] matrix
        return x - basis @ (basis.T @ x)

    if (~free).any() and refit_prior:
        delta[~free] = np.linalg.lstsq(keep(design[:, ~free]), keep(residual), rcond=None)[0]
    if free.any():
        rest = residual - design[:, ~free] @ delta[~free]
        delta[free] = np.linalg.lstsq(n_free, rest, rcond=None)[0]
    return delta


def fit_reference_energies(
    frames: Sequence[Frame], elements: Sequence[int], prior: Sequence[float] | None = None
) -> np.ndarray:
    """Per-element reference energies E0 ``[n_elements]`` (eV): the values of
    :func:`reference_energy_fit` (least squares closest to ``prior``).

    Examples
    --------
    >>> from ase import Atoms
    >>> e0 = {29: -3.0, 13: -1.5}
    >>> frames = [Frame(Atoms(s), sum(e0[z] for z in Atoms(s).numbers)) for s in ("Cu2Al", "CuAl3")]
    >>> fit_reference_energies(frames, [13, 29]).round(6).tolist()
    [-1.5, -3.0]
    """
    return reference_energy_fit(frames, elements, prior).values


@dataclass(frozen=True)
class DataStatistics:
    """Constants of a new model measured on its training data (see the module docstring)."""

    reference_energies: tuple[float, ...]
    shift: float
    scale: float
    avg_num_neighbors: float
    reference_energy_status: dict[str, str] = dataclasses.field(default_factory=dict)


def data_statistics(
    frames: Sequence[Frame],
    elements: Sequence[int],
    cutoff: float,
    *,
    graphs: Sequence[Graph] | None = None,
    prior: Sequence[float] | None = None,
) -> DataStatistics:
    """E0 (closest to ``prior``, see :func:`reference_energy_fit`), shift, scale and average
    neighbour count of ``frames`` (see the module docstring)."""
    fit = reference_energy_fit(frames, elements, prior)
    e0 = fit.values
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
    forces = [f for f in (frames[k].forces for k in bulk) if f is not None]
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
        reference_energy_status=fit.summary(),
    )


def fit_model_config(
    config: ModelConfig, frames: Sequence[Frame], *, graphs: Sequence[Graph] | None = None
) -> ModelConfig:
    """``config`` with E0, shift, scale and avg_num_neighbors measured on ``frames``.

    The config's ``reference_energies``, when given, are the prior of the E0 fit (directions
    the data do not determine keep them); when None, E0 is plain least squares.

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
    stats = data_statistics(
        frames, config.elements, config.r_max, graphs=graphs, prior=config.reference_energies
    )
    fitted = dataclasses.asdict(stats)
    del fitted["reference_energy_status"]
    return dataclasses.replace(config, **fitted)
