"""Labelled structures from extxyz / ASE db → graphs and label tensors for training.

A :class:`Frame` is one structure with its reference energy (eV), forces (eV/Å, ``[n, 3]``) and,
where present, stress (eV/Å³, ASE Voigt order xx yy zz yz xz xy, positive = tensile). Labels
are looked up, for each quantity, in the results of the structure's calculator (what ASE's
``SinglePointCalculator`` holds after reading an extxyz file with ``energy=``/``forces``/
``stress=``), in ``atoms.info`` and in ``atoms.arrays``, under the names of a :class:`DataKeys`.

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
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols
from ase.stress import full_3x3_to_voigt_6_stress, voigt_6_to_full_3x3_stress

from .graph import Graph, atoms_to_graph, batch_graphs, element_indices
from .model.config import ModelConfig

log = logging.getLogger(__name__)

__all__ = [
    "Batch",
    "DataKeys",
    "DataStatistics",
    "Frame",
    "data_statistics",
    "fit_model_config",
    "fit_reference_energies",
    "frames_to_graphs",
    "make_batch",
    "read_frames",
    "split_indices",
]


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
    frame's terms in the training loss (e.g. replayed frames in fine-tuning).
    """

    atoms: Atoms
    energy: float
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    index: int = 0
    weight: float = 1.0

    @property
    def is_isolated_atom(self) -> bool:
        """One atom without periodicity: its energy is the element's reference energy."""
        return bool(len(self.atoms) == 1 and not self.atoms.pbc.any())

    @property
    def has_stress(self) -> bool:
        """A stress label that means something: present and with a cell of rank 3."""
        return bool(self.stress is not None and self.atoms.cell.rank == 3)


def _where(k: int, source: str) -> str:
    return f"frame {k}" + (f" of {source}" if source else "")


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


def _label(atoms: Atoms, quantity: str, keys: DataKeys | None, where: str) -> Any:
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
        raise ValueError(
            f"{where}: {quantity} is ambiguous, {listed} hold different values; choose one "
            f"with keys=DataKeys({quantity}=...) (CLI: --{quantity}-key). "
            f"Keys found: {_keys_found(atoms)}"
        )
    return found_named[0][1] if found_named else None


def _frame_from_atoms(
    atoms: Atoms,
    k: int,
    *,
    keys: DataKeys | None,
    elements: Sequence[int] | None,
    require_forces: bool,
    source: str,
) -> Frame:
    where = _where(k, source)
    n = len(atoms)
    if n == 0:
        raise ValueError(f"{where} has no atoms")
    positions = np.asarray(atoms.positions, dtype=float)
    bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
    if bad.size:
        raise ValueError(f"{where}: positions contain NaN or inf at atom {int(bad[0])}")
    if not np.isfinite(atoms.cell.array).all():
        raise ValueError(f"{where}: cell contains NaN or inf")
    odd = np.flatnonzero((atoms.numbers < 1) | (atoms.numbers > 118))
    if odd.size:
        raise ValueError(
            f"{where}: atom {int(odd[0])} has atomic number Z={int(atoms.numbers[odd[0]])}, "
            "which is no element"
        )
    if elements is not None:
        try:
            element_indices(atoms.numbers, elements, "the model's elements")
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
    used = keys or DataKeys()

    energy = _label(atoms, "energy", keys, where)
    if energy is None:
        raise ValueError(
            f"{where} has no energy under '{used.energy}'. Keys found: {_keys_found(atoms)}; "
            "pass keys=DataKeys(energy=..., forces=..., stress=...) (CLI: --energy-key ...)"
        )
    try:
        energy = float(np.asarray(energy, dtype=float).reshape(()))
    except (TypeError, ValueError):
        raise ValueError(f"{where}: energy '{used.energy}' is not one number: {energy!r}") from None
    if not np.isfinite(energy):
        raise ValueError(f"{where}: energy is {energy}")

    forces = _label(atoms, "forces", keys, where)
    if forces is None and require_forces:
        raise ValueError(
            f"{where} has no forces under '{used.forces}'. Keys found: {_keys_found(atoms)}"
        )
    if forces is not None:
        forces = np.array(forces, dtype=float)
        if forces.shape != (n, 3):
            raise ValueError(f"{where}: forces have shape {forces.shape}, expected ({n}, 3)")
        bad = np.flatnonzero(~np.isfinite(forces).all(axis=1))
        if bad.size:
            raise ValueError(f"{where}: forces contain NaN or inf at atom {int(bad[0])}")

    stress = _label(atoms, "stress", keys, where)
    if stress is not None:
        stress = np.array(stress, dtype=float)
        if stress.shape in ((9,), (3, 3)):
            stress = full_3x3_to_voigt_6_stress(stress.reshape(3, 3))
        if stress.shape != (6,):
            raise ValueError(
                f"{where}: stress has shape {stress.shape}, expected Voigt (6,) or 3x3"
            )
        if not np.isfinite(stress).all():
            raise ValueError(f"{where}: stress contains NaN or inf")

    bare = Atoms(numbers=atoms.numbers, positions=positions, cell=atoms.cell, pbc=atoms.pbc)
    return Frame(atoms=bare, energy=energy, forces=forces, stress=stress, index=k)


