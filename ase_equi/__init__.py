"""ase_equi: E(3)-equivariant MACE-architecture interatomic potentials for ASE.

Public API::

    from ase_equi import EquivariantCalculator, ModelConfig, MaceModel, load_model, save_model
"""

from .calculator import EquivariantCalculator
from .io.model_file import load_model, save_model
from .model.config import ModelConfig
from .model.mace import MaceModel

__all__ = ["EquivariantCalculator", "MaceModel", "ModelConfig", "load_model", "save_model"]
__version__ = "0.1.0"
