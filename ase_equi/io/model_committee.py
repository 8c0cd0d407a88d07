"""Committee model files: M members (or one trunk and M readouts) in one model file.

A committee file is a format-2 model file (:mod:`ase_equi.io.model_header`) whose header's
``committee`` entry is set::

    "committee": {"kind": "full" | "shallow", "size": M, "std_ddof": 1,
                  "members": [{"name": "seed0", "reference_energies": [...], "scale": s,
                               "shift": m}, ...]}   # full: one entry per member
                  "members": [{"name": "readout0"}, ...]}    # shallow: names only
    "uncertainty_calibration": null | {"factor": s, "quantity": "forces",
                                       "method": "gaussian_nll", "n_values": N, ...}

and whose safetensors hold, for ``"full"``, every member's tensors under ``member{m}.``
(member m's ``state_dict`` without E0, scale and shift, which are in its ``members`` entry),
and for ``"shallow"`` the trunk's tensors unprefixed plus the extra readouts under
``member_readouts.{k}.`` (k = 0 … M − 2, members 1 … M − 1). The header's one head
(``"Default"``) holds member 0's E0, scale and shift. The weights file and the header are
hash-checked exactly as for one model (one SHA-256 over all members' weights).

``std_ddof`` records the divisor of the reported standard deviations (1: M − 1). The
calibration ``factor`` s multiplies every reported uncertainty
(:mod:`ase_equi.uncertainty_calibration` fits it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from ..errors import ModelFileError
from ..model.committee import STD_DDOF, Committee, architecture_difference
from ..model.config import ModelConfig
from ..model.mace import MaceModel
from ..model.shallow_ensemble import ShallowEnsemble
from .committee_header import check_committee_fields
from .model_card import render_card
from .model_file import (
    DEFAULT_HEAD,
    PACKAGE_VERSION,
    LoadedModel,
    build_from_state_dict,
    head_of_model,
    head_tensors,
    read_model_file,
    read_weights,
    sha256_bytes,
    weights_path_of,
    write_atomic,
)
from .model_header import (
    FORMAT,
    FORMAT_VERSION,
    HEAD_CONSTANTS,
    check_layout,
    header_digest,
    model_paths,
    read_header,
    safetensors_layout,
)

__all__ = [
    "LoadedCommittee",
    "committee_from_models",
    "join_committee_files",
    "read_committee_file",
    "save_committee",
    "write_calibration",
]


@dataclass
class LoadedCommittee:
    """A committee with its config (member 0's), card, calibration and where it came from.

    ``calibration`` is the factor s that multiplies the members' standard deviation (1.0:
    uncalibrated); ``members`` names the members (their files or their names in the file).
    """

    model: Committee | ShallowEnsemble
    config: ModelConfig
    card: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    calibration: float = 1.0
    members: list[str] = field(default_factory=list)
    head: str | None = DEFAULT_HEAD
    heads: list[str] = field(default_factory=lambda: [DEFAULT_HEAD])

    @property
    def name(self) -> str:
        return str(self.card.get("name") or Path(self.source).stem or "committee")


def save_committee(
    model: Committee | ShallowEnsemble,
    path: str | os.PathLike,
    *,
    card: dict[str, Any] | None = None,
    member_names: Sequence[str] | None = None,
    calibration: dict[str, Any] | None = None,
) -> Path:
    """Write a committee as one model file (NAME.json + NAME.safetensors + NAME.md).

    Parameters
    ----------
    model:
        A :class:`Committee` (``"full"``) or a :class:`ShallowEnsemble` (``"shallow"``).
    path:
        NAME, NAME.json, NAME.safetensors or NAME.md.
    card:
        Free-form JSON-clean description (name, elements, cutoff, units filled in).
    member_names:
        One name per member (default ``member0`` …).
    calibration:
        The ``uncertainty_calibration`` entry (``{"factor": s, ...}``), or None.

    Returns the JSON path. Written like :func:`~ase_equi.io.model_file.save_model`: weights,
    card, then the header that vouches for them.
    """
    json_path, weights_path, card_path = model_paths(path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    names = list(member_names or [f"member{m}" for m in range(model.size)])
    tensors: dict[str, torch.Tensor] = {}
    first: MaceModel
    if isinstance(model, Committee):
        first = cast("MaceModel", model.members[0])
        members = []
        for m, member in enumerate(model.members):
            for k, v in member.state_dict().items():
                if k not in HEAD_CONSTANTS:
                    tensors[f"member{m}.{k}"] = v
            members.append({"name": names[m], **head_of_model(member)})  # type: ignore[arg-type]
    else:
        first = model.trunk
        tensors.update(
            {k: v for k, v in model.trunk.state_dict().items() if k not in HEAD_CONSTANTS}
        )
        for k, v in model.member_readouts.state_dict().items():
            tensors[f"member_readouts.{k}"] = v
        members = [{"name": name} for name in names]
    if len(names) != model.size:
        raise ValueError(f"member_names has {len(names)} names for {model.size} members")
    blob = save_safetensors({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
    config = first.config
    card = dict(card or {})
    card.setdefault("name", json_path.stem)
    card.setdefault("elements", [int(z) for z in config.elements])
    card.setdefault("cutoff_angstrom", config.r_max)
    card.setdefault("units", {"energy": "eV", "length": "Å", "stress": "eV/Å³"})
    card.setdefault("committee", f"{model.kind}, {model.size} members")
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": PACKAGE_VERSION,
        "config": {k: v for k, v in config.to_dict().items() if k not in HEAD_CONSTANTS},
        "dtype": str(next(first.parameters()).dtype).replace("torch.", ""),
        "weights": weights_path.name,
        "weights_sha256": sha256_bytes(blob),
        "weights_bytes": len(blob),
        "heads": {DEFAULT_HEAD: head_of_model(first)},
        "default_head": DEFAULT_HEAD,
        "committee": {
            "kind": model.kind,
            "size": model.size,
            "std_ddof": STD_DDOF,
            "members": members,
        },
        "uncertainty_calibration": calibration,
        "card": card,
    }
    check_committee_fields(header, json_path)
    header["header_sha256"] = header_digest(header)
    write_atomic(weights_path, blob)
    write_atomic(card_path, render_card(header).encode("utf-8"))
    _write_header(json_path, header)
    return json_path


def _write_header(json_path: Path, header: dict[str, Any]) -> None:
    text = json.dumps(header, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    write_atomic(json_path, text.encode("utf-8"))


def write_calibration(path: str | os.PathLike, calibration: dict[str, Any]) -> Path:
    """Store ``calibration`` (``{"factor": s, ...}``) in a committee file's header (rehashed);
    the weights are untouched. Returns the JSON path."""
    json_path = model_paths(path)[0]
    header = read_header(json_path)
    if header.get("committee") is None:
        raise ModelFileError(f"{json_path} is one model, not a committee: nothing to calibrate")
    header["uncertainty_calibration"] = dict(calibration)
    check_committee_fields(header, json_path)
    header["header_sha256"] = header_digest(header)
    write_atomic(model_paths(path)[2], render_card(header).encode("utf-8"))
    _write_header(json_path, header)
    return json_path


def read_committee_file(
    path: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
) -> LoadedCommittee:
    """Load a committee file after the checks of one model file (header, hashes, layout of
    every member).

    Raises
    ------
    ModelFileError
        Everything :func:`~ase_equi.io.model_file.read_model_file` refuses; a file that is not
        a committee; member tensors missing, extra or not fitting the config.
    """
    header = read_header(path)
    json_path = model_paths(path)[0]
    entry = header.get("committee")
    if header["format_version"] != 2 or entry is None:
        raise ModelFileError(f"{json_path} is one model, not a committee (no 'committee' entry)")
    head = header["heads"][header["default_head"]]
    config = _config(header, head, json_path)
    blob = read_weights(header, json_path)
    source = str(weights_path_of(header, json_path))
    layout = safetensors_layout(blob, source)
    try:
        tensors = load_safetensors(blob)
    except Exception as err:  # safetensors raises its own error types
        raise ModelFileError(f"model weights {source} cannot be parsed: {err}") from err
    del blob
    names = [m["name"] for m in entry["members"]]
    model: Committee | ShallowEnsemble
    if entry["kind"] == "full":
        model = _full_committee(header, entry, layout, tensors, source, json_path)
    else:
        model = _shallow_ensemble(entry["size"], config, layout, tensors, source)
    model = model.to(device=device, dtype=dtype or torch.float64).eval()
    calibration = header["uncertainty_calibration"]
    return LoadedCommittee(
        model=model,
        config=config,
        card=dict(header.get("card", {})),
        source=str(json_path),
        calibration=float(calibration["factor"]) if calibration else 1.0,
        members=names,
    )


def _config(header: dict[str, Any], head: dict[str, Any], where: Path) -> ModelConfig:
    try:
        return ModelConfig.from_dict({**header["config"], **{k: head[k] for k in HEAD_CONSTANTS}})
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"model config {where} is invalid: {err}") from err


def _sub(mapping: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :]: v for k, v in mapping.items() if k.startswith(prefix)}


def _full_committee(
    header: dict[str, Any],
    entry: dict[str, Any],
    layout: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    source: str,
    json_path: Path,
) -> Committee:
    """Build the M members of a full committee, each checked like one model's weights."""
    prefixes = [f"member{m}." for m in range(entry["size"])]
    stray = [k for k in layout if not k.startswith(tuple(prefixes))]
    if stray:
        raise ModelFileError(f"{source} holds tensors of no member: {stray[:5]}")
    members = []
    for m, prefix in enumerate(prefixes):
        config = _config(header, entry["members"][m], json_path)
        where = f"{source} (committee member {m})"
        check_layout(_sub(layout, prefix), config, 2, where)
        member_tensors = {**_sub(tensors, prefix), **head_tensors(entry["members"][m])}
        members.append(build_from_state_dict(config, member_tensors, source=where))
    return Committee(members)


