"""A loss on defect formation energies: a defect cell against its perfect host, same cell.

A vacancy formation energy, ``E_v = E(N−1) − (N−1)/N · E(N)``, is about 1 eV, the difference
of two totals of several hundred eV. The energy term of the training loss looks at each
frame's energy per atom, and a model can meet both frames to 0.5 meV/atom and still miss
``E_v`` by 50 meV (5 %): the difference is a quantity the loss never sees. Frames that share
one cell (to ``1e-8`` Å), are periodic in all directions and hold a single element, with
different numbers of atoms, the larger one at rest (a perfect host, every reference force
below 1e-4 eV/Å), form a *defect pair* (i, j) (defect i, host j; N_i < N_j for a vacancy,
N_i > N_j for an interstitial); its error is

.. math::

    e_{ij} = \\Big(E_i - \\frac{N_i}{N_j} E_j\\Big)^{model}
           - \\Big(E_i - \\frac{N_i}{N_j} E_j\\Big)^{ref}

in eV (for a vacancy or interstitial cell and its host, the error of its formation energy). The
penalty is ``weight × mean(e²)`` over the pairs drawn at a step. Only frames of the training
split take part; both ends of each difference are committed reference energies.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch
from paired_frames import PairedFrames, PairSampling

from ase_equi.data import Frame
from ase_equi.model.gradients import energy_forces_stress


def defect_pairs(
    frames: Sequence[Frame], ids: Sequence[int], *, interstitials: bool = True
) -> list[tuple[int, int]]:
    """``(i, j)`` with N_i ≠ N_j for frames of ``ids`` of one element each that share a
    periodic cell (to 1e-8 Å), the host j at rest (no reference force above 1e-4 eV/Å: not a
    snapshot of a hot or rattled crystal, whose difference to a defect cell is no formation
    energy). Without ``interstitials`` only pairs with N_i < N_j (vacancies)."""
    by_cell: dict[tuple, list[int]] = defaultdict(list)
    for i in ids:
        atoms = frames[i].atoms
        if not atoms.pbc.all() or len(set(atoms.numbers)) != 1:
            continue
        cell = np.round(atoms.cell.array / 1e-8).astype(np.int64)
        by_cell[(int(atoms.numbers[0]), cell.tobytes())].append(i)
    out = []
    for group in by_cell.values():
        hosts = [j for j in group if _at_rest(frames[j])]
        for i in group:
            n_i = len(frames[i].atoms)
            out += [
                (i, j)
                for j in hosts
                if n_i < len(frames[j].atoms)
                or (interstitials and n_i > len(frames[j].atoms) and i not in hosts)
            ]
    return out


def _at_rest(frame: Frame) -> bool:
    """Every reference force below 1e-4 eV/Å: a perfect (or fully relaxed) host."""
    return frame.forces is not None and float(np.abs(frame.forces).max()) < 1e-4


class DefectPairPenalty:
    """``weight × mean(e²)`` of the module docstring over the pairs ``sampling`` draws at each
    call, as a ``penalty`` of :func:`ase_equi.training.train`."""

    def __init__(
        self,
        frames: Sequence[Frame],
        ids: Sequence[int],
        sampling: PairSampling,
        *,
        weight: float,
        interstitials: bool = True,
    ) -> None:
        self.weight = weight
        self.pairs = defect_pairs(frames, ids, interstitials=interstitials)
        if not self.pairs:
            raise ValueError("no defect pairs among the frames: nothing for the penalty")
        self.paired = PairedFrames(frames, self.pairs, sampling)
        self.num_pairs = len(self.pairs)

    def errors(
        self,
        model: torch.nn.Module,
        pairs: Sequence[tuple[int, int]] | None = None,
        *,
        training: bool = False,
    ) -> torch.Tensor:
        """``e [pairs]`` (eV) of ``model`` on ``pairs`` (default: all)."""
        batch, first, second = self.paired.batch(self.pairs if pairs is None else pairs)
        ratio = batch.num_atoms[first].to(batch.energy.dtype) / batch.num_atoms[second]
        energy = energy_forces_stress(model, batch.graph, forces=False, training=training)
        diff = energy["energy"] - batch.energy
        return diff[first] - ratio * diff[second]

    def __call__(self, model: torch.nn.Module) -> torch.Tensor:
        return self.weight * self.errors(model, self.paired.draw(), training=True).pow(2).mean()
