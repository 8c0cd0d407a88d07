"""Train / valid / test splits of labelled frames, fixed by a seed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .frames import Frame

__all__ = ["split_frames", "split_indices"]


def split_indices(
    n: int, *, valid_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[int]]:
    """A random train/valid/test split of ``range(n)``, fixed by ``seed``.

    Sizes are ``round(fraction · n)`` for valid and test, the rest is train (at least one).

    Examples
    --------
    >>> s = split_indices(10, valid_fraction=0.2, test_fraction=0.1, seed=0)
    >>> [len(s[k]) for k in ("train", "valid", "test")]
    [7, 2, 1]
    """
    n_valid, n_test = round(valid_fraction * n), round(test_fraction * n)
    if n - n_valid - n_test < 1:
        raise ValueError(
            f"{n} frames leave no training frame with valid_fraction={valid_fraction} and "
            f"test_fraction={test_fraction}"
        )
    order = np.random.default_rng(seed).permutation(n).tolist()
    return {
        "valid": sorted(order[:n_valid]),
        "test": sorted(order[n_valid : n_valid + n_test]),
        "train": sorted(order[n_valid + n_test :]),
    }


def split_frames(
    frames: Sequence[Frame], *, valid_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[int]]:
    """Frame indices ``train``/``valid``/``test`` (:func:`split_indices` over the frames that
    are not isolated atoms) and ``isolated`` (one-atom frames, which only fix E0).

    This is the split :func:`ase_equi.training.train` makes and records in ``split.json``.
    """
    isolated = [k for k, f in enumerate(frames) if f.is_isolated_atom]
    rest = [k for k, f in enumerate(frames) if not f.is_isolated_atom]
    parts = split_indices(
        len(rest), valid_fraction=valid_fraction, test_fraction=test_fraction, seed=seed
    )
    split = {name: [rest[i] for i in ids] for name, ids in parts.items()}
    split["isolated"] = isolated
    return split
