"""Old import paths of modules that moved, kept working for one release with a warning.

``import ase_equi.verlet_list`` (say) still works after the module moved to
``ase_equi.neighbours.verlet``: a finder on ``sys.meta_path`` (installed when ``ase_equi`` is
imported) answers for each old path in :data:`MOVED` with a module that holds the new module's
names, and warns with a ``DeprecationWarning`` naming the new path. The objects are the same
(``ase_equi.verlet_list.VerletNeighbourList is ase_equi.neighbours.verlet.VerletNeighbourList``),
so ``isinstance`` checks and pickles keep working. Nothing inside the package imports an old
path (a test checks this).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from collections.abc import Sequence

# old module path -> new module path (each stage adds its own moves to its block)
MOVED: dict[str, str] = {
    # --- neighbours/ and graph/ ---
    "ase_equi.verlet_list": "ase_equi.neighbours.verlet",
    "ase_equi.device_neighbours": "ase_equi.neighbours.device",
    "ase_equi.resident_graph": "ase_equi.graph.resident",
    # --- io/ ---
    "ase_equi.io.mace_import": "ase_equi.io.mace.convert",
    "ase_equi.io.mace_pickle": "ase_equi.io.mace.reader",
    "ase_equi.io.pickled_tree": "ase_equi.io.mace.tree",
    "ase_equi.io.pickled_objects": "ase_equi.io.mace.objects",
    "ase_equi.io.pickle_bounds": "ase_equi.io.mace.bounds",
    # --- data/, training/, cli/ ---
    "ase_equi.data_file": "ase_equi.data.extxyz",
    "ase_equi.batch": "ase_equi.data.batch",
    "ase_equi.statistics": "ase_equi.data.statistics",
    "ase_equi.training.commands": "ase_equi.cli.training",
    # --- model/ ---
}


class _MovedModuleLoader(importlib.abc.Loader):
    def __init__(self, new_name: str) -> None:
        self.new_name = new_name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return types.ModuleType(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        warnings.warn(
            f"{module.__name__} moved to {self.new_name}; the old path keeps working until the "
            "next release",
            DeprecationWarning,
            stacklevel=2,
        )
        new = importlib.import_module(self.new_name)
        public = {k: v for k, v in vars(new).items() if not k.startswith("__")}
        module.__dict__.update(public)
        module.__doc__ = f"Moved to :mod:`{self.new_name}`."
        module.__getattr__ = lambda name: getattr(new, name)  # type: ignore[method-assign]


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds the old paths listed in :data:`MOVED` (and nothing else)."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        new_name = MOVED.get(fullname)
        if new_name is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _MovedModuleLoader(new_name))


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (idempotent)."""
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
