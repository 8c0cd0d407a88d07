"""Weighted energy / force / stress loss, and the error metrics reported during training.

For a batch of G graphs with n_g atoms each,

.. math::

    L = w_E \\frac{1}{G} \\sum_g \\Big(\\frac{E_g - \\hat E_g}{n_g}\\Big)^2
      + w_F \\frac{1}{3 N_F} \\sum_{i, c} (F_{ic} - \\hat F_{ic})^2
      + w_\\sigma \\frac{1}{9 G_\\sigma} \\sum_{g, a, b} (\\sigma_{g,ab} - \\hat\\sigma_{g,ab})^2,

where hats are reference labels, N_F counts atoms with a force label and G_σ graphs with a
stress label and a cell of rank 3. Each term is a sum of squared errors divided by a count, so
data-parallel training can add the sums and counts of all processes and get the loss of the
whole batch (see :func:`weighted_loss`).

Metrics are MAE and RMSE of the energy per atom (meV/atom), of the force components (meV/Å)
and of the stress components (meV/Å³).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.batch import Batch

QUANTITIES = ("energy", "forces", "stress")
UNITS = {"energy": "meV/atom", "forces": "meV/Å", "stress": "meV/Å³"}


@dataclass(frozen=True)
class LossWeights:
    """Weights w_E, w_F, w_σ of the three terms (MACE's common choice 1 : 100 : 1)."""

    energy: float = 1.0
    forces: float = 100.0
    stress: float = 1.0

    def __post_init__(self) -> None:
        for name in QUANTITIES:
            if not getattr(self, name) >= 0:
                raise ValueError(f"LossWeights.{name} must be >= 0, got {getattr(self, name)}")


def _errors(pred: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
    """Signed errors of the labelled entries: ``energy [G]`` (eV/atom), ``forces [N_F, 3]``,
    ``stress [G_σ, 3, 3]`` (empty when stress was not predicted)."""
    out = {"energy": (pred["energy"] - batch.energy) / batch.num_atoms}
    out["forces"] = (pred["forces"] - batch.forces)[batch.forces_mask]
    if "stress" in pred:
        out["stress"] = (pred["stress"] - batch.stress)[batch.stress_mask]
    else:
        out["stress"] = pred["energy"].new_zeros((0, 3, 3))
    return out


def squared_error_sums(
    pred: dict[str, torch.Tensor], batch: Batch
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{quantity: (sum of weighted squared errors, number of components)}`` for one batch.

    Each frame's squared errors are multiplied by its ``batch.weight`` (1 by default); the
    counts are not, so a weight w counts a frame w times as much as a normal one.
    """
    errors = _errors(pred, batch)
    w = batch.weight
    if w is not None:
        per_atom = torch.repeat_interleave(w, batch.num_atoms.long())[batch.forces_mask]
        scale = {"energy": w, "forces": per_atom[:, None]}
        if errors["stress"].numel():
            scale["stress"] = w[batch.stress_mask][:, None, None]
    else:
        scale = {}
    return {
        name: (
            (err.pow(2) * scale[name]).sum() if name in scale else err.pow(2).sum(),
            torch.tensor(float(err.numel()), dtype=err.dtype),
        )
        for name, err in errors.items()
    }


def weighted_loss(
    sums: dict[str, tuple[torch.Tensor, torch.Tensor]],
    weights: LossWeights,
    *,
    counts: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """``Σ_q w_q · sum_q / count_q`` (a term with no labelled component counts 0).

    ``counts`` replaces the batch's own counts, e.g. by those of the global batch of all
    data-parallel processes.

    Examples
    --------
    >>> s = {"energy": (torch.tensor(2.0), torch.tensor(4.0)),
    ...      "forces": (torch.tensor(3.0), torch.tensor(6.0)),
    ...      "stress": (torch.tensor(0.0), torch.tensor(0.0))}
    >>> float(weighted_loss(s, LossWeights(energy=1.0, forces=10.0)))
    5.5
    """
    total: torch.Tensor | None = None
    for name, (sq, n) in sums.items():
        n = n if counts is None else counts[name]
        w = getattr(weights, name)
        if w > 0 and float(n) > 0:
            term = w * sq / n
            total = term if total is None else total + term
    if total is None:  # nothing labelled: a zero on the sums' device and graph
        total = next(iter(sums.values()))[0] * 0.0
    return total


class ErrorMetrics:
    """Running MAE / RMSE of energy per atom, force and stress components over many batches.

    ``totals [3, 3]`` holds, per quantity (energy, forces, stress), the sum of absolute errors,
    the sum of squared errors and the number of components, in eV units and float64, so that
    data-parallel processes can add theirs with one ``all_reduce``.

    Examples
    --------
    >>> m = ErrorMetrics()
    >>> m.totals[0] = torch.tensor([0.004, 1e-5, 2.0], dtype=torch.float64)  # errors 1, 3 meV
    >>> round(m.summary()["energy_mae"], 9), round(m.summary()["energy_rmse"], 9)
    (2.0, 2.236067977)
    """

    def __init__(self, *, keep_values: bool = False) -> None:
        self.totals = torch.zeros(3, 3, dtype=torch.float64)
        self.keep_values = keep_values
        self.values: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {
            q: ([], []) for q in QUANTITIES
        }

    def update(self, pred: dict[str, torch.Tensor], batch: Batch) -> None:
        errors = _errors(pred, batch)
        for k, name in enumerate(QUANTITIES):
            err = errors[name].detach().to(torch.float64)
            self.totals[k] += torch.stack(
                [err.abs().sum(), err.pow(2).sum(), torch.tensor(float(err.numel()))]
            )
        if self.keep_values:
            refs = {
                "energy": batch.energy / batch.num_atoms,
                "forces": batch.forces[batch.forces_mask],
                "stress": batch.stress[batch.stress_mask],
            }
            for name in QUANTITIES:
                err = errors[name].detach().to(torch.float64).reshape(-1)
                if err.numel() == 0:  # e.g. stress labels in a batch where it was not computed
                    continue
                ref = refs[name].detach().to(torch.float64).reshape(-1)
                self.values[name][0].append(ref)
                self.values[name][1].append(ref + err)

    def all_reduce(self) -> None:
        """Add the totals of all processes (``torch.distributed``, when initialised)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.totals)

    def loss(self, weights: LossWeights) -> float:
        """The weighted loss of everything accumulated (same definition as in training)."""
        sums = {q: (self.totals[k, 1], self.totals[k, 2]) for k, q in enumerate(QUANTITIES)}
        return float(weighted_loss(sums, weights))

    def summary(self) -> dict[str, float]:
        """``{q}_mae``, ``{q}_rmse`` in meV units (see ``UNITS``) and ``{q}_count``; quantities
        without labels are left out."""
        out: dict[str, float] = {}
        for k, name in enumerate(QUANTITIES):
            abs_sum, sq_sum, n = (float(x) for x in self.totals[k])
            if n > 0:
                out[f"{name}_mae"] = 1000.0 * abs_sum / n
                out[f"{name}_rmse"] = 1000.0 * (sq_sum / n) ** 0.5
                out[f"{name}_count"] = int(n)
        return out

    def parity(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference and predicted values (eV units) kept for a parity plot."""
        ref, pred = self.values[name]
        if not ref:
            return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
        return torch.cat(ref), torch.cat(pred)
