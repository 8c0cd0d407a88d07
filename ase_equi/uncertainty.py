"""Uncertainty of a committee as ASE calculator results, and what to do when it is large.

For a committee of M members (:mod:`ase_equi.model.committee`) with energies :math:`E_m`,
forces :math:`F_{m,i\\alpha}` and stresses :math:`\\sigma_{m,k}` (Voigt), and the calibration
factor s stored with the committee (1 when uncalibrated), the calculator reports

* ``energy``, ``forces``, ``stress``: the member means (the exact derivatives of the mean
  energy);
* ``energy_uncertainty`` (eV, float): :math:`s\\,\\mathrm{std}_m(E_m)`;
* ``forces_uncertainty`` (eV/Å, shape ``(n_atoms,)``): per atom the norm of the vector of the
  three component standard deviations, :math:`u_i = s\\sqrt{\\sum_\\alpha
  \\mathrm{std}_m(F_{m,i\\alpha})^2}` (the root of the trace of atom i's force covariance);
* ``stress_uncertainty`` (eV/Å³, shape ``(6,)``, Voigt order, cells of rank 3 only):
  :math:`s\\,\\mathrm{std}_m(\\sigma_{m,k})` per component,

with the *sample* standard deviation, :math:`\\mathrm{std}_m(x) = \\sqrt{\\frac{1}{M-1}
\\sum_m (x_m - \\bar x)^2}` (divisor M − 1).

The threshold (calculator option ``uncertainty_threshold``, eV/Å) applies to
:math:`\\max_i u_i`, the largest atomic force uncertainty.

A single model whose file has a prediction-rigidity section gives ``energy_uncertainty`` and
``forces_uncertainty`` (same units and shapes, same threshold) from its last-layer features
instead, calibrated by the section's factors (:mod:`ase_equi.model.prediction_rigidity`); it
has no ``stress_uncertainty``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from ase.stress import full_3x3_to_voigt_6_stress

from .errors import AseEquiError
from .graph.tensors import Graph
from .io.model_committee import LoadedCommittee
from .io.model_file import LoadedModel
from .model import prediction_rigidity
from .model.committee import member_derivatives, member_spread
from .option_checks import is_finite_number

__all__ = [
    "UNCERTAINTY_PROPERTIES",
    "UncertainStructureError",
    "UncertaintyWarning",
    "act_on_uncertainty",
    "check_uncertainty_options",
    "committee_pass",
    "refusal",
    "rigidity_pass",
    "uncertainty_properties",
]

UNCERTAINTY_PROPERTIES = ("energy_uncertainty", "forces_uncertainty", "stress_uncertainty")


class UncertaintyWarning(UserWarning):
    """The largest atomic force uncertainty passed the calculator's threshold."""


class UncertainStructureError(AseEquiError):
    """The committee's largest atomic force uncertainty passed the threshold
    (``on_uncertain="raise"``); the message gives the value, the threshold and the atom."""


def refusal(name: str, model_name: str) -> str:
    """The message of a calculator asked for an uncertainty its model does not give."""
    if name == "stress_uncertainty":
        return (
            f"stress_uncertainty needs a committee: model '{model_name}' is one model, and its "
            "prediction-rigidity estimate (if any) defines energy and force uncertainties only"
        )
    return (
        f"{name} needs a committee or a prediction-rigidity section, but model '{model_name}' "
        "is one model without one: give EquivariantCalculator a committee file or a list of "
        'model files (EquivariantCalculator(["a.json", "b.json", ...])), or add the section '
        "with scripts/uncertainty/zoo_rigidity.py"
    )


def uncertainty_properties(loaded: LoadedModel | LoadedCommittee) -> list[str]:
    """The uncertainty properties a loaded model gives: all three for a committee, energy and
    forces for a model with a prediction-rigidity section, none otherwise."""
    if isinstance(loaded, LoadedCommittee):
        return list(UNCERTAINTY_PROPERTIES)
    return list(UNCERTAINTY_PROPERTIES[:2]) if loaded.rigidity is not None else []


