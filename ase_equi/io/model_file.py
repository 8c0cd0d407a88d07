"""Model files: safetensors weights + a JSON header + a markdown card, hash-checked.

A model named ``NAME`` is three files side by side:

``NAME.json``
    ``{"format": "ase_equi-model", "format_version": 1, "package_version": ...,
    "config": ModelConfig.to_dict(), "dtype": "float64", "weights": "NAME.safetensors",
    "weights_sha256": ..., "weights_bytes": ..., "card": {...}}``. The card holds elements,
    cutoff, units, level of theory, training data and measured errors (free-form, JSON-clean).
``NAME.safetensors``
    Every tensor of the model's ``state_dict`` (parameters and buffers), nothing executable.
``NAME.md``
    The card rendered for people (written on save; never read back).

Loading checks the format version, the size and the SHA-256 of the weights before parsing them,
and the tensor names and shapes against the architecture in the config.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from ..errors import ModelFileError
from ..model.config import ModelConfig
from ..model.mace import MaceModel

FORMAT = "ase_equi-model"
FORMAT_VERSION = 1
PACKAGE_VERSION = "0.1.0"

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model together with its config, card and where it came from."""

    model: MaceModel
    config: ModelConfig
    card: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def name(self) -> str:
        return str(self.card.get("name") or Path(self.source).stem or "model")


def model_paths(path: str | os.PathLike) -> tuple[Path, Path, Path]:
    """``(NAME.json, NAME.safetensors, NAME.md)`` for any of the three paths or the bare stem."""
    p = Path(path)
    stem = p.name
    for suffix in (".json", ".safetensors", ".md"):
        stem = stem.removesuffix(suffix)
    return tuple(p.with_name(stem + suffix) for suffix in (".json", ".safetensors", ".md"))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_model(
    model: MaceModel,
    path: str | os.PathLike,
    *,
    card: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` as NAME.json + NAME.safetensors + NAME.md; returns the JSON path.

    Examples
    --------
    >>> import tempfile
    >>> cfg = ModelConfig(elements=(29,), reference_energies=(0.0,), channels=4, max_ell=1,
    ...                   correlation=2, radial_mlp=(8,))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = save_model(MaceModel(cfg), f"{d}/tiny", card={"name": "tiny"})
    ...     load_model(p).config == cfg
    True
    """
    json_path, weights_path, card_path = model_paths(path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    blob = save_safetensors(tensors)
    card = dict(card or {})
    card.setdefault("name", json_path.stem)
    card.setdefault("elements", [int(z) for z in model.config.elements])
    card.setdefault("cutoff_angstrom", model.config.r_max)
    card.setdefault("units", {"energy": "eV", "length": "Å", "stress": "eV/Å³"})
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": PACKAGE_VERSION,
        "config": model.config.to_dict(),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "weights": weights_path.name,
        "weights_sha256": sha256_bytes(blob),
        "weights_bytes": len(blob),
        "card": card,
    }
    tmp = weights_path.with_suffix(".safetensors.tmp")
    tmp.write_bytes(blob)
    os.replace(tmp, weights_path)
    json_path.write_text(json.dumps(header, indent=2, ensure_ascii=False) + "\n")
    card_path.write_text(render_card(header))
    return json_path


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of a model file, with its format checked."""
    json_path, _, _ = model_paths(path)
    if not json_path.exists():
        raise ModelFileError(f"model config {json_path} is missing (expected beside the weights)")
    try:
        header = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(f"model config {json_path} is not valid JSON: {err}") from err
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFileError(f"{json_path} is not an ase_equi model file (no 'format': '{FORMAT}')")
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{json_path} has format version {version}, newer than this ase_equi reads "
            f"({FORMAT_VERSION}); upgrade ase_equi"
        )
    for key in ("config", "weights_sha256", "weights_bytes"):
        if key not in header:
            raise ModelFileError(f"{json_path} lacks the field '{key}'")
    return header


def load_model(
    path: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
) -> LoadedModel:
    """Load a model file after checking its format version, size and SHA-256.

    Raises
    ------
    ModelFileError
        Missing config or weights, newer format, truncated or tampered weights, tensors that do
        not fit the architecture.
    """
    header = read_header(path)
    json_path, weights_path, _ = model_paths(path)
    weights_path = json_path.parent / header.get("weights", weights_path.name)
    if not weights_path.exists():
        raise ModelFileError(f"model weights {weights_path} are missing")
    blob = weights_path.read_bytes()
    expected = int(header["weights_bytes"])
    if len(blob) != expected:
        raise ModelFileError(
            f"model weights {weights_path} truncated or padded: expected {expected} bytes, "
            f"found {len(blob)}"
        )
    digest = sha256_bytes(blob)
    if digest != header["weights_sha256"]:
        raise ModelFileError(
            f"model weights {weights_path} fail the SHA-256 check (expected "
            f"{header['weights_sha256'][:16]}…, found {digest[:16]}…): the file was modified"
        )
    try:
        tensors = load_safetensors(blob)
    except Exception as err:  # safetensors raises its own error types
        raise ModelFileError(f"model weights {weights_path} cannot be parsed: {err}") from err
    try:
        config = ModelConfig.from_dict(header["config"])
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"model config {json_path} is invalid: {err}") from err
    model = build_from_state_dict(config, tensors, source=str(weights_path))
    # without a dtype nothing is narrowed: float64 buffers (E0, couplings) stay exact
    model = model.to(device=device, dtype=dtype or torch.float64)
    model.eval()
    return LoadedModel(
        model=model, config=config, card=header.get("card", {}), source=str(json_path)
    )


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


def render_card(header: dict[str, Any]) -> str:
    """Markdown model card from a header (config and card)."""
    card, cfg = header.get("card", {}), header["config"]
    from ase.data import chemical_symbols

    lines = [f"# {card.get('name', 'model')}", ""]
    if card.get("description"):
        lines += [str(card["description"]), ""]
    elements = ", ".join(chemical_symbols[z] for z in cfg["elements"])
    lines += [
        "| field | value |",
        "|---|---|",
        f"| elements | {elements} |",
        f"| cutoff | {cfg['r_max']} Å |",
        f"| architecture | MACE, {cfg['num_interactions']} layers, {cfg['channels']} channels, "
        f"max_L={cfg['max_L']}, max_ell={cfg['max_ell']}, correlation={cfg['correlation']} |",
        f"| dtype | {header.get('dtype')} |",
        f"| format | {header['format']} v{header['format_version']}, ase_equi "
        f"{header.get('package_version')} |",
        f"| weights SHA-256 | `{header['weights_sha256']}` |",
    ]
    skip = {"name", "description", "elements", "cutoff_angstrom"}
    for key, value in card.items():
        if key in skip:
            continue
        text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
        lines.append(f"| {key.replace('_', ' ')} | {text} |")
    return "\n".join(lines) + "\n"
