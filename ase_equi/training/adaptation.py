"""Adapting a trained model to new data before fine-tuning: new elements, refitted E0.

A change of level of theory shifts energies mostly by a per-element constant: with the
parent's interaction energy ``E_int(k) = E_parent(k) − Σ_z N_kz E0_z`` on each frame k, new
reference energies solve ``min ||N E0' − (E_ref − E_int)||₂``, the solution nearest the parent's
E0 (:func:`refit_reference_energies`).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ase.data import chemical_symbols

from ..data.batch import frames_to_graphs, make_batch
from ..data.frames import Frame
from ..data.statistics import ReferenceEnergyFit, composition_matrix, reference_energy_fit
from ..model.gradients import energy_forces_stress
from ..model.mace import MaceModel
from .checkpoint import new_model

log = logging.getLogger(__name__)


def add_elements(model: MaceModel, new: Sequence[int], *, seed: int = 0) -> MaceModel:
    """``model`` extended by the elements ``new`` (appended; existing weights unchanged).

    The new elements' weights (embedding rows, self-connection slices, symmetric-contraction
    weights) come from a freshly initialised model with ``seed``; their E0 are 0 until refitted.
    The old elements' energies and forces are unchanged (to rounding).
    """
    new = [int(z) for z in new if int(z) not in model.config.elements]
    if not new:
        return model
    old_cfg = model.config
    cfg = dataclasses.replace(
        old_cfg,
        elements=tuple(old_cfg.elements) + tuple(new),
        reference_energies=tuple(old_cfg.reference_energies or ()) + (0.0,) * len(new),
    )
    dtype = next(model.parameters()).dtype
    fresh = new_model(cfg, seed).to(dtype)
    n_old, n_new = len(old_cfg.elements), len(cfg.elements)
    # e3nn normalises the embedding and the self-connection by 1/sqrt(fan-in), and the fan-in
    # grows with the number of elements: rescaled copies keep the old elements' outputs equal
    rescale = (n_new / n_old) ** 0.5
    old_state, state = model.state_dict(), fresh.state_dict()
    modules = dict(fresh.named_modules())
    for key, value in old_state.items():
        target = state[key]
        if value.shape == target.shape:
            state[key] = value.clone()
        elif key == "reference_energies" or ".weights." in key:  # [n_elements, ...]
            target[:n_old] = value
        elif key == "node_embedding.linear.weight":  # [n_elements × C] (0e → 0e, row-major)
            target.view(n_new, -1)[:n_old] = value.view(n_old, -1) * rescale
        elif key.endswith("skip_tp.weight"):  # uvw paths, v = element
            tp = modules[key.rsplit(".", 1)[0]]
            start_old = start_new = 0
            for ins in tp.instructions:
                u, _, w = ins.path_shape
                size_old, size_new = u * n_old * w, u * n_new * w
                block = target[start_new : start_new + size_new].view(u, n_new, w)
                old_block = value[start_old : start_old + size_old].view(u, n_old, w)
                block[:, :n_old] = old_block * rescale
                start_old, start_new = start_old + size_old, start_new + size_new
        else:
            raise ValueError(f"cannot extend {key} {tuple(value.shape)} to new elements")
    fresh.load_state_dict(state)
    return fresh


@torch.no_grad()
def predict_energies(model: MaceModel, frames: Sequence[Frame], batch_size: int = 8) -> np.ndarray:
    """Total energies (eV) of ``frames`` by ``model`` (no gradients)."""
    dtype = next(model.parameters()).dtype
    graphs = frames_to_graphs(frames, model.config.elements, model.config.r_max, dtype=dtype)
    out = []
    for start in range(0, len(frames), batch_size):
        batch = make_batch(frames[start : start + batch_size], graphs[start : start + batch_size])
        pred = energy_forces_stress(model, batch.graph, forces=False, stress=False)
        out.append(pred["energy"].double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def refit_reference_energies(
    model: MaceModel,
    frames: Sequence[Frame],
    *,
    new_elements: Sequence[int] = (),
    refit_known: bool = True,
) -> ReferenceEnergyFit:
    """E0 [n_elements] (eV) for ``model`` on ``frames``, closest to the model's own E0.

    The target of frame k is ``E_ref(k) − E_int(k)`` (see the module docstring); the fit is
    :func:`~ase_equi.statistics.reference_energy_fit` with the model's E0 as the prior: an
    element in no frame keeps its E0 exactly, and of the least-squares solutions the one
    nearest the model's E0 is taken (with water alone, only ``2 E0_H + E0_O`` moves).
    ``new_elements`` (just added, placeholder E0) have no prior; with ``refit_known=False``
    only they are fitted. The model is not changed.

    Returns
    -------
    ReferenceEnergyFit
        ``.values [n_elements]`` and ``.status`` (fitted / partly fitted / kept per element).
    """
    elements = list(model.config.elements)
    e0_old = model.reference_energies.detach().double().cpu().numpy()
    counts = composition_matrix(frames, elements)
    interaction = predict_energies(model, frames) - counts @ e0_old
    residual = [  # isolated atoms keep their own energy as E0
        f if f.is_isolated_atom else dataclasses.replace(f, energy=f.energy - e)
        for f, e in zip(frames, interaction, strict=True)
    ]
    prior = np.where(np.isin(elements, list(new_elements)), np.nan, e0_old)
    return reference_energy_fit(residual, elements, prior, refit_prior=refit_known)


def set_reference_energies(model: MaceModel, e0: np.ndarray) -> None:
    """The one place that changes a model's E0 ``[n_elements]`` (eV): buffer and config."""
    with torch.no_grad():
        model.reference_energies.copy_(torch.as_tensor(e0, dtype=model.reference_energies.dtype))
    model.config = dataclasses.replace(model.config, reference_energies=tuple(float(x) for x in e0))


