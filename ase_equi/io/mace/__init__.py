"""MACE ``.model`` files: read without executing pickled code, converted to our models.

:mod:`.reader` reads the torch zip archive into inert data (:mod:`.unpickler`, :mod:`.tree`,
:mod:`.objects`, :mod:`.torchscript`), within the resource bounds of :mod:`.bounds`;
:mod:`.convert` checks the architecture (:mod:`.support`) and renames the tensors onto
:class:`~ase_equi.model.mace.MaceModel`.
"""

from .convert import load_mace_model, mace_heads, mace_to_ase_equi
from .objects import GlobalRef, PickledModule, PickledObject
from .reader import read_mace_model, state_dict

__all__ = [
    "GlobalRef",
    "PickledModule",
    "PickledObject",
    "load_mace_model",
    "mace_heads",
    "mace_to_ase_equi",
    "read_mace_model",
    "state_dict",
]
