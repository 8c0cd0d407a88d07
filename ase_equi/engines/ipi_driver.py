"""A model as an ``i-pi-py_driver -m custom`` potential (i-PI's own Python client).

For users who run i-PI's client rather than ``ase-equi ipi``: i-PI's driver loads this file by
its path and calls :class:`AseEquiDriver` with one structure, or with lists of structures for
a batched request (``<ffsocket><batch_size>``), which are evaluated in one model call::

    i-pi-py_driver -u -a water -m custom \\
        -P "$(python -c 'import ase_equi.engines.ipi_driver as d; print(d.__file__)')" \\
        -o template=water.xyz,model=molecules-pbe,dtype=float32

Options after ``-o`` (comma-separated ``key=value``): ``template`` (a structure file with
i-PI's atoms in i-PI's order) and ``model`` (zoo name or file), and optionally ``dtype``,
``device``, ``head`` and ``skin`` as in :class:`~ase_equi.calculator.EquivariantCalculator`;
any other keyword is refused. The numbers are those of :mod:`ase_equi.engines.ipi` (the
same evaluation, atomic units in and out); no "extras" are returned.

i-PI finds the class through the two module-level names below; the imports are absolute
because i-PI loads the file outside its package.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ase import Atoms
from ase.io import read

from ase_equi.engines.ipi import BeadEvaluator

__DRIVER_NAME__ = "ase_equi"
__DRIVER_CLASS__ = "AseEquiDriver"

__all__ = ["AseEquiDriver"]


class AseEquiDriver:
    """i-PI's driver interface: ``driver(cell, pos) -> (V, forces, virial, extras)``.

    ``cell`` is i-PI's ``h`` (bohr, cell vectors as columns) and ``pos`` ``[n, 3]`` (bohr), or
    lists of both for a batched request (then a list of answers, one model call).
    """

    def __init__(
        self,
        template: str,
        model: str,
        dtype: str = "float64",
        device: str = "cpu",
        head: str | None = None,
        skin: float = 1.0,
    ) -> None:
        structure = read(template, index=0)
        assert isinstance(structure, Atoms)  # one frame (index=0)
        self.beads = BeadEvaluator(
            model, structure, dtype=dtype, device=device, head=head, skin=float(skin)
        )

    def __call__(self, cell: Any, pos: Any) -> Any:
        if isinstance(cell, list):
            replies = self.beads.many([np.asarray(h) for h in cell], [np.asarray(q) for q in pos])
            return [(v, f, w, "") for v, f, w in replies]
        potential, forces, virial = self.beads.one(np.asarray(cell), np.asarray(pos))
        return potential, forces, virial, ""