def adapt_to_data(
    base: MaceModel,
    frames: Sequence[Frame],
    fit_frames: Sequence[Frame],
    *,
    refit_e0: bool,
    seed: int,
) -> tuple[MaceModel, list[int], dict[str, dict[str, Any]], np.ndarray]:
    """A copy of ``base`` with the elements of ``frames`` it lacks (:func:`add_elements`) and,
    with ``refit_e0`` (always when elements were added), E0 refitted on ``fit_frames`` (the
    training split) by :func:`refit_reference_energies`. ``base`` is not changed.

    Returns
    -------
    model, new_elements, e0_report, e0_shift
        The adapted model; the added elements (Z); per element symbol
        ``{"parent": eV or None (new element), "now": eV, "status": "fitted" | "kept" | ...}``;
        the E0 change ``[n_elements]`` (eV) that relabels replayed frames.
    """
    in_data = sorted({int(z) for f in frames for z in f.atoms.numbers})
    model = add_elements(copy.deepcopy(base), in_data, seed=seed)
    new_elements = [z for z in model.config.elements if z not in base.config.elements]
    e0_parent = model.reference_energies.detach().double().cpu().numpy().copy()
    e0, e0_status = e0_parent, {chemical_symbols[z]: "kept" for z in model.config.elements}
    if refit_e0 or new_elements:
        fit = refit_reference_energies(
            model, fit_frames, new_elements=new_elements, refit_known=refit_e0
        )
        e0, e0_status = fit.values, fit.summary()
        set_reference_energies(model, e0)  # (a resumed run takes the checkpoint's weights)
    e0_report = {
        sym: {
            "parent": None if z in new_elements else float(old),
            "now": float(now),
            "status": e0_status[sym],
        }
        for sym, z, old, now in zip(e0_status, model.config.elements, e0_parent, e0, strict=True)
    }
    log.info(
        "E0 after the refit: %s",
        ", ".join(f"{sym} {v['now']:.6g} eV ({v['status']})" for sym, v in e0_report.items()),
    )
    return model, new_elements, e0_report, e0 - e0_parent
