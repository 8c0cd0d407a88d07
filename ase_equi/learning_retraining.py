"""How on-the-fly learning retrains the model after a reference call: the training settings
(:func:`retraining_config`) and the learning rate of each call (:class:`RefitRate`).

**The learning rate follows how wrong the model was on the structure it learns.** AdamW moves
every weight by about the learning rate per step whatever the size of the gradient, so a
warm-started model is shaken by the same amount whether it erred by 0.02 or by 3 eV/Å on the
new structure. A rate that suits a structure far outside the training domain destroys what a
model that is nearly right already knew: on the ``metals`` demonstration (L1₂ Ni₃Al, EMT) one
retraining at 5e-3 raised the test force RMSE from 0.0175 to 0.030 eV/Å whatever frame was
learned, while at the rate the parent's last training stage started from (2e-4) each call
lowered it (six calls: 0.0131); on the ``molecules-pbe`` one (molecules it never saw, parent
force RMSE 1.35 eV/Å) that small rate learned too slowly (six calls: 0.42 against 0.23 eV/Å at
5e-3). Hence, for call k with the model in use erring by :math:`e_k` (force RMSE on the labelled
structure, eV/Å), and a parent whose card records its training stages and test errors,

.. math::

    \\mathrm{lr}_k = \\mathrm{clip}\\big(\\mathrm{lr}_\\mathrm{last}\\, e_k / e_\\mathrm{test},
    \\ \\mathrm{lr}_\\mathrm{last},\\ \\mathrm{lr}_\\mathrm{first}\\big),

with :math:`e_\\mathrm{test}` the parent's test force RMSE, lr_last the learning rate its last
training stage started from and lr_first the rate its first stage started from, but at most a
ceiling, :data:`RETRAIN_LR` (5e-3) by default: a model as right on the new structure as on its
own test set continues at the rate it ended its training with, a model 20× worse at 20× that
rate. The ceiling: the zoo's first stages started at 1e-2, a rate for training from scratch
on a thousand structures; on the ``molecules-pbe`` demonstration the every-N-th schedule
retrained at 1e-2 after its first call (the model erred by 3.2 eV/Å there), the MD with the
new model then opened oxirane's ring, and the reference's SCF did not converge on the
ring-opened structure (``benchmarks/results/``
``2026-12-01-learn-on-the-fly-molecules-paced-rate-ceiling0.01.md``), while in every run at
5e-3 or capped there the molecules stayed whole (``scripts/uncertainty/learn_demo_bonds.py``).
As the model learns, the errors of later calls, and with them the rate, fall. (The offline
replays of both demonstrations' labelled frames that chose the rule:
``benchmarks/results/2026-12-01-refit-rate.md``.)
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

from .training.config import TrainConfig
from .training.finetune_defaults import parent_loss_weights

__all__ = [
    "RETRAIN_EPOCHS",
    "RETRAIN_LR",
    "RefitRate",
    "parent_card",
    "refit_rate",
    "retraining_config",
]

#: epochs of each retraining (every committee member)
RETRAIN_EPOCHS = 30
#: the fixed learning rate when the parent's card does not give a :class:`RefitRate`
RETRAIN_LR = 0.005
#: eV/Å per unit of a card's force errors
FORCE_UNITS = {"meV/Å": 1e-3, "eV/Å": 1.0}


@dataclass(frozen=True)
class RefitRate:
    """The learning rate of the retraining after a call, ``rate(e)`` for a model erring by
    ``e`` (force RMSE, eV/Å) on the labelled structure: ``last · e / test_force_rmse``
    clipped to [``last``, ``first``] (module docstring).

    >>> rate = RefitRate(first=1e-2, last=2e-4, test_force_rmse=0.036)
    >>> rate(0.018), rate(0.36), rate(5.0)
    (0.0002, 0.002, 0.01)
    """

    first: float
    last: float
    test_force_rmse: float

    def __post_init__(self) -> None:
        for name in ("first", "last", "test_force_rmse"):
            value = getattr(self, name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not 0 < value < math.inf:
                raise ValueError(f"RefitRate.{name} must be a number > 0, got {value!r}")
        if self.last > self.first:
            raise ValueError(f"RefitRate: last ({self.last}) above first ({self.first})")

    def __call__(self, force_rmse: float) -> float:
        scaled = self.last * float(force_rmse) / self.test_force_rmse
        return float(min(max(scaled, self.last), self.first))

    @classmethod
    def from_card(cls, card: dict[str, Any], ceiling: float | None = None) -> RefitRate | None:
        """The rate of a parent whose card records at least two training stages with their
        learning rates and a test force RMSE in meV/Å or eV/Å (every zoo model's does); None
        otherwise (one training gives no rate it ended with: its schedule decayed from its
        only one). ``first``: the first stage's rate, at most ``ceiling`` (default
        :data:`RETRAIN_LR`) but not below the last stage's."""
        cap = RETRAIN_LR if ceiling is None else ceiling
        if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 0 < cap < math.inf:
            raise ValueError(f"RefitRate.from_card: ceiling must be a number > 0, got {ceiling!r}")
        stages = card.get("training_stages")
        if not isinstance(stages, list) or len(stages) < 2:
            return None
        rates = [((s or {}).get("settings") or {}).get("lr") for s in stages]
        errors = card.get("test_errors") or {}
        unit = FORCE_UNITS.get(str((card.get("test_error_units") or {}).get("forces")))
        given = [*rates, errors.get("forces_rmse")]
        numbers = [float(x) for x in given if isinstance(x, (int, float)) and x > 0]
        if unit is None or len(numbers) != len(given):
            return None
        first, last, rmse = numbers[0], numbers[-2], numbers[-1]
        first = max(min(first, float(cap)), last)
        return cls(first=first, last=last, test_force_rmse=rmse * unit)

    def describe(self) -> str:
        """One line for ``OUT/setup.json``."""
        return (
            f"per call: {self.last:g} x (force RMSE on the labelled structure) / "
            f"{self.test_force_rmse:g} eV/Å, clipped to [{self.last:g}, {self.first:g}] "
            "(the parent's last training stage's rate, its first stage's at most the ceiling, "
            "its test force RMSE)"
        )


