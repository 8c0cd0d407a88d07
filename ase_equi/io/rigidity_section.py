"""The prediction-rigidity section of a model file (optional; format version 2).

A single model may carry what :mod:`ase_equi.model.prediction_rigidity` needs for its LLPR
uncertainties. The header then has the field::

    "prediction_rigidity": {
        "method": "llpr", "head": "Default", "feature_dim": d,
        "features": "<which features, in words>",
        "forces_estimate": "local" | "neighbourhood" | "neighbourhood_smooth"
                           | "jacobian_rank4",
        "regulariser": λ/(tr C/d), "local_regulariser": λ_loc/(tr C_loc/d),
        "energy_factor": α_E, "forces_factor": α_F,
        "n_structures": N, "n_atoms": n, "data": "<where C came from>",
        "calibration": {...free-form JSON: validation figures...}}

and the weights file two more tensors, ``prediction_rigidity.inverse_covariance`` and
``prediction_rigidity.local_inverse_covariance`` (``[d, d]`` float64, symmetric, finite).
``forces_estimate`` says how ``forces_uncertainty`` is formed (the atom's own local rigidity,
or summed over its neighbours within r_max: :mod:`ase_equi.model.prediction_rigidity`); files
written before the second form existed say ``"local"`` and read as they always did.
Both are covered by the file's hashes (the field by ``header_sha256``, the tensors by
``weights_sha256``). A file without the field is unchanged and loads as before; the field
without the tensors, tensors without the field, a field on a committee or in a format-1 file,
a wrong shape or a malformed entry are refused with a
:class:`~ase_equi.errors.ModelFileError` that names ``prediction_rigidity``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from ..errors import ModelFileError
from ..model.mace import MaceModel
from ..model.prediction_rigidity import SECTION_FORCES_ESTIMATES, LastLayerRigidity, feature_dim
from .model_header import header_digest, model_paths, read_header

__all__ = [
    "SECTION",
    "TENSORS",
    "check_rigidity_fields",
    "check_rigidity_model",
    "rigidity_entry",
    "split_rigidity",
    "write_rigidity",
]

SECTION = "prediction_rigidity"
TENSORS = {
    "inverse_covariance": f"{SECTION}.inverse_covariance",
    "local_inverse_covariance": f"{SECTION}.local_inverse_covariance",
}
FIELDS = {
    "method": str,
    "head": str,
    "feature_dim": int,
    "features": str,
    "forces_estimate": str,
    "regulariser": float,
    "local_regulariser": float,
    "energy_factor": float,
    "forces_factor": float,
    "n_structures": int,
    "n_atoms": int,
    "data": str,
    "calibration": dict,
}
MAX_FEATURE_DIM = 4096


def _bad(where: Path | str, text: str) -> ModelFileError:
    return ModelFileError(f"{where}: '{SECTION}' {text}")


def check_rigidity_fields(header: dict[str, Any], where: Path | str) -> None:
    """``ModelFileError`` naming the section unless ``header["prediction_rigidity"]`` is
    absent, null or well formed (types, one of the model's heads, finite positive factors, a
    bounded feature size)."""
    entry = header.get(SECTION)
    if entry is None:
        return
    if header.get("committee") is not None:
        raise _bad(where, "is set on a committee (it belongs to a single model)")
    if not isinstance(entry, dict) or set(entry) != set(FIELDS):
        got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise _bad(where, f"must be an object with exactly the fields {sorted(FIELDS)}, got {got}")
    for key, kind in FIELDS.items():
        value = entry[key]
        ok = isinstance(value, (int, float) if kind is float else kind)
        if isinstance(value, bool) or not ok:
            raise _bad(where, f"field {key!r} must be a {kind.__name__}, got {value!r:.80}")
    heads = header.get("heads")
    if isinstance(heads, dict) and entry["head"] not in heads:  # it would never apply
        raise _bad(where, f"names head {entry['head']!r}, not one of the model's {sorted(heads)}")
    if entry["method"] != "llpr" or entry["forces_estimate"] not in SECTION_FORCES_ESTIMATES:
        known = SECTION_FORCES_ESTIMATES
        raise _bad(where, f"is not method 'llpr' with forces_estimate one of {known}")
    for key in ("regulariser", "local_regulariser", "energy_factor", "forces_factor"):
        if not (math.isfinite(entry[key]) and entry[key] > 0):
            raise _bad(where, f"field {key!r} must be finite and > 0, got {entry[key]!r}")
    if not 1 <= entry["feature_dim"] <= MAX_FEATURE_DIM:
        raise _bad(where, f"field 'feature_dim' must be in 1..{MAX_FEATURE_DIM}")


def split_rigidity(
    header: dict[str, Any], tensors: dict[str, torch.Tensor], where: Path | str
) -> LastLayerRigidity | None:
    """Remove the section's tensors from ``tensors`` (in place) and return the rigidity
    (None for a file without the section); refuses tensors and field that do not match."""
    entry = header.get(SECTION)
    present = {k: tensors.pop(name) for k, name in TENSORS.items() if name in tensors}
    if entry is not None and header.get("format_version") != 2:  # unchecked, unhashed there
        raise _bad(where, "needs format version 2 (ase-equi upgrade, then write the section)")
    if entry is None:
        if present:
            raise _bad(where, f"tensors {sorted(present)} are in the weights without the field")
        return None
    if set(present) != set(TENSORS):
        raise _bad(
            where, f"field is set but the weights lack {sorted(set(TENSORS) - set(present))}"
        )
    d = entry["feature_dim"]
    for key, value in present.items():
        if value.dtype != torch.float64 or tuple(value.shape) != (d, d):
            raise _bad(
                where,
                f"tensor {key} must be float64 [{d}, {d}], got {value.dtype} {list(value.shape)}",
            )
        if not bool(torch.isfinite(value).all()) or not torch.equal(value, value.T):
            raise _bad(where, f"tensor {key} must be finite and symmetric")
    info = {k: v for k, v in entry.items() if k not in ("energy_factor", "forces_factor")}
    return LastLayerRigidity(
        present["inverse_covariance"],
        present["local_inverse_covariance"],
        energy_factor=float(entry["energy_factor"]),
        forces_factor=float(entry["forces_factor"]),
        info=info,
    )


def check_rigidity_model(
    rigidity: LastLayerRigidity | None, model: MaceModel, head: str | None, where: Path | str
) -> LastLayerRigidity | None:
    """The rigidity when it fits ``model`` (feature size); None for another head than the
    section's (its features carry another scale); ``ModelFileError`` for a wrong size."""
    if rigidity is None:
        return None
    d = feature_dim(model)
    if rigidity.info["feature_dim"] != d:
        raise _bad(where, f"has feature_dim {rigidity.info['feature_dim']}, the model {d}")
    return rigidity if head == rigidity.info["head"] else None


