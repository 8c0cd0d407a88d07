"""A structure's graph kept on the compute device between MD steps.

On a GPU, the per-step cost of the host is what limits an MD step of a fast model: building or
filtering the neighbour list in numpy, uploading the edges, and every read of a device value
back to the host (a synchronisation). A :class:`ResidentGraph` keeps, between Verlet-list
rebuilds, everything but the positions on the device:

- the candidate edges within ``r_max + skin`` of the last build, *unfiltered*: pairs that are
  now beyond ``r_max`` stay in the graph, where the radial envelope (exactly zero for
  r ≥ r_max, with its derivative) gives them zero weight, so energies, forces and stress are
  those of the filtered graph up to the order of floating-point sums;
- the per-receiver layout (:class:`~ase_equi.graph.layout.NeighbourLayout`) and the
  element groups (:class:`~ase_equi.graph.layout.ElementGroups`), kept on the graph, whose
  construction reads sizes back from the device once per build.

A step then uploads the positions (``[n, 3]``) and runs the model with no read from the
device until the results are copied back. On a GPU the rebuilds themselves run there too
(:func:`~ase_equi.neighbours.device.device_neighbour_list`), so that the edges are never
uploaded; on CPU the host list (matscipy) is used. The price is the edges within the skin: about
``((r_max + skin) / r_max)³`` times as many (1.6× for 6 Å and a 1 Å skin). That is why the
CPU path, where the cost follows the edges, filters instead
(:class:`~ase_equi.graph.build.HostGraph`; the calculator uses this class on GPUs by default,
and on CPU only when asked). This class owns the only Verlet list in that mode.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import ase
import numpy as np
import torch

from ..neighbours import (
    NeighbourList,
    VerletNeighbourList,
    device_neighbour_list,
)
from .build import atoms_to_graph
from .frame import GraphFrame, graph_frame
from .tensors import Graph


class ResidentGraph:
    """The graph of one structure on ``device``, rebuilt only with the Verlet list.

    Parameters
    ----------
    elements:
        The model's element table (atomic numbers).
    r_max:
        The model's cutoff, Å.
    skin:
        Verlet skin, Å (> 0: with no skin every step would rebuild).
    dtype, device:
        Of the graph's floating-point tensors.
    model_name:
        For error messages (unknown elements).
    device_list:
        Build the neighbour list on ``device`` with torch (default: when it is not the CPU)
        rather than with matscipy on the host.
    max_chunk_bytes:
        Memory bound of the model call, put on every graph (``None``: no bound).
    """

    def __init__(
        self,
        elements: Sequence[int],
        r_max: float,
        skin: float,
        *,
        dtype: torch.dtype,
        device: torch.device | str,
        model_name: str = "model",
        device_list: bool | None = None,
        max_chunk_bytes: int | None = None,
    ) -> None:
        if not skin > 0:
            raise ValueError(f"a resident graph needs a Verlet skin > 0 Å, got {skin}")
        self.elements, self.r_max = tuple(elements), float(r_max)
        self.dtype, self.device, self.model_name = dtype, torch.device(device), model_name
        self.neighbours = VerletNeighbourList(r_max, skin)
        if device_list is None:
            device_list = self.device.type != "cpu"
        self.device_list = device_list
        self.max_chunk_bytes = max_chunk_bytes
        self.graph: Graph | None = None
        self.frame: GraphFrame | None = None
        self.uploads = 0  # graph uploads (= Verlet-list builds)

    def update(self, atoms: ase.Atoms) -> Graph:
        """The graph, with its layout and groups, for the current positions of ``atoms``.

        Raises ``ValueError`` (from the neighbour list or
        :func:`~ase_equi.graph.build.atoms_to_graph`) for non-finite positions, unknown
        elements or coincident atoms at a build; non-finite positions always rebuild.
        """
        build = self._device_build if self.device_list else None
        candidates, rebuilt = self.neighbours.candidates(atoms, build)
        if rebuilt or self.graph is None or self.frame is None:
            graph = atoms_to_graph(
                atoms,
                self.elements,
                self.r_max,
                dtype=self.dtype,
                device=self.device,
                model_name=self.model_name,
                neighbours=NO_EDGES,
                max_chunk_bytes=self.max_chunk_bytes,
            )
            if self.device_list:  # the edges are already device tensors
                senders, receivers, shifts = candidates
            else:
                senders, receivers, shifts = (
                    torch.as_tensor(np.ascontiguousarray(x), device=self.device)
                    for x in (candidates.senders, candidates.receivers, candidates.shifts)
                )
            # the graph's frame (self.frame), kept until the next build
            self.frame = graph_frame(atoms)
            shifts = self.frame.device_shifts(shifts, senders, receivers)
            self.graph = graph.with_edges(senders, receivers, shifts.to(self.dtype))
            self.uploads += 1
        else:
            positions = torch.as_tensor(
                np.ascontiguousarray(self.frame.positions(atoms.positions)),
                dtype=self.dtype,
                device=self.device,
            )
            self.graph = dataclasses.replace(self.graph, positions=positions)
        return self.graph

    def _device_build(
        self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return device_neighbour_list(positions, cell, pbc, cutoff, device=self.device)


NO_EDGES = NeighbourList(
    senders=np.zeros(0, dtype=np.int64),
    receivers=np.zeros(0, dtype=np.int64),
    shifts=np.zeros((0, 3), dtype=np.int64),
)