def retraining_config(
    epochs: int = RETRAIN_EPOCHS, lr: float = RETRAIN_LR, parent_card: dict[str, Any] | None = None
) -> TrainConfig:
    """The training of the model (every committee member) after a reference call (the default of
    :func:`~ase_equi.learning.learn_on_the_fly` and ``ase-equi learn``): warm start from the
    member's weights, ``epochs`` over the learned frames plus the replay, learning rate ``lr``
    (replaced per call by a :class:`RefitRate` when the loop uses one), all frames trained on
    (no validation or test split: the next reference call is the test), no plots.

    Loss weights: those the parent ended its training with (``parent_card``, its model card:
    the last training stage, as fine-tuning takes them,
    :func:`~ase_equi.training.finetune_defaults.parent_loss_weights`; 1000 : 100 : 10000 for
    every zoo model), else :class:`~ase_equi.training.config.TrainConfig`'s. Trained with
    weights the parent did not end with, the model leaves its energy minimum for another
    balance of energy and forces at every call."""
    config = TrainConfig(epochs=epochs, lr=lr, valid_fraction=0.0, test_fraction=0.0, plots=False)
    weights = parent_loss_weights(parent_card or {})
    if weights is None:
        return config
    return dataclasses.replace(
        config,
        energy_weight=weights["energy_weight"],
        forces_weight=weights["forces_weight"],
        stress_weight=weights["stress_weight"],
    )


def parent_card(model: str | os.PathLike) -> dict[str, Any]:
    """The model card in the header of ``model`` (a zoo name or a model file; {} if none)."""
    from .io.model_file import read_header
    from .zoo import ZOO_PINS, zoo_path

    path = zoo_path(model) if isinstance(model, str) and model in ZOO_PINS else model
    card = read_header(path).get("card")
    return card if isinstance(card, dict) else {}


def refit_rate(
    given: float | RefitRate | None, config: TrainConfig, from_card: RefitRate | None
) -> float | RefitRate:
    """The learning rate of the retrainings (``refit_lr`` of :func:`learn_on_the_fly`):
    ``given``, else ``from_card``, else ``config.lr``; ``ValueError`` for a number that is not
    > 0."""
    if given is None:
        return from_card or config.lr
    if isinstance(given, RefitRate):
        return given
    if isinstance(given, bool) or not isinstance(given, (int, float)) or not 0 < given < math.inf:
        raise ValueError(f"refit_lr must be a number > 0 or a RefitRate, got {given!r}")
    return float(given)