def rigidity_entry(rigidity: LastLayerRigidity) -> dict[str, Any]:
    """The header field of ``rigidity`` (``info`` holds everything but the factors);
    ``ValueError`` for an ``info`` key the field has no place for (it would be lost)."""
    extra = sorted(set(rigidity.info) - set(FIELDS))
    if extra:
        raise ValueError(f"'{SECTION}' has no field(s) {extra}; its fields are {sorted(FIELDS)}")
    entry = {
        **rigidity.info,
        "energy_factor": float(rigidity.energy_factor),
        "forces_factor": float(rigidity.forces_factor),
    }
    entry.setdefault("feature_dim", int(rigidity.inverse_covariance.shape[0]))
    return {k: entry.get(k) for k in FIELDS}


def write_rigidity(
    path: str | os.PathLike,
    rigidity: LastLayerRigidity | None,
    *,
    card_entry: dict[str, Any] | None = None,
) -> Path:
    """Store ``rigidity`` in the model file at ``path`` (None: remove the section), rehashing
    weights and header and rendering the card again; the model's own tensors are copied
    unchanged. ``card_entry``: the card's new ``uncertainty`` entry (figures for people;
    JSON-clean); the old entry described the old section and goes in any case. Returns the
    JSON path.

    The weights are written first, then the card, then the header that vouches for them (a kill
    before the header leaves a file whose weights hash fails, never a silently different model).
    """
    from .model_card import render_card
    from .model_file import read_weights, sha256_bytes, weights_path_of, write_atomic

    if rigidity is None and card_entry is not None:
        raise ValueError(f"card_entry without a rigidity: the card of {path} would describe none")
    json_path, _, card_path = model_paths(path)
    header = read_header(json_path)
    if header.get("format_version") != 2 or header.get("committee") is not None:
        raise ModelFileError(f"{json_path}: '{SECTION}' needs a single model of format 2")
    tensors = load_safetensors(read_weights(header, json_path))
    for name in TENSORS.values():
        tensors.pop(name, None)
    header.pop(SECTION, None)
    header.get("card", {}).pop("uncertainty", None)
    if rigidity is not None:
        header[SECTION] = rigidity_entry(rigidity)
        for key, name in TENSORS.items():
            value = getattr(rigidity, key).detach().double().cpu()
            tensors[name] = (0.5 * (value + value.T)).contiguous()
        check_rigidity_fields(header, json_path)
    if card_entry is not None:
        header.setdefault("card", {})["uncertainty"] = card_entry
    blob = save_safetensors(tensors)
    header["weights_sha256"], header["weights_bytes"] = sha256_bytes(blob), len(blob)
    header["header_sha256"] = header_digest(header)
    write_atomic(weights_path_of(header, json_path), blob)
    write_atomic(card_path, render_card(header).encode("utf-8"))
    text = json.dumps(header, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    write_atomic(json_path, text.encode("utf-8"))
    return json_path
