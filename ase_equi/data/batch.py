"""Frames → graphs, and batches of graphs with their label tensors, for training."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase.stress import voigt_6_to_full_3x3_stress

from ..errors import DataFileError
from ..graph import Graph, atoms_to_graph, batch_graphs
from .frames import Frame

__all__ = ["Batch", "frames_to_graphs", "make_batch"]


def frames_to_graphs(
    frames: Sequence[Frame],
    elements: Sequence[int],
    r_max: float,
    *,
    dtype: torch.dtype = torch.float64,
) -> list[Graph]:
    """One graph per frame; an error (:class:`~ase_equi.errors.DataFileError`) names the frame
    it comes from (``Frame.index``, its position in the source, counted from 0)."""
    graphs = []
    for frame in frames:
        try:
            graphs.append(atoms_to_graph(frame.atoms, elements, r_max, dtype=dtype))
        except ValueError as err:
            raise DataFileError(f"frame {frame.index}: {err}") from None
    return graphs


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
