"""Model files: safetensors weights + a JSON header + a markdown card, all hash-checked.

A model named ``NAME`` is three files side by side:

``NAME.json``
    The header (format version 2, see :mod:`ase_equi.io.model_header`): architecture config,
    dtype, weights file name, size and SHA-256, the heads (E0, scale, shift), the card, and
    ``header_sha256`` over the canonical form of all of it.
``NAME.safetensors``
    Every tensor of the model's ``state_dict`` except E0, scale and shift (which live in the
    header's heads, once), nothing executable.
``NAME.md``
    The card rendered for people (written on save; never read back).

Loading checks, in this order and before anything is allocated for the model: the header's size
(≤ 16 MiB), types and version; its hash; the config's supported bounds; that the weights are a
regular file inside the header's folder of exactly ``weights_bytes`` bytes; their SHA-256; that
the tensor names and the element and layer counts agree with the config. Only then is the model
built and the tensors copied in (strictly: every name, every shape).

Version-1 files (E0, scale and shift in the config *and* the weights; no header hash) still
load, with a ``UserWarning`` that their header is not covered; :func:`upgrade_model_file`
(``ase-equi upgrade FILE``) rewrites them as version 2.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from ..errors import ModelFileError
from ..model.config import ModelConfig
from ..model.mace import MaceModel
from ..model.prediction_rigidity import LastLayerRigidity
from .model_card import render_card
from .model_header import (
    FORMAT,
    FORMAT_VERSION,
    HEAD_CONSTANTS,
    check_head,
    check_layout,
    header_digest,
    model_paths,
    read_header,
    read_regular_file,
    refuse_compressed,
    safetensors_layout,
    select_head,
)
from .rigidity_section import check_rigidity_model, split_rigidity

PACKAGE_VERSION = "0.1.0"
DEFAULT_HEAD = "Default"

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "LoadedModel",
    "head_of_model",
    "ModelFileError",
    "model_paths",
    "read_header",
    "read_model_file",
    "refuse_compressed",
    "render_card",
    "save_model",
    "upgrade_model_file",
]

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model together with its config, card, head and where it came from.

    ``config`` carries the E0, scale and shift of ``head`` (one of ``heads``).
    """

    model: MaceModel
    config: ModelConfig
    card: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    head: str | None = None
    heads: list[str] = field(default_factory=list)
    rigidity: LastLayerRigidity | None = None  # the file's section for ``head`` (rigidity_section)

    @property
    def name(self) -> str:
        return str(self.card.get("name") or Path(self.source).stem or "model")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (never half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def head_of_model(model: MaceModel, index: int | None = None) -> dict[str, Any]:
    """E0 (eV), scale and shift (eV) exactly as the model computes with them (its buffers);
    ``index``: which head of a multi-head model."""
    e0, scale, shift = (model.get_buffer(k).double() for k in HEAD_CONSTANTS)
    if index is not None:
        e0, scale, shift = e0[index], scale[index], shift[index]
    return {
        "reference_energies": [float(x) for x in e0.tolist()],
        "scale": float(scale),
        "shift": float(shift),
    }


def save_model(
    model: MaceModel,
    path: str | os.PathLike,
    *,
    card: dict[str, Any] | None = None,
    heads: dict[str, dict[str, Any]] | None = None,
    default_head: str = DEFAULT_HEAD,
) -> Path:
    """Write ``model`` as NAME.json + NAME.safetensors + NAME.md (format 2); returns the JSON path.

    Every file is written through a temporary file and a rename, the header last, so a kill
    leaves either the old header (which then fails its weights hash) or a complete new model.

    Parameters
    ----------
    model:
        The model; its E0, scale and shift buffers become head ``default_head`` unless
        ``heads`` is given.
    path:
        NAME, NAME.json, NAME.safetensors or NAME.md.
    card:
        Free-form JSON-clean description (name, elements, cutoff and units are filled in).
    heads:
        ``{name: {"reference_energies": [...], "scale": s, "shift": m, "card": {...}}}``:
        several energy references that share the model's readouts; for a model with
        ``config.heads`` (own readouts per head) the same names in the same order, and by
        default its own constants per head (``default_head``: the active head unless named).

    Examples
    --------
    >>> import tempfile
    >>> cfg = ModelConfig(elements=(29,), reference_energies=(-0.1234567890123456,),
    ...                   channels=4, max_ell=1, correlation=2, radial_mlp=(8,))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = save_model(MaceModel(cfg), f"{d}/tiny", card={"name": "tiny"})
    ...     read_model_file(p).config == cfg  # E0 in float64, exactly
    True
    """
    json_path, weights_path, card_path = model_paths(path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: v.detach().contiguous().cpu()
        for k, v in model.state_dict().items()
        if k not in HEAD_CONSTANTS
    }
    blob = save_safetensors(tensors)
    names = model.config.heads
    if len(names) > 1 and default_head not in names:  # the head the model evaluates now
        default_head = names[model.active_head]
    if heads is None:  # one head per config.heads (own readouts), else one
        own = {name: head_of_model(model, k) for k, name in enumerate(names) if len(names) > 1}
        heads = own or {default_head: head_of_model(model)}
    if len(names) > 1 and list(heads) != list(names):
        raise ModelFileError(f"save_model: heads {list(heads)} must be the config's {list(names)}")
    for name, head in heads.items():
        check_head(name, head, len(model.config.elements), "save_model")
    if default_head not in heads:
        raise ModelFileError(f"save_model: default_head {default_head!r} is not in {list(heads)}")
    card = dict(card or {})
    card.setdefault("name", json_path.stem)
    card.setdefault("elements", [int(z) for z in model.config.elements])
    card.setdefault("cutoff_angstrom", model.config.r_max)
    card.setdefault("units", {"energy": "eV", "length": "Å", "stress": "eV/Å³"})
    config = {k: v for k, v in model.config.to_dict().items() if k not in HEAD_CONSTANTS}
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": PACKAGE_VERSION,
        "config": config,
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "weights": weights_path.name,
        "weights_sha256": sha256_bytes(blob),
        "weights_bytes": len(blob),
        "heads": heads,
        "default_head": default_head,
        "committee": None,
        "uncertainty_calibration": None,
        "card": card,
    }
    header["header_sha256"] = header_digest(header)
    write_atomic(weights_path, blob)
    write_atomic(card_path, render_card(header).encode("utf-8"))
    text = json.dumps(header, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    write_atomic(json_path, text.encode("utf-8"))  # last: it vouches for the others
    return json_path


def weights_path_of(header: dict[str, Any], json_path: Path) -> Path:
    """The weights file a header names, confined to the header's folder."""
    name = header.get("weights", model_paths(json_path)[1].name)
    folder = json_path.parent
    path = folder / name
    real, real_folder = os.path.realpath(path), os.path.realpath(folder)
    if os.path.dirname(real) != real_folder:
        raise ModelFileError(
            f"model weights {path} resolve to {real}, outside the header's folder {real_folder}"
        )
    return path


def read_weights(header: dict[str, Any], json_path: Path) -> bytes:
    """The weights bytes, after checking the file kind and size, then their SHA-256."""
    path = weights_path_of(header, json_path)
    expected = header["weights_bytes"]
    try:
        size = os.stat(path).st_size
    except FileNotFoundError as err:
        raise ModelFileError(f"model weights {path} are missing") from err
    if size != expected:
        raise ModelFileError(
            f"model weights {path} truncated or padded: expected {expected} bytes, found {size}"
        )
    blob = read_regular_file(path, expected, "model weights")
    digest = sha256_bytes(blob)
    if digest != header["weights_sha256"]:
        raise ModelFileError(
            f"model weights {path} fail the SHA-256 check (expected "
            f"{header['weights_sha256'][:16]}…, found {digest[:16]}…): the file was modified"
        )
    return blob


def head_tensors(head: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A head's E0 ``[n_elements]``, scale ``[]`` and shift ``[]`` as float64 buffers."""
    return {
        "reference_energies": torch.tensor(head["reference_energies"], dtype=torch.float64),
        "scale": torch.tensor(float(head["scale"]), dtype=torch.float64),
        "shift": torch.tensor(float(head["shift"]), dtype=torch.float64),
    }


def _config_and_head(
    header: dict[str, Any], head: str | None, json_path: Path
) -> tuple[ModelConfig, str, dict[str, Any]]:
    """The config with head ``head``'s E0, scale and shift, the head's name and its entry.

    A format-1 header has one head (``DEFAULT_HEAD``) whose constants are in its config (and
    in the weights, which :func:`read_model_file` then trusts); its entry is ``{}``.
    """
    head_values: dict[str, Any]
    if header["format_version"] == 1:
        warnings.warn(
            f"{json_path} is a format-1 model file: its header (config, E0, card) is not "
            "covered by a hash; rewrite it with `ase-equi upgrade FILE`",
            UserWarning,
            stacklevel=3,
        )
        if head not in (None, DEFAULT_HEAD):
            raise ModelFileError(
                f"{json_path} has no head {head!r}; its heads are ['{DEFAULT_HEAD}']"
            )
        head_name, head_values = DEFAULT_HEAD, {}
        config_data = header["config"]
    else:
        head_name, head_values = select_head(header, head, json_path)
        config_data = {**header["config"], **{k: head_values[k] for k in HEAD_CONSTANTS}}
    try:
        config = ModelConfig.from_dict(config_data)
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"model config {json_path} is invalid: {err}") from err
    return config, head_name, head_values


def read_model_file(
    path: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    head: str | None = None,
) -> LoadedModel:
    """Load a model file after checking its header, bounds, weights file, size and SHA-256.

    Parameters
    ----------
    path:
        NAME, NAME.json, NAME.safetensors or NAME.md.
    dtype:
        Parameter dtype; None keeps float64 (E0 and couplings stay exact).
    device:
        Where the model goes.
    head:
        Which head's E0, scale and shift to use; None: the file's ``default_head``.

    Raises
    ------
    ModelFileError
        Missing, compressed, oversized or foreign file; newer format; mistyped header field;
        edited header (hash); config outside the supported bounds; weights outside the folder,
        not a regular file, truncated or tampered; tensors that do not fit the config; unknown
        head.
    """
    header = read_header(path)
    json_path = model_paths(path)[0]
    if header.get("committee") is not None:  # see io/model_committee.py
        raise ModelFileError(f"{json_path} is a committee: read it with read_committee_file")
    version = header["format_version"]
    config, head_name, head_values = _config_and_head(header, head, json_path)
    heads = [DEFAULT_HEAD] if version == 1 else list(header["heads"])
    blob = read_weights(header, json_path)
    source = str(weights_path_of(header, json_path))
    check_layout(safetensors_layout(blob, source), config, version, source)
    try:
        tensors = load_safetensors(blob)
    except Exception as err:  # safetensors raises its own error types
        raise ModelFileError(f"model weights {source} cannot be parsed: {err}") from err
    del blob
    rigidity = split_rigidity(header, tensors, json_path)  # its tensors leave ``tensors``
    if version == 1:  # the weights' E0, scale and shift are what the model computes with
        config = dataclasses.replace(
            config,
            reference_energies=tuple(tensors["reference_energies"].double().tolist()),
            scale=float(tensors["scale"].double()),
            shift=float(tensors["shift"].double()),
        )
    elif len(config.heads) > 1:  # own readouts per head: every head's constants, stacked
        if list(header["heads"]) != list(config.heads):
            raise ModelFileError(f"{json_path}: heads {list(header['heads'])} are not the config's")
        per_head = [head_tensors(header["heads"][h]) for h in config.heads]
        tensors.update({k: torch.stack([t[k] for t in per_head]) for k in HEAD_CONSTANTS})
    else:
        tensors.update(head_tensors(head_values))
    model = build_from_state_dict(config, tensors, source=source)
    if len(config.heads) > 1:
        model.active_head = config.heads.index(head_name)
    # without a dtype nothing is narrowed: float64 buffers (E0, couplings) stay exact
    model = model.to(device=device, dtype=dtype or torch.float64)
    model.eval()
    card = dict(header.get("card", {}))
    if head_values.get("card"):
        card["head_card"] = head_values["card"]
    return LoadedModel(
        model=model,
        config=config,
        card=card,
        source=str(json_path),
        head=head_name,
        heads=heads,
        rigidity=check_rigidity_model(rigidity, model, head_name, json_path),
    )


def upgrade_model_file(path: str | os.PathLike, **options: Any) -> Path:
    """Rewrite a format-1 model file as format 2 (see :mod:`ase_equi.io.model_upgrade`)."""
    from .model_upgrade import upgrade_model_file as upgrade

    return upgrade(path, **options)


def build_from_state_dict(
    config: ModelConfig, tensors: dict[str, torch.Tensor], *, source: str = "weights"
) -> MaceModel:
    """A model of ``config`` carrying exactly ``tensors`` (every key required, none extra)."""
    # float64 first, so that copying float64 weights does not round them through float32
    model = MaceModel(config, init_coupling=False).to(torch.float64)
    tensors = dict(tensors)
    for key, value in model.state_dict().items():
        if "._compiled_" in key:  # e3nn's Clebsch-Gordan constants: ours, not the file's
            tensors[key] = value
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise ModelFileError(
            f"{source} does not fit the architecture in its config: {err}"
        ) from err
    return model
