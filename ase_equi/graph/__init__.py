"""Stage 2 of the pipeline: neighbour lists become the tensors a model sees (Atoms → Graph).

- :mod:`~ase_equi.graph.tensors`: the :class:`Graph` dataclass and its glossary, and
  :func:`edge_vectors` (torch only: the model stage imports this and :mod:`.layout`, nothing
  else of the package);
- :mod:`~ase_equi.graph.layout`: index bookkeeping on a graph (:class:`NeighbourLayout`,
  :class:`ElementGroups`);
- :mod:`~ase_equi.graph.build`: Atoms → Graph (:func:`atoms_to_graph`, :func:`batch_graphs`,
  :func:`element_indices`) and the calculator's host graph source (:class:`HostGraph`);
- :mod:`~ase_equi.graph.frame`: the frame a graph is given in (reduced cell, atoms moved into
  it and centred), which keeps float32 edge vectors exact;
- :mod:`~ase_equi.graph.resident`: a graph kept on the device between Verlet-list rebuilds
  (:class:`ResidentGraph`).
"""

from .build import (
    GraphSource,
    HostGraph,
    atoms_to_graph,
    batch_graphs,
    check_neutral,
    element_indices,
)
from .layout import ElementGroups, NeighbourLayout
from .resident import ResidentGraph
from .tensors import Graph, edge_vectors

__all__ = [
    "ElementGroups",
    "Graph",
    "GraphSource",
    "HostGraph",
    "NeighbourLayout",
    "ResidentGraph",
    "atoms_to_graph",
    "batch_graphs",
    "check_neutral",
    "edge_vectors",
    "element_indices",
]
