"""A model's predictions on many structures, and their errors against reference labels.

Two steps, as a user checks a model on their own data before trusting it:

1. :func:`evaluate` runs the model on every structure and returns copies carrying the
   predictions (energy, free_energy and per-atom ``energies`` in eV, ``forces [n, 3]`` in eV/Å,
   ``stress [6]`` in eV/Å³, ASE Voigt order, for cells of rank 3) in a
   ``SinglePointCalculator``; ``ase.io.write("out.xyz", predicted)`` saves them.
2. :func:`label_errors` compares those predictions with the labels of the same structures
   (read as :func:`ase_equi.data.read_frames` reads training data) and returns a
   :class:`LabelErrors`: MAE and RMSE of the energy per atom (meV/atom), of the force
   components (meV/Å), of the stress components (meV/Å³; 1 meV/Å³ = 0.1602 GPa), the force
   errors by the element of the atom, and all three per ``config_type`` (``atoms.info``).

``ase-equi eval MODEL DATA [--output OUT.xyz]`` does both from the command line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from .batched import Progress, batched_results, check_budget_mib, iter_batches
from .data.extxyz import structures_from
from .io.model_file import LoadedModel
from .loading import load_for_inference
from .prediction_errors import ErrorStats, GroupErrors, LabelErrors, label_errors

# label_errors and its results live in prediction_errors; importable from here as before
__all__ = ["ErrorStats", "GroupErrors", "LabelErrors", "evaluate", "label_errors"]

PREDICTED = ("energy", "free_energy", "energies", "forces", "stress")
EVALUATED = ("energy", "forces", "stress")  # what ``properties`` may name


def _loaded(model: Any, *, dtype: str | None, device: str | None, head: str | None) -> LoadedModel:
    """The model to evaluate with: a calculator's own model (its dtype, device and head; one
    of them asked otherwise is refused), else :func:`~ase_equi.loading.load_for_inference` of
    ``model`` (float64 on the CPU unless asked otherwise)."""
    from .calculator import EquivariantCalculator

    if not isinstance(model, EquivariantCalculator):
        return load_for_inference(
            model, dtype=dtype or "float64", device=device or "cpu", head=head
        )
    own = model.parameters
    asked = {"dtype": dtype, "device": device, "head": head}
    for name, value in asked.items():
        if value is None:
            continue
        same = (
            torch.device(value) == torch.device(own["device"])
            if name == "device"
            else value == own[name]
        )
        if not same:
            raise ValueError(
                f"evaluate(..., {name}={value!r}) with a calculator whose {name} is "
                f"{own[name]!r}: a calculator is evaluated as it is; give the model file (or "
                f"calc.set({name}={value!r})) to evaluate with another {name}"
            )
    return model.loaded


def _wanted(properties: Sequence[str]) -> tuple[bool, bool]:
    """``(forces, stress)`` from ``properties``; anything else than energy/forces/stress is
    refused (by name)."""
    if isinstance(properties, str):
        properties = (properties,)
    unknown = [p for p in properties if p not in EVALUATED]
    if unknown:
        raise ValueError(
            f"properties {', '.join(map(repr, unknown))} not known: evaluate gives "
            + ", ".join(EVALUATED)
        )
    return "forces" in properties, "stress" in properties


def _annotated(atoms: Atoms, results: dict[str, Any]) -> Atoms:
    """A copy of ``atoms`` (numbers, positions, cell, pbc, info and arrays that are not named
    like a prediction) with ``results`` in a ``SinglePointCalculator``."""
    copy = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    copy.info.update({k: v for k, v in atoms.info.items() if k not in PREDICTED})
    for name, values in atoms.arrays.items():
        if name not in PREDICTED and name not in copy.arrays:
            copy.arrays[name] = np.array(values)
    copy.calc = SinglePointCalculator(copy, **results)
    return copy


def evaluate(
    structures: str | os.PathLike | Sequence[Atoms],
    model: Any,
    *,
    properties: Sequence[str] = ("energy", "forces", "stress"),
    batch_size: int | str = "auto",
    budget_mib: float | None = None,
    dtype: str | None = None,
    device: str | None = None,
    head: str | None = None,
    verbose: bool = True,
) -> list[Atoms]:
    """Copies of ``structures`` carrying the model's predictions, many structures per model call.

    The structures are joined into batches (one disconnected graph each, any mix of sizes,
    elements and periodicity) and each batch costs one model call; the numbers are those of
    the calculator on one structure at a time (to rounding, ~1e-12 eV in float64).

    Parameters
    ----------
    structures:
        ``Atoms`` objects, or a data file (extxyz, ASE database, ...; errors name the frame).
    model:
        A zoo name, a model file path, a MACE ``.model`` file, a loaded model, or an
        :class:`~ase_equi.calculator.EquivariantCalculator` (its model, dtype and device).
    properties:
        Any of ``"energy"``, ``"forces"``, ``"stress"``: the energy is always computed, forces
        and stress (each one backward pass shared by both) only when named.
    batch_size:
        Structures per model call (an int), or ``"auto"``: consecutive structures share a call
        while its estimated peak memory stays within ``budget_mib``
        (:func:`ase_equi.batched.plan_batches`; throughput in ``benchmarks/results/``).
    budget_mib:
        Memory budget of one model call for ``"auto"`` (MiB): the estimated peak of its
        forward and backward pass, over what the process already holds. ``None``: 256 MiB on a
        CPU, half the free memory of a GPU (:func:`ase_equi.batched.default_budget_mib`).
    dtype, device, head:
        As for the calculator (``None``: float64, for numbers comparable with labels, on the
        CPU, the default head). With a calculator as ``model``: its own; a different value is
        refused, not ignored.
    verbose:
        Write a live progress line on stderr.

    Returns
    -------
    list of Atoms
        Same order, numbers, positions, cell, pbc, ``info`` and ``arrays`` as the input, less
        any ``info``/``arrays`` entry named like a prediction (``energy``, ``forces``,
        ``stress``, ``energies``, ``free_energy``: those labels are not carried over), with a
        ``SinglePointCalculator`` holding ``energy``, ``free_energy`` (eV), ``energies``
        (eV per atom), ``forces [n, 3]`` (eV/Å) when asked and, when asked, for cells of rank
        3, ``stress [6]`` (eV/Å³, Voigt order xx yy zz yz xz xy).

    Raises
    ------
    ValueError
        An unknown property or batch size, a dtype, device or head other than a calculator's
        own, or a structure the model cannot take (named by its index: an element it does not
        know, NaN positions, coincident atoms).

    Examples
    --------
    >>> from ase.build import bulk
    >>> structures = [bulk("Cu", "fcc", a=3.6), bulk("Cu", "fcc", a=3.6, cubic=True)]
    >>> predicted = evaluate(structures, "metals", verbose=False)
    >>> sorted(predicted[0].calc.results)
    ['energies', 'energy', 'forces', 'free_energy', 'stress']
    >>> e = [atoms.get_potential_energy() / len(atoms) for atoms in predicted]
    >>> abs(e[0] - e[1]) < 1e-9
    True
    """
    forces, stress = _wanted(properties)
    check_budget_mib(budget_mib)
    images = structures_from(structures, "evaluate")
    loaded = _loaded(model, dtype=dtype, device=device, head=head)
    progress = Progress(len(images), sys.stderr if verbose else None)
    out: list[Atoms] = []
    for indices, graphs in iter_batches(images, loaded, batch_size, budget_mib=budget_mib):
        results = batched_results(graphs, loaded, forces=forces, stress=stress)
        out.extend(_annotated(images[k], r) for k, r in zip(indices, results, strict=True))
        progress.step(len(out), sum(len(images[k]) for k in indices))
    return out
