"""A loss on the stress *differences* between homogeneously strained copies of one structure.

An elastic constant is a slope, dσ/dε. The stress term of the training loss weights every
frame's absolute stress, so a model can meet the strained frames' stresses to its usual
accuracy (about 1 meV/Å³) and still miss their slope by 5 %: at 0.75 % strain the slope error
of 5 % of C11 ≈ 1 eV/Å³ is 0.4 meV/Å³, inside the noise the loss tolerates. This term looks at
the slope alone. Frames that are the same structure under different homogeneous strains (same
atomic numbers, same fractional coordinates: not rattled, not relaxed) form a *strain group*;
for every pair (i, j) in a group, with cells ``A_j = A_i (1 + ε_ij)``,

.. math::

    e_{ij} = \\frac{(\\sigma^{model}_j - \\sigma^{model}_i) - (\\sigma^{ref}_j - \\sigma^{ref}_i)}
                  {\\lVert \\varepsilon_{ij} \\rVert_F},

the error of the finite-difference slope (eV/Å³; for a pair at ±δ along ε_xx,
``e[0, 0] = 2·(C11_model − C11_ref)`` up to third-order terms, which the labels and a correct
model share). The penalty is ``weight × mean(e²)`` over pairs and the nine components (with
``relative``, each pair's e divided by the norm of its reference slope), added to the loss at
every step; only frames of the training split take part. No label is invented:
both ends of each difference are reference stresses of committed frames.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch
from paired_frames import PairedFrames, PairSampling

from ase_equi.data import Frame
from ase_equi.model.gradients import energy_forces_stress


def strain_between(cell_i: np.ndarray, cell_j: np.ndarray) -> np.ndarray:
    """ε (3×3) with ``cell_j = cell_i @ (1 + ε)`` (ASE's rows-are-vectors cells)."""
    return np.linalg.solve(cell_i, cell_j) - np.eye(3)


def strain_groups(
    frames: Sequence[Frame], ids: Sequence[int], *, tolerance: float = 1e-6
) -> list[list[int]]:
    """Groups (two or more frames each) of ``ids`` that are one structure under homogeneous
    strains: periodic in all three directions, with a stress label, the same atomic numbers
    and the same fractional coordinates to ``tolerance``."""
    found: dict[tuple, list[int]] = defaultdict(list)
    for i in ids:
        atoms = frames[i].atoms
        if not (atoms.pbc.all() and frames[i].has_stress):
            continue
        steps = round(1 / tolerance)  # fractional coordinates on a grid, 0 and 1 the same
        scaled = np.round(atoms.get_scaled_positions(wrap=False) * steps).astype(np.int64) % steps
        found[(tuple(atoms.numbers), scaled.tobytes())].append(i)
    return [g for g in found.values() if len(g) > 1]


def strain_pairs(
    frames: Sequence[Frame], groups: Sequence[Sequence[int]], *, max_strain: float = 0.03
) -> list[tuple[int, int, float]]:
    """``(i, j, ‖ε_ij‖_F)`` for every pair of a group whose strain step (the Frobenius norm
    of the symmetric part of ε_ij) lies in (1e-4, ``max_strain``]."""
    out = []
    for group in groups:
        for a, i in enumerate(group):
            for j in group[a + 1 :]:
                eps = strain_between(frames[i].atoms.cell.array, frames[j].atoms.cell.array)
                # two cells strained from one by ε_i and ε_j differ by ε_j − ε_i and a
                # rotation of order ε_i·ε_j, which model and reference see alike
                norm = float(np.linalg.norm(0.5 * (eps + eps.T)))
                if 1e-4 < norm <= max_strain:
                    out.append((i, j, norm))
    return out


class StrainPairPenalty:
    """``weight × mean(e²)`` of the module docstring, as a callable on the model (the
    ``penalty`` of :func:`ase_equi.training.trainer.train`).

    ``frames`` are the training data (the list given to ``train``), ``ids`` the frames allowed
    to take part (the training split). Each call evaluates the pairs drawn by ``sampling``
    in one batch: small periodic cells have many neighbours each, and all pairs at every step
    would cost several training steps.
    """

    def __init__(
        self,
        frames: Sequence[Frame],
        ids: Sequence[int],
        sampling: PairSampling,
        *,
        weight: float,
        max_strain: float = 0.03,
        relative: bool = False,
    ) -> None:
        self.weight, self.relative = weight, relative
        self.groups = strain_groups(frames, ids)
        pairs = strain_pairs(frames, self.groups, max_strain=max_strain)
        if not pairs:
            raise ValueError("no strain pairs among the frames: nothing for the penalty")
        self.paired = PairedFrames(frames, pairs, sampling)
        self.pairs, self.num_pairs = pairs, len(pairs)
        self.num_frames = len(self.paired.frames)

    def slope_errors(
        self,
        model: torch.nn.Module,
        pairs: Sequence[tuple[int, int, float]] | None = None,
        *,
        training: bool = False,
        relative: bool = False,
    ) -> torch.Tensor:
        """``e [pairs, 3, 3]`` (eV/Å³) of ``model`` on ``pairs`` (default: all); with
        ``relative``, each pair's ``e`` divided by the Frobenius norm of its reference slope
        (at least 0.01 eV/Å³), so that a soft metal's elastic constants count as much as a
        stiff one's in relative terms (a target of a few per cent is relative)."""
        pairs = self.pairs if pairs is None else pairs
        batch, first, second = self.paired.batch(pairs)
        step = torch.tensor([n for _, _, n in pairs], dtype=batch.stress.dtype)[:, None, None]
        stress = energy_forces_stress(
            model, batch.graph, forces=False, stress=True, training=training
        )["stress"]
        ref = batch.stress
        slope_ref = (ref[second] - ref[first]) / step
        errors = (stress[second] - stress[first]) / step - slope_ref
        if relative:
            norm = torch.linalg.matrix_norm(slope_ref).clamp(min=0.01)
            errors = errors / norm[:, None, None]
        return errors

    def __call__(self, model: torch.nn.Module) -> torch.Tensor:
        pairs = self.paired.draw()
        errors = self.slope_errors(model, pairs, training=True, relative=self.relative)
        return self.weight * errors.pow(2).mean()
