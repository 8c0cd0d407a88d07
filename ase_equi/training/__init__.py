"""Training: labelled data → a model file with a measured test report.

>>> from ase_equi.training import TrainConfig, train  # doctest: +SKIP
>>> result = train(model_config, "data.xyz", TrainConfig(output_dir="run"))  # doctest: +SKIP
"""

from .loss import ErrorMetrics, LossWeights
from .trainer import TrainConfig, TrainResult, train

__all__ = ["ErrorMetrics", "LossWeights", "TrainConfig", "TrainResult", "train"]
