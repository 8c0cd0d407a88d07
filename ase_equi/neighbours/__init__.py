"""Stage 1 of the pipeline: which atoms are neighbours (Atoms → edges).

Knows ASE, numpy, matscipy and torch only. Every list follows one convention (see
:mod:`ase_equi.neighbours.host`): ``edge_vectors = positions[receivers] − positions[senders] +
shifts @ cell`` for every ordered pair and periodic image closer than the cutoff.

- :mod:`~ase_equi.neighbours.cell`: input checks, the search cell, bounds on periodic images,
  the reduced basis of a skewed lattice;
- :mod:`~ase_equi.neighbours.host`: the search on the host (matscipy, or pair by pair in a
  sparse box);
- :mod:`~ase_equi.neighbours.verlet`: a list reused between MD steps with a Verlet skin;
- :mod:`~ase_equi.neighbours.device`: the search with torch on the compute device.
"""

from .cell import (
    COINCIDENT_DISTANCE,
    change_basis,
    check_periodic_images,
    check_positions,
    reduced_basis,
)
from .device import device_neighbour_list, integer_matmul
from .host import NeighbourList, neighbour_list, neighbour_list_from_atoms
from .verlet import VerletNeighbourList

__all__ = [
    "COINCIDENT_DISTANCE",
    "NeighbourList",
    "VerletNeighbourList",
    "change_basis",
    "check_periodic_images",
    "check_positions",
    "device_neighbour_list",
    "integer_matmul",
    "neighbour_list",
    "neighbour_list_from_atoms",
    "reduced_basis",
]
