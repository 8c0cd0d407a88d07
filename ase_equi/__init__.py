"""ase_equi: E(3)-equivariant MACE-architecture interatomic potentials for ASE.

Public API (examples and the README import only these)::

    from ase_equi import (EquivariantCalculator, load_model, save_model, MaceModel, ModelConfig,
                          train, TrainConfig, finetune, evaluate, label_errors, relax)
"""

from . import _moved
from .calculator import EquivariantCalculator
from .evaluate import evaluate
from .io.model_file import save_model
from .loading import load_model
from .model.config import ModelConfig
from .model.mace import MaceModel
from .prediction_errors import label_errors
from .relax import relax
from .training.finetune import finetune
from .training.trainer import TrainConfig, train

__all__ = [
    "EquivariantCalculator",
    "MaceModel",
    "ModelConfig",
    "TrainConfig",
    "evaluate",
    "finetune",
    "label_errors",
    "load_model",
    "relax",
    "save_model",
    "train",
]
__version__ = "0.1.0"

_moved.install()  # old module paths keep working for one release, with a DeprecationWarning