def rigidity_pass(
    loaded: LoadedModel, graph: Graph, forces: bool, stress: bool
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """One pass of a single model with its prediction-rigidity section ``loaded.rigidity``:
    :func:`~ase_equi.model.prediction_rigidity.rigidity_pass` (``energy_uncertainty``,
    ``forces_uncertainty``, calibrated by the section's factors)."""
    if loaded.rigidity is None:
        raise ValueError(refusal("energy_uncertainty", loaded.name))
    return prediction_rigidity.rigidity_pass(loaded.model, graph, loaded.rigidity, forces, stress)


def committee_pass(
    model: torch.nn.Module,
    graph: Graph,
    forces: bool,
    stress: bool,
    factor: float,
    each: bool = True,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """One committee evaluation with every member's energy, and with ``each`` every member's
    derivatives (needed for ``forces_uncertainty`` and ``stress_uncertainty``; without it
    only the mean forces and stress, cheaper for a shallow ensemble).

    Returns ``(out, extra)``: ``out`` as from
    :func:`~ase_equi.model.gradients.energy_forces_stress` (member means: ``energy [1]``,
    ``node_energies [n]``, ``forces [n, 3]``, ``stress [1, 3, 3]`` when asked), ``extra`` the
    uncertainties as numpy (see the module docstring), multiplied by ``factor``.
    """
    members = member_derivatives(model, graph, forces=forces, stress=stress, each=each)
    energy = members["member_node_energies"].double().sum(1)  # [M], accumulated in float64
    out = {
        "node_energies": members["member_node_energies"].mean(0),
        "energy": members["member_energy"].mean(0),
    }
    extra: dict[str, Any] = {"energy_uncertainty": factor * float(member_spread(energy)[1])}
    if not each:
        out.update({k: members[k] for k in ("forces", "stress") if k in members})
        return out, extra
    if forces:
        mean, std = member_spread(members["member_forces"].double())  # [n, 3]
        out["forces"] = mean
        norm = torch.linalg.norm(std, dim=-1)  # [n]
        extra["forces_uncertainty"] = factor * norm.cpu().numpy()
    if stress:
        mean, _ = member_spread(members["member_stress"])
        out["stress"] = mean
        voigt = np.array(
            [
                full_3x3_to_voigt_6_stress(s[0])
                for s in members["member_stress"].double().cpu().numpy()
            ]
        )  # [M, 6]
        extra["stress_uncertainty"] = factor * voigt.std(0, ddof=1)
    return out, extra


def act_on_uncertainty(
    atoms: Any,
    results: dict[str, Any],
    threshold: float | None,
    action: str | Callable[..., Any],
) -> None:
    """Warn, raise or call ``action(atoms, max_uncertainty, results)`` when the largest atomic
    force uncertainty (eV/Å) passes ``threshold`` (nothing when it is None or not passed)."""
    if threshold is None or "forces_uncertainty" not in results:
        return
    per_atom = np.asarray(results["forces_uncertainty"])
    if per_atom.size == 0 or not per_atom.max() > threshold:
        return
    worst = int(per_atom.argmax())
    value = float(per_atom[worst])
    message = (
        f"force uncertainty {value:.4g} eV/Å on atom {worst} "
        f"({atoms.get_chemical_symbols()[worst]}) passes uncertainty_threshold="
        f"{threshold:g} eV/Å: the model is extrapolating; label this structure"
    )
    if action == "warn":
        warnings.warn(message, UncertaintyWarning, stacklevel=4)
    elif action == "raise":
        raise UncertainStructureError(message)
    else:
        assert callable(action)
        action(atoms, value, results)


def check_uncertainty_options(threshold: Any, action: Any) -> None:
    """``ValueError`` naming the option unless ``uncertainty_threshold`` is None or a number
    > 0 (eV/Å) and ``on_uncertain`` is ``"warn"``, ``"raise"`` or a callable."""
    if threshold is not None and not (is_finite_number(threshold) and threshold > 0):
        raise ValueError(
            f"uncertainty_threshold must be None or a number > 0 (eV/Å, on the largest atomic "
            f"force uncertainty), got {threshold!r}"
        )
    if action not in ("warn", "raise") and not callable(action):
        raise ValueError(
            "on_uncertain must be 'warn', 'raise' or a callable f(atoms, max_uncertainty, "
            f"results), got {action!r}"
        )