def _shallow_ensemble(
    size: int,
    config: ModelConfig,
    layout: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    source: str,
) -> ShallowEnsemble:
    """Build the trunk and the M − 1 extra readouts of a shallow ensemble (strictly)."""
    prefix = "member_readouts."
    trunk_layout = {k: v for k, v in layout.items() if not k.startswith(prefix)}
    check_layout(trunk_layout, config, 2, source)
    trunk_tensors = {k: v for k, v in tensors.items() if not k.startswith(prefix)}
    trunk = build_from_state_dict(
        config, {**trunk_tensors, **head_tensors(_constants_of(config))}, source=source
    )
    indices = {int(k.split(".")[1]) for k in layout if k.startswith(prefix)}
    if indices != set(range(size - 1)):
        raise ModelFileError(
            f"{source}: a shallow committee of {size} members needs readouts 0..{size - 2} "
            f"under '{prefix}', found {sorted(indices)[:10]}"
        )
    ensemble = ShallowEnsemble(trunk.double(), size)
    try:
        ensemble.member_readouts.load_state_dict(_sub(tensors, prefix), strict=True)
    except RuntimeError as err:
        raise ModelFileError(f"{source}: the member readouts do not fit: {err}") from err
    return ensemble


def _constants_of(config: ModelConfig) -> dict[str, Any]:
    return {
        "reference_energies": list(config.reference_energies or ()),
        "scale": config.scale,
        "shift": config.shift,
    }


