"""Exact Hessians of structures, ASE vibrations and phonopy force constants from them.

Every function takes ``(atoms, model, *, dtype=..., device=..., ...)``, ``model`` being a zoo
name, a model file, a MACE file or a loaded model, as for the calculator. The Hessian comes from
automatic differentiation (:func:`ase_equi.model.hessian.hessian_rows`), in float64 by default,
not from finite differences.

Examples
--------
Vibrational frequencies of a molecule in one line (ASE's ``VibrationsData``):

>>> from ase.build import molecule
>>> vib = vibrations_data(molecule("H2O"), "molecules-pbe")
>>> vib.get_frequencies().shape
(9,)
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms
from ase.constraints import FixAtoms
from ase.vibrations import VibrationsData

from .graph.build import atoms_to_graph
from .io.model_file import LoadedModel
from .loading import load_for_inference
from .model.hessian import hessian_rows
from .neighbours import check_positions

__all__ = ["hessian", "model_hessian", "phonopy_force_constants", "vibrations_data"]

ModelArgument = str | os.PathLike | LoadedModel


def model_hessian(
    atoms: Atoms,
    loaded: LoadedModel,
    *,
    indices: Sequence[int] | None = None,
    rows_per_chunk: int | None = None,
    max_bytes: int = 2**30,
) -> np.ndarray:
    """The square Hessian block of ``indices`` with an already loaded model, in its dtype.

    Returns ``[3k, 3k]`` float64 numpy (eV/Å², symmetrised: ``(H + Hᵀ)/2`` of the exact rows,
    which differ from it by rounding only); ``k = len(atoms)`` when ``indices`` is ``None``.
    """
    check_positions(atoms.positions)
    given = np.arange(len(atoms)) if indices is None else np.asarray(indices)
    if given.size and given.dtype.kind not in "iu":  # 0.7 or True would be cast to an atom
        raise ValueError(f"indices must be integer atom indices, got {given.tolist()!r:.200}")
    picked = given.astype(np.int64)
    if picked.ndim != 1 or len(set(picked.tolist())) != len(picked):
        raise ValueError(f"indices must be distinct atom indices, got {list(picked)}")
    if len(atoms) == 0 or len(picked) == 0:
        return np.zeros((3 * len(picked), 3 * len(picked)))
    parameter = next(loaded.model.parameters())
    graph = atoms_to_graph(
        atoms,
        loaded.config.elements,
        loaded.config.r_max,
        dtype=parameter.dtype,
        device=parameter.device,
        model_name=f"model '{loaded.name}'",
    )
    model = loaded.model.eval()
    rows = hessian_rows(
        model,
        graph,
        indices=torch.as_tensor(picked),
        rows_per_chunk=rows_per_chunk,
        max_bytes=max_bytes,
    )
    columns = (3 * picked[:, None] + np.arange(3)).reshape(-1)
    block = rows.detach().cpu().double().numpy()[:, columns]
    return 0.5 * (block + block.T)


def hessian(
    atoms: Atoms,
    model: ModelArgument,
    *,
    dtype: str = "float64",
    device: str = "cpu",
    head: str | None = None,
    indices: Sequence[int] | None = None,
    rows_per_chunk: int | None = None,
    max_bytes: int = 2**30,
) -> np.ndarray:
    """∂²E/∂r∂r of ``atoms`` (eV/Å²) as ``[3k, 3k]``, rows and columns ``3i + a`` of ``indices``.

    Parameters
    ----------
    atoms:
        Any periodicity; a periodic cell gives its Γ-point force constants.
    model:
        Zoo name, model file, MACE file or :class:`~ase_equi.io.model_file.LoadedModel` (a
        loaded model in another ``dtype`` or ``device`` is copied, as by :func:`load_model`).
    dtype, device:
        ``"float64"`` (default) or ``"float32"``; torch device.
    head:
        Head of a multi-head model.
    indices:
        Atoms whose block is wanted (e.g. an adsorbate on a frozen slab, as the ``indices`` of
        ``ase.vibrations.Vibrations``); only their 3k rows are computed. ``None``: all atoms.
    rows_per_chunk, max_bytes:
        Rows per backward pass and memory bound of a chunk
        (:func:`ase_equi.model.hessian.hessian_rows`).

    Raises
    ------
    ValueError
        Bad ``dtype`` (named), repeated or out-of-range indices, or what the graph builder
        refuses (unknown element, NaN positions, coincident atoms).
    """
    loaded = load_for_inference(model, dtype=dtype, device=device, head=head)
    return model_hessian(
        atoms, loaded, indices=indices, rows_per_chunk=rows_per_chunk, max_bytes=max_bytes
    )


def vibrations_data(
    atoms: Atoms,
    model: ModelArgument,
    *,
    dtype: str = "float64",
    device: str = "cpu",
    head: str | None = None,
    indices: Sequence[int] | None = None,
) -> VibrationsData:
    """ASE's :class:`~ase.vibrations.VibrationsData` from one exact Hessian.

    Same modes and frequencies as ``ase.vibrations.Vibrations(atoms, indices=indices)`` on the
    same model's calculator, without its 6k force calls and their finite-difference error. As
    there, ``indices=None`` means every atom that no ``FixAtoms`` constraint holds (a frozen
    slab under an adsorbate is left out); other constraints do not change the atoms.
    """
    if indices is None:
        fixed = {
            int(i) for c in atoms.constraints if isinstance(c, FixAtoms) for i in c.get_indices()
        }
        indices = [i for i in range(len(atoms)) if i not in fixed]
    block = hessian(atoms, model, dtype=dtype, device=device, head=head, indices=indices)
    return VibrationsData.from_2d(atoms, block, indices=list(indices))


def phonopy_force_constants(
    supercell: Atoms,
    model: ModelArgument,
    *,
    dtype: str = "float64",
    device: str = "cpu",
    head: str | None = None,
) -> np.ndarray:
    """Full force constants of a supercell for phonopy: ``[N, N, 3, 3]`` (eV/Å²).

    ``fc[i, j, a, b] = ∂²E/∂r_{ia}∂r_{jb}`` of the supercell (its Γ-point Hessian), in the atom
    order of ``supercell``: build it from phonopy's supercell so the orders match, then
    ``phonon.force_constants = phonopy_force_constants(supercell, model)``.
    """
    n = len(supercell)
    block = hessian(supercell, model, dtype=dtype, device=device, head=head)
    return block.reshape(n, 3, n, 3).transpose(0, 2, 1, 3).copy()
