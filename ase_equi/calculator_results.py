"""Model outputs → the calculator's ``results``: numpy float64 in ASE's shapes and units.

``energy`` and ``free_energy`` (eV, summed in float64 whatever the model's dtype), ``energies``
(eV per atom, ``[n]``), ``forces`` (eV/Å, ``[n, 3]``) and ``stress`` (eV/Å³, Voigt order xx yy
zz yz xz xy), and the results of a structure with no atoms, where there is nothing to evaluate.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ase.stress import full_3x3_to_voigt_6_stress

__all__ = ["no_atoms_results", "results_of"]


def results_of(out: dict[str, torch.Tensor], *, forces: bool, stress: bool) -> dict[str, Any]:
    """``results`` from one graph's model outputs (``node_energies``, ``forces``, ``stress``);
    ``FloatingPointError`` when the energies or forces are not finite."""
    energies = out["node_energies"].detach().cpu().double().numpy()
    energy = float(energies.sum())  # accumulated in float64, whatever the model's dtype
    results: dict[str, Any] = {"energy": energy, "free_energy": energy, "energies": energies}
    if forces:
        results["forces"] = out["forces"].detach().cpu().double().numpy().reshape(-1, 3)
    if stress:
        sigma = out["stress"][0].detach().cpu().double().numpy()  # [3, 3]
        results["stress"] = full_3x3_to_voigt_6_stress(sigma)
    for key in ("energies", "forces"):
        if key in results and not np.isfinite(results[key]).all():
            raise FloatingPointError(f"model produced non-finite {key} for this structure")
    return results


def no_atoms_results(*, forces: bool, stress: bool, hessian: bool, spread: bool) -> dict[str, Any]:
    """``results`` of a structure with no atoms: zero energy, empty arrays, zero stress."""
    results: dict[str, Any] = {"energy": 0.0, "free_energy": 0.0, "energies": np.zeros(0)}
    if forces:
        results["forces"] = np.zeros((0, 3))
    if stress:
        results["stress"] = np.zeros(6)
    if hessian:
        results["hessian"] = np.zeros((0, 0))
    if spread:
        results.update(energy_uncertainty=0.0, forces_uncertainty=np.zeros(0))
    return results