def committee_from_models(
    loaded: Sequence[LoadedModel], *, sources: Sequence[str] | None = None
) -> LoadedCommittee:
    """A full committee of already loaded models (one file each).

    Raises
    ------
    ValueError
        Fewer than two models, or two that differ in cutoff, elements or any other
        architecture field (the message names both files and the field).
    """
    names = list(sources or [m.source or m.name for m in loaded])
    if len(loaded) < 2:
        raise ValueError(f"a committee needs at least 2 model files, got {len(loaded)}")
    for m, other in enumerate(loaded[1:], start=1):
        diff = architecture_difference(loaded[0].config, other.config)
        if diff is not None:
            raise ValueError(
                f"committee members {names[0]} and {names[m]} differ in {diff}; the members "
                "of a committee need the same cutoff, elements and architecture"
            )
    committee = Committee([m.model for m in loaded])
    return LoadedCommittee(
        model=committee,
        config=loaded[0].config,
        card={"name": f"committee of {len(loaded)}"},
        source=", ".join(names),
        members=names,
    )


def join_committee_files(
    paths: Sequence[str | os.PathLike], output: str | os.PathLike, *, card: dict | None = None
) -> Path:
    """Read M model files (ours) and write them as one full committee file; returns its JSON
    path. The member names are the files' stems."""
    loaded = [read_model_file(p) for p in paths]
    committee = committee_from_models(loaded, sources=[os.fspath(p) for p in paths])
    names = [model_paths(p)[0].stem for p in paths]
    return save_committee(committee.model, output, card=card, member_names=names)
