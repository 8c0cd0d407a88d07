"""Helpers shared by the tests: one random rotation, one covariance assertion.

Imported by name (``from helpers import random_rotation``) from any folder of ``tests/``, like
``conftest``: ``pythonpath = ["tests"]`` in ``pyproject.toml`` puts ``tests/`` on ``sys.path``.

The covariance assertion states what a symmetry operation g = (R, permutation p) does to the
calculator's results, whatever the weights of the model are:

- energy E invariant: E' = E;
- per-atom energies permuted: e'_k = e_{p(k)};
- forces rotate as vectors: F'_k = R F_{p(k)};
- stress rotates as a rank-2 tensor: σ' = R σ Rᵀ.

A rigid or lattice translation is the case R = 1, p = identity; inversion is R = −1.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

SYMMETRY_RTOL = 1e-10  # relative; float64 round-off of a sum over a few hundred edges


def random_rotation(rng: np.random.Generator | int, *, improper: bool = False) -> np.ndarray:
    """A random orthogonal matrix, uniform (Haar) over the proper rotations, ``[3, 3]`` float64.

    Parameters
    ----------
    rng
        A numpy generator, or a seed for one.
    improper
        Return −R (det = −1: a rotation followed by inversion) instead of R (det = +1).

    Examples
    --------
    >>> r = random_rotation(0)
    >>> bool(np.allclose(r @ r.T, np.eye(3))), round(float(np.linalg.det(r)), 12)
    (True, 1.0)
    >>> round(float(np.linalg.det(random_rotation(0, improper=True))), 12)
    -1.0
    """
    rng = np.random.default_rng(rng)
    # QR of a Gaussian matrix with R's diagonal made positive is Haar-distributed over O(3).
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return -q if improper else q


def rotated(atoms: Atoms, rotation: np.ndarray) -> Atoms:
    """A copy of ``atoms`` with positions and cell rows turned by ``rotation`` ``[3, 3]``.

    Both are rows of Cartesian vectors, so each row v becomes R v, i.e. ``array @ R.T``.
    """
    turned = atoms.copy()
    turned.set_cell(atoms.cell.array @ rotation.T, scale_atoms=False)
    turned.positions = atoms.positions @ rotation.T
    return turned


def max_relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual − expected| / max |expected|: a relative error for arrays of mixed scale.

    >>> max_relative_error(np.array([1.0, 2.1]), np.array([1.0, 2.0]))  # doctest: +ELLIPSIS
    0.05000...
    """
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def assert_covariant(
    before: dict,
    after: dict,
    rotation: np.ndarray,
    permutation: np.ndarray | None = None,
    *,
    rtol: float = SYMMETRY_RTOL,
) -> float:
    """Assert E' = E, e'_k = e_{p(k)}, F'_k = R F_{p(k)}, σ' = R σ Rᵀ (see the module docstring).

    Parameters
    ----------
    before, after
        Results before and after the operation: ``energy`` (float, eV), ``energies``
        ``[n_atoms]`` (eV), ``forces`` ``[n_atoms, 3]`` (eV/Å) and ``stress`` ``[3, 3]``
        (eV/Å³, or None without a cell of rank 3).
    rotation
        R ``[3, 3]``, proper or improper (``np.eye(3)`` for translations and permutations).
    permutation
        p ``[n_atoms]``: atom k after the operation is atom p(k) before; None for the identity.
    rtol
        Largest relative error allowed for each quantity.

    Returns
    -------
    float
        The worst relative error over the quantities (to print).
    """
    p = np.arange(len(before["forces"])) if permutation is None else permutation
    errors = {
        "energy": abs(after["energy"] - before["energy"]) / abs(before["energy"]),
        "energies": max_relative_error(after["energies"], before["energies"][p]),
        "forces": max_relative_error(after["forces"], before["forces"][p] @ rotation.T),
    }
    if before["stress"] is not None:
        expected = rotation @ before["stress"] @ rotation.T
        errors["stress"] = max_relative_error(after["stress"], expected)
    for key, error in errors.items():
        assert error <= rtol, f"{key}: relative error {error:.2e} > {rtol:.0e}"
    return max(errors.values())