def _read_db(path: Path) -> list[Atoms]:
    import ase.db

    out = []
    with ase.db.connect(path) as db:
        for row in db.select():
            atoms = row.toatoms()
            atoms.info.update(row.key_value_pairs)
            for name, value in (row.get("data") or {}).items():
                if np.ndim(value) == 2 and np.shape(value)[0] == len(atoms):  # per-atom
                    atoms.arrays[name] = np.asarray(value)
                else:
                    atoms.info[name] = value
            out.append(atoms)
    return out


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
    ValueError
        Naming the frame: missing or ambiguous labels (with the keys found), NaN/inf in
        positions, cell, energy, forces or stress, forces not ``[n, 3]``, an unknown element.

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
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"data file {path} does not exist")
        if path.suffix == ".db":
            images = _read_db(path)
        else:
            from ase.io import read

            images = read(path, index=":")
        name = str(path)
    else:
        images, name = list(source), ""
    if not images:
        raise ValueError(f"no structures in {name or 'the data'}")
    return [
        _frame_from_atoms(
            a, k, keys=keys, elements=elements, require_forces=require_forces, source=name
        )
        for k, a in enumerate(images)
    ]


def split_indices(
    n: int, *, valid_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[int]]:
    """A random train/valid/test split of ``range(n)``, fixed by ``seed``.

    Sizes are ``round(fraction · n)`` for valid and test, the rest is train (at least one).

    Examples
    --------
    >>> s = split_indices(10, valid_fraction=0.2, test_fraction=0.1, seed=0)
    >>> [len(s[k]) for k in ("train", "valid", "test")]
    [7, 2, 1]
    """
    n_valid, n_test = round(valid_fraction * n), round(test_fraction * n)
    if n - n_valid - n_test < 1:
        raise ValueError(
            f"{n} frames leave no training frame with valid_fraction={valid_fraction} and "
            f"test_fraction={test_fraction}"
        )
    order = np.random.default_rng(seed).permutation(n).tolist()
    return {
        "valid": sorted(order[:n_valid]),
        "test": sorted(order[n_valid : n_valid + n_test]),
        "train": sorted(order[n_valid + n_test :]),
    }


def fit_reference_energies(frames: Sequence[Frame], elements: Sequence[int]) -> np.ndarray:
    """Per-element reference energies E0 ``[n_elements]`` (eV) by least squares.

    Solves ``min_E0 || N E0 − E ||₂`` with ``N[k, z]`` the number of atoms of element z in
    frame k. Elements with isolated-atom frames take the mean of those energies and the rest
    are fitted to ``E − N_fixed E0_fixed``. An element in no frame gets 0 (with a warning); an
    under-determined fit (compositions linearly dependent) gets the minimum-norm solution.

    Examples
    --------
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


def frames_to_graphs(
    frames: Sequence[Frame],
    elements: Sequence[int],
    cutoff: float,
    *,
    dtype: torch.dtype = torch.float64,
) -> list[Graph]:
    """One graph per frame; an error names the frame it comes from."""
    graphs = []
    for frame in frames:
        try:
            graphs.append(atoms_to_graph(frame.atoms, elements, cutoff, dtype=dtype))
        except ValueError as err:
            raise ValueError(f"frame {frame.index}: {err}") from None
    return graphs


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


@dataclass
class Batch:
    """A graph batch with its labels (G graphs, n atoms).

    ``energy [G]`` eV, ``forces [n, 3]`` eV/Å with ``forces_mask [n]`` (atoms with a label),
    ``stress [G, 3, 3]`` eV/Å³ with ``stress_mask [G]`` (frames with a stress label and a cell
    of rank 3), ``num_atoms [G]``, loss weights ``weight [G]``; ``indices`` are the frames'
    positions in their source.
    """

    graph: Graph
    energy: torch.Tensor
    forces: torch.Tensor
    forces_mask: torch.Tensor
    stress: torch.Tensor
    stress_mask: torch.Tensor
    num_atoms: torch.Tensor
    indices: list[int]
    weight: torch.Tensor | None = None

    @property
    def stress_computable(self) -> bool:
        """Every cell has rank 3, so ``energy_forces_stress(stress=True)`` can run."""
        return bool((torch.linalg.det(self.graph.cell).abs() > 1e-9).all())


def make_batch(frames: Sequence[Frame], graphs: Sequence[Graph]) -> Batch:
    """Batch graphs and stack the labels of their frames (in the graphs' dtype)."""
    graph = batch_graphs(graphs)
    dtype = graph.positions.dtype
    forces, forces_mask = [], []
    for f in frames:
        n = len(f.atoms)
        forces.append(np.zeros((n, 3)) if f.forces is None else f.forces)
        forces_mask.append(np.full(n, f.forces is not None))
    stress = [
        voigt_6_to_full_3x3_stress(f.stress) if f.has_stress else np.zeros((3, 3)) for f in frames
    ]

    def tensor(x, dt=dtype):
        return torch.as_tensor(np.asarray(x), dtype=dt)

    return Batch(
        graph=graph,
        energy=tensor([f.energy for f in frames]),
        forces=tensor(np.concatenate(forces)),
        forces_mask=tensor(np.concatenate(forces_mask), torch.bool),
        stress=tensor(np.stack(stress)),
        stress_mask=tensor([f.has_stress for f in frames], torch.bool),
        num_atoms=tensor([len(f.atoms) for f in frames]),
        indices=[f.index for f in frames],
        weight=tensor([f.weight for f in frames]),
    )
