"""Format 1 → format 2: rewrite a model file in place, verifying that nothing computed changes."""

from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors

from ..errors import ModelFileError
from ..model.config import ModelConfig
from ..model.mace import MaceModel
from .model_file import (
    build_from_state_dict,
    head_tensors,
    model_paths,
    read_model_file,
    save_model,
    write_atomic,
)
from .model_header import FORMAT_VERSION, HEAD_CONSTANTS, header_digest, read_header

log = logging.getLogger(__name__)


def upgrade_model_file(
    path: str | os.PathLike,
    *,
    energies: Callable[[MaceModel], torch.Tensor] | None = None,
) -> Path:
    """Rewrite a format-1 model file as format 2, in place; returns the JSON path.

    The weights hash is checked first (a damaged file is refused, not upgraded). E0, scale and
    shift move from the weights into the header's single head, with the values the weights held
    (what the model computed with), so the energies are unchanged: this is verified by
    evaluating the model before and after (``energies(model) -> tensor``, default: a small
    cluster of every element), bit for bit, before the new files replace the old ones.
    A format-2 file is left as it is.
    """
    json_path = model_paths(path)[0]
    header = read_header(json_path)
    if header["format_version"] == FORMAT_VERSION:
        log.info("%s is already format %d", json_path, FORMAT_VERSION)
        return json_path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        # in the file's own dtype, so the tensors are written back as they were
        old = read_model_file(json_path, dtype=getattr(torch, header.get("dtype", "float64")))
        reference = read_model_file(json_path)  # float64, as the probe of the staged file
    probe = energies or _probe_energies
    before = probe(reference.model)
    card = dict(header.get("card", {}))
    tmp_dir = json_path.parent
    staged = save_model(old.model, tmp_dir / f".upgrade-{os.getpid()}-{json_path.stem}", card=card)
    try:
        new_header = json.loads(staged.read_text())
        new_header["weights"] = model_paths(json_path)[1].name
        new_header["header_sha256"] = header_digest(new_header)
        staged.write_text(json.dumps(new_header, indent=2, ensure_ascii=False) + "\n")
        staged_weights = model_paths(staged)[1]
        # check the staged model under its final weights name: load with the blob renamed
        after_model = _load_staged(new_header, staged_weights)
        after = probe(after_model)
        if not torch.equal(before, after):
            raise ModelFileError(
                f"upgrading {json_path} would change its energies (max difference "
                f"{(before - after).abs().max().item():.3g} eV); the file was left as it was"
            )
        os.replace(staged_weights, model_paths(json_path)[1])
        os.replace(model_paths(staged)[2], model_paths(json_path)[2])
        write_atomic(json_path, staged.read_bytes())
    finally:
        for p in model_paths(staged):
            if p.exists():
                p.unlink()
    return json_path


def _load_staged(header: dict[str, Any], weights: Path) -> MaceModel:
    head = header["heads"][header["default_head"]]
    config = ModelConfig.from_dict({**header["config"], **{k: head[k] for k in HEAD_CONSTANTS}})
    tensors = {**load_safetensors(weights.read_bytes()), **head_tensors(head)}
    return build_from_state_dict(config, tensors, source=str(weights)).double().eval()


def _probe_energies(model: MaceModel) -> torch.Tensor:
    """Per-atom energies of a small distorted cluster holding every element of the model."""
    n = max(4, len(model.config.elements))
    gen = torch.Generator().manual_seed(0)
    positions = torch.rand(n, 3, generator=gen, dtype=torch.float64) * 4.0
    elements = torch.arange(n) % len(model.config.elements)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    senders = torch.tensor([i for i, _ in pairs])
    receivers = torch.tensor([j for _, j in pairs])
    vectors = positions[receivers] - positions[senders]
    keep = torch.linalg.norm(vectors, dim=1) < model.config.r_max
    model = copy.deepcopy(model).double()  # the caller keeps its dtype
    with torch.no_grad():
        out = model(
            elements,
            vectors[keep],
            senders[keep],
            receivers[keep],
            torch.zeros(n, dtype=torch.long),
            1,
        )
    return out["node_energies"]
