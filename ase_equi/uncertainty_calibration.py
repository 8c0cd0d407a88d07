"""Calibration of a committee's force uncertainty on labelled validation structures.

Model: the force error of atom i, :math:`e_i = \\bar F_i - F_i^{\\mathrm{ref}}` (3 components),
is Gaussian with per-component variance :math:`(s\\,u_i)^2 / 3`, where :math:`u_i` is the
uncalibrated ``forces_uncertainty`` (the norm of the three component standard deviations; see
:mod:`ase_equi.uncertainty`) and s the calibration factor. The s that minimises the negative
log-likelihood of all errors is, in closed form,

.. math::

    s^2 = \\frac{1}{N} \\sum_i \\frac{|e_i|^2}{u_i^2}

(over the N atoms with :math:`u_i > 0`): the RMS of the normalised errors is then one.

The miscalibration area compares, for every expected coverage p of a central Gaussian
interval, the fraction of normalised error components :math:`z = \\sqrt3\\,e_{i\\alpha}/(s u_i)`
that fall inside it, :math:`A = \\int_0^1 |\\mathrm{observed}(p) - p|\\,dp` (0: perfectly
calibrated; at most 0.5).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
from ase import Atoms

from .io.model_committee import write_calibration

__all__ = [
    "calibrate_committee",
    "calibration_curve",
    "calibration_plot",
    "fit_calibration",
    "force_errors",
    "miscalibration_area",
]


def force_errors(calc: Any, frames: Sequence[Atoms]) -> tuple[np.ndarray, np.ndarray]:
    """``(errors [N, 3], u [N])``: committee mean force minus the label (eV/Å) and the
    *uncalibrated* forces_uncertainty (eV/Å) of every atom of ``frames`` (labelled by a
    calculator or ``SinglePointCalculator``; ``calc`` is an EquivariantCalculator of a
    committee, whose own calibration factor is divided out)."""
    errors, sigmas = [], []
    for frame in frames:
        if frame.calc is None or "forces" not in frame.calc.results:
            raise ValueError("every validation frame needs reference forces (a labelled frame)")
        reference = np.asarray(frame.calc.results["forces"], dtype=float)
        atoms = frame.copy()
        atoms.calc = calc
        errors.append(atoms.get_forces() - reference)
        sigmas.append(calc.get_property("forces_uncertainty", atoms) / calc.calibration)
    return np.concatenate(errors), np.concatenate(sigmas)


def _usable(errors: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = sigma > 0
    if not keep.any():
        raise ValueError("no atom has a nonzero force uncertainty: nothing to calibrate on")
    return errors[keep], sigma[keep]


def fit_calibration(errors: np.ndarray, sigma: np.ndarray) -> float:
    """The factor s of the module docstring (maximum likelihood), from ``errors [N, 3]``
    (eV/Å) and uncalibrated ``sigma [N]`` (eV/Å).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> sigma = rng.uniform(0.1, 1.0, 20000)
    >>> errors = 2.0 * sigma[:, None] / np.sqrt(3) * rng.standard_normal((20000, 3))
    >>> round(fit_calibration(errors, sigma), 2)
    2.0
    """
    e, u = _usable(np.asarray(errors), np.asarray(sigma))
    return float(np.sqrt(np.mean(np.sum(e**2, axis=1) / u**2)))


def calibration_curve(
    errors: np.ndarray, sigma: np.ndarray, factor: float = 1.0, points: int = 99
) -> tuple[np.ndarray, np.ndarray]:
    """``(expected, observed)`` coverage of central Gaussian intervals, ``points`` values of
    p in (0, 1) (see the module docstring)."""
    e, u = _usable(np.asarray(errors), np.asarray(sigma))
    z = np.abs(np.sqrt(3.0) * e / (factor * u[:, None])).ravel()
    expected = np.linspace(0, 1, points + 2)[1:-1]
    unit = NormalDist()
    bounds = np.array([unit.inv_cdf(0.5 + p / 2) for p in expected])
    observed = (z[None, :] <= bounds[:, None]).mean(axis=1)
    return expected, observed


def miscalibration_area(errors: np.ndarray, sigma: np.ndarray, factor: float = 1.0) -> float:
    """:math:`\\int_0^1 |\\mathrm{observed}(p) - p|\\,dp` (midpoint rule over 99 points)."""
    expected, observed = calibration_curve(errors, sigma, factor)
    return float(np.mean(np.abs(observed - expected)))


def calibration_plot(
    errors: np.ndarray, sigma: np.ndarray, factors: dict[str, float], path: str | os.PathLike
) -> Path | None:
    """Observed vs expected coverage for each ``{label: factor}``, written to ``path`` (PNG);
    None (and nothing written) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot([0, 1], [0, 1], "k:", label="ideal")
    for label, factor in factors.items():
        expected, observed = calibration_curve(errors, sigma, factor)
        area = miscalibration_area(errors, sigma, factor)
        ax.plot(expected, observed, label=f"{label} (s = {factor:.3g}, area {area:.3f})")
    ax.set_xlabel("expected coverage of the Gaussian interval")
    ax.set_ylabel("observed fraction of force components")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def calibrate_committee(
    model_file: str | os.PathLike,
    frames: Sequence[Atoms],
    *,
    plot: str | os.PathLike | None = None,
    data: str = "",
) -> dict[str, Any]:
    """Fit s on labelled validation ``frames``, store it in the committee file's
    ``uncertainty_calibration`` and return that entry (factor, miscalibration area after
    fitting, number of force components; ``area_before``: the uncalibrated area, also stored
    under that name in the returned dict only). ``plot``: a PNG of the calibration curves."""
    from .calculator import EquivariantCalculator

    calc = EquivariantCalculator(model_file)
    errors, sigma = force_errors(calc, frames)
    factor = fit_calibration(errors, sigma)
    entry = {
        "factor": factor,
        "quantity": "forces",
        "method": "gaussian_nll",
        "n_values": int(3 * np.count_nonzero(sigma > 0)),
        "miscalibration_area": miscalibration_area(errors, sigma, factor),
        "data": data or f"{len(frames)} validation structures",
    }
    write_calibration(model_file, entry)
    if plot is not None:
        calibration_plot(errors, sigma, {"uncalibrated": 1.0, "calibrated": factor}, plot)
    return {**entry, "area_before": miscalibration_area(errors, sigma, 1.0)}
