"""The JSON header of a model file: bounded reading, type checks and the canonical-form hash.

Format version 2 (what :func:`~ase_equi.io.model_file.save_model` writes)::

    {"format": "ase_equi-model", "format_version": 2, "package_version": "0.1.0",
     "config": {...architecture only: ModelConfig.to_dict() without E0, scale, shift...},
     "dtype": "float32" | "float64",
     "weights": "NAME.safetensors", "weights_sha256": "<64 hex>", "weights_bytes": 229808,
     "heads": {"Default": {"reference_energies": [...], "scale": 0.8, "shift": 0.03,
                           "card": {...} (optional)}},
     "default_head": "Default",
     "committee": null, "uncertainty_calibration": null,
     "card": {...},
     "header_sha256": "<64 hex>"}

``header_sha256`` is the SHA-256 of the canonical JSON of every other field (sorted keys, no
whitespace, ASCII only), so that any edit of the config, the heads, the card or the weights hash
is detected. The per-element reference energies E0 (eV), the scale and the shift (eV) live only
in ``heads``: one head per fitted energy reference. Without ``config["heads"]`` all heads share
the readouts; with it (two or more names, the same as the header's heads, in order) every head
has its own readouts (``head_readouts.K.*`` in the weights; a fine-tuned model keeps its
parent's level of theory in one head). ``committee`` and
``uncertainty_calibration`` are null for one model; a committee file sets them (see
:mod:`ase_equi.io.model_committee`). JSON keeps Python floats exactly (``repr``
round-trips), so float64 E0 survive a save and a load bit for bit.

Version-1 headers (config with E0, scale and shift inside, no header hash) are still read; the
loader warns that their header is not covered by a hash.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

from ..errors import ModelFileError
from ..model.config import ModelConfig

FORMAT = "ase_equi-model"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MAX_HEADER_BYTES = 16 * 2**20  # a header is kilobytes; 16 MiB leaves room for long cards
MAX_WEIGHTS_BYTES = 8 * 2**30  # MACE foundation models are < 0.5 GB
MAX_HEADS = 64
HEAD_CONSTANTS = ("reference_energies", "scale", "shift")
COMPRESSED_SUFFIXES = (".xz", ".gz", ".bz2", ".zst", ".zip", ".lzma", ".tgz", ".7z")
V2_FIELDS = frozenset(
    {
        "format",
        "format_version",
        "package_version",
        "config",
        "dtype",
        "weights",
        "weights_sha256",
        "weights_bytes",
        "heads",
        "default_head",
        "committee",
        "uncertainty_calibration",
        "card",
        "header_sha256",
    }
)
#: fields a format-2 header may have (absent: the model has no such section)
OPTIONAL_V2_FIELDS = frozenset({"prediction_rigidity"})  # see io/rigidity_section.py
DTYPES = ("float32", "float64")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def canonical_json(header: dict[str, Any]) -> bytes:
    """Canonical bytes of ``header`` without its ``header_sha256``: sorted keys, no spaces, ASCII.

    Examples
    --------
    >>> canonical_json({"b": 1.5, "a": "Å", "header_sha256": "x"})
    b'{"a":"\\\\u00c5","b":1.5}'
    """
    body = {k: v for k, v in header.items() if k != "header_sha256"}
    text = json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )
    return text.encode("ascii")


def header_digest(header: dict[str, Any]) -> str:
    """SHA-256 (hex) of :func:`canonical_json` of ``header``."""
    return hashlib.sha256(canonical_json(header)).hexdigest()


def _refuse_constant(name: str) -> float:
    raise ModelFileError(f"{name} is not a number JSON allows")


def read_regular_file(path: Path, limit: int, what: str) -> bytes:
    """The bytes of ``path``, refusing anything but a regular file of at most ``limit`` bytes."""
    try:
        info = os.stat(path)
    except FileNotFoundError as err:
        raise ModelFileError(f"{what} {path} is missing") from err
    if not stat.S_ISREG(info.st_mode):
        raise ModelFileError(f"{what} {path} is not a regular file")
    if info.st_size > limit:
        raise ModelFileError(
            f"{what} {path} has {info.st_size:,} bytes; at most {limit:,} are read"
        )
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ModelFileError(f"{what} {path} grew past {limit:,} bytes while being read")
    return data


def parse_header_bytes(data: bytes, json_path: Path) -> dict[str, Any]:
    """Parse and type-check a header; ``ModelFileError`` naming the field otherwise."""
    try:
        header = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError too
        raise ModelFileError(f"model config {json_path} is not valid JSON: {err}") from err
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFileError(f"{json_path} is not an ase_equi model file (no 'format': '{FORMAT}')")
    version = header.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ModelFileError(f"{json_path}: 'format_version' must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{json_path} has format version {version}, newer than this ase_equi reads "
            f"({FORMAT_VERSION}); upgrade ase_equi"
        )
    if version not in READABLE_VERSIONS:
        raise ModelFileError(
            f"{json_path} has format version {version}; this ase_equi reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
    required = sorted(V2_FIELDS) if version == 2 else ["config", "weights_sha256", "weights_bytes"]
    missing = [k for k in required if k not in header]
    if missing:
        raise ModelFileError(f"{json_path} lacks the field(s) {', '.join(map(repr, missing))}")
    if version == 2:
        unknown = sorted(set(header) - V2_FIELDS - OPTIONAL_V2_FIELDS)
        if unknown:
            raise ModelFileError(f"{json_path} has unknown field(s) {unknown} for format 2")
    _check_common_fields(header, json_path)
    if version == 2:
        _check_v2_fields(header, json_path)
    return header


def _check_common_fields(header: dict[str, Any], where: Path) -> None:
    def bad(field: str, expected: str) -> ModelFileError:
        return ModelFileError(
            f"{where}: '{field}' must be {expected}, got {header.get(field)!r:.80}"
        )

    if not isinstance(header["config"], dict):
        raise bad("config", "a JSON object")
    if not isinstance(header.get("card", {}), dict):
        raise bad("card", "a JSON object")
    sha = header["weights_sha256"]
    if not isinstance(sha, str) or not _HEX64.fullmatch(sha):
        raise bad("weights_sha256", "64 lowercase hex digits")
    size = header["weights_bytes"]
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_WEIGHTS_BYTES:
        raise bad("weights_bytes", f"an integer in 0..{MAX_WEIGHTS_BYTES}")
    if "weights" in header:
        name = header["weights"]
        if (
            not isinstance(name, str)
            or not name.endswith(".safetensors")
            or len(name) > 255
            or "/" in name
            or "\\" in name
            or "\0" in name
            or name.startswith(".")
        ):
            raise bad("weights", "a plain file name NAME.safetensors in the header's folder")
    if header.get("dtype", "float64") not in DTYPES:
        raise bad("dtype", f"one of {DTYPES}")
    if not isinstance(header.get("package_version", ""), str):
        raise bad("package_version", "a string")


def _check_v2_fields(header: dict[str, Any], where: Path) -> None:
    digest = header["header_sha256"]
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise ModelFileError(f"{where}: 'header_sha256' must be 64 lowercase hex digits")
    actual = header_digest(header)
    if actual != digest:
        raise ModelFileError(
            f"{where} fails its header SHA-256 check (expected {digest[:16]}…, found "
            f"{actual[:16]}…): the config, heads or card were edited after saving; restore the "
            "file or save the model again"
        )
    inside = sorted(set(HEAD_CONSTANTS) & set(header["config"]))
    if inside:
        raise ModelFileError(
            f"{where}: 'config' holds {inside}, which in format 2 live only in 'heads'"
        )
    from .committee_header import check_committee_fields  # imports this module

    check_committee_fields(header, where)  # null, or a committee and its calibration
    from .rigidity_section import check_rigidity_fields  # imports this module

    check_rigidity_fields(header, where)  # absent, null, or a prediction-rigidity section
    heads = header["heads"]
    if not isinstance(heads, dict) or not 1 <= len(heads) <= MAX_HEADS:
        raise ModelFileError(f"{where}: 'heads' must be an object with 1..{MAX_HEADS} heads")
    n_elements = len(header["config"].get("elements") or ())
    for name, head in heads.items():
        check_head(name, head, n_elements, where)
    default = header["default_head"]
    if not isinstance(default, str) or default not in heads:
        raise ModelFileError(
            f"{where}: 'default_head' {default!r:.80} is not one of the heads {sorted(heads)}"
        )


def check_head(name: str, head: Any, n_elements: int, where: Path | str) -> None:
    """Check one head's E0 (eV, one per element), scale and shift (eV) and optional card."""
    label = f"{where}: head {name!r:.80}"
    if not name or len(name) > 100:
        raise ModelFileError(f"{label}: a head name has 1..100 characters")
    if not isinstance(head, dict):
        raise ModelFileError(f"{label} must be a JSON object")
    unknown = sorted(set(head) - {*HEAD_CONSTANTS, "card"})
    missing = [k for k in HEAD_CONSTANTS if k not in head]
    if unknown or missing:
        raise ModelFileError(f"{label}: unknown fields {unknown}, missing fields {missing}")
    e0 = head["reference_energies"]
    if not isinstance(e0, list) or len(e0) != n_elements:
        raise ModelFileError(
            f"{label}: 'reference_energies' must be a list of {n_elements} numbers (one per "
            "element)"
        )
    for key, values in (
        ("reference_energies", e0),
        ("scale", [head["scale"]]),
        ("shift", [head["shift"]]),
    ):
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ModelFileError(f"{label}: '{key}' must be finite numbers, got {v!r:.80}")
    if not isinstance(head.get("card", {}), dict):
        raise ModelFileError(f"{label}: 'card' must be a JSON object")


def select_head(
    header: dict[str, Any], head: str | None, json_path: Path
) -> tuple[str, dict[str, Any]]:
    """``(name, entry)`` of head ``head`` (None: the default head) of a format-2 header."""
    heads = header["heads"]
    name = header["default_head"] if head is None else head
    if name not in heads:
        raise ModelFileError(
            f"{json_path} has no head {name!r}; its heads are {sorted(heads)} (default "
            f"{header['default_head']!r})"
        )
    return name, heads[name]


def refuse_compressed(path: str | os.PathLike) -> None:
    """``ModelFileError`` when ``path`` names a compressed file: it must be decompressed first."""
    name = Path(path).name
    for suffix in COMPRESSED_SUFFIXES:
        if name.lower().endswith(suffix):
            raise ModelFileError(
                f"{os.fspath(path)} is compressed ({suffix}); decompress it first (e.g. "
                f"`xz -dk FILE`, `gunzip -k FILE`) and give the decompressed file"
            )


def model_paths(path: str | os.PathLike) -> tuple[Path, Path, Path]:
    """``(NAME.json, NAME.safetensors, NAME.md)`` for any of the three paths or the bare stem."""
    refuse_compressed(path)
    p = Path(path)
    stem = p.name
    for suffix in (".json", ".safetensors", ".md"):
        stem = stem.removesuffix(suffix)
    return (
        p.with_name(stem + ".json"),
        p.with_name(stem + ".safetensors"),
        p.with_name(stem + ".md"),
    )


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The type-checked (and, for format 2, hash-checked) JSON header of a model file.

    Raises
    ------
    ModelFileError
        Missing, oversized (over 16 MiB) or foreign file, newer or invalid format version,
        mistyped field, failed header hash.
    """
    json_path = model_paths(path)[0]
    if not json_path.exists():
        raise ModelFileError(f"model config {json_path} is missing (expected beside the weights)")
    data = read_regular_file(json_path, MAX_HEADER_BYTES, "model config")
    return parse_header_bytes(data, json_path)


def safetensors_layout(data: bytes, source: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Tensor names → (dtype, shape) from a safetensors blob's own header (no tensor is read).

    The layout is 8 bytes (little-endian u64 N), N bytes of JSON, then the tensor data.
    """
    if len(data) < 8:
        raise ModelFileError(f"{source} is not a safetensors file ({len(data)} bytes)")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8 or n > MAX_HEADER_BYTES:
        raise ModelFileError(f"{source}: safetensors header of {n:,} bytes does not fit the file")
    try:
        meta = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (ValueError, RecursionError) as err:
        raise ModelFileError(f"{source}: safetensors header is not valid JSON: {err}") from err
    if not isinstance(meta, dict):
        raise ModelFileError(f"{source}: safetensors header is not a JSON object")
    out = {}
    for name, entry in meta.items():
        if name == "__metadata__":
            continue
        try:
            shape = tuple(int(s) for s in entry["shape"])
            out[name] = (str(entry["dtype"]), shape)
        except (TypeError, KeyError, ValueError) as err:
            raise ModelFileError(f"{source}: tensor {name!r:.80} has no valid shape") from err
    return out


def check_layout(
    layout: dict[str, tuple[str, tuple[int, ...]]],
    config: ModelConfig,
    version: int,
    source: str,
) -> None:
    """Names and the element/channel/layer counts of the weights against the config, before
    the model is built (so a config that claims a larger model than the file holds costs
    nothing)."""
    inside = sorted(set(HEAD_CONSTANTS) & set(layout))
    if version >= 2 and inside:
        raise ModelFileError(
            f"{source} holds {inside}; in format 2 they live only in the header's heads"
        )
    if version == 1 and len(inside) != len(HEAD_CONSTANTS):
        raise ModelFileError(f"{source} lacks {sorted(set(HEAD_CONSTANTS) - set(layout))}")
    embedding = layout.get("node_embedding.linear.weight")
    want = len(config.elements) * config.channels
    if embedding is None or (len(embedding[1]) != 1 or embedding[1][0] != want):
        raise ModelFileError(
            f"{source} does not fit the architecture in its config: the element embedding has "
            f"shape {embedding[1] if embedding else None}, the config needs [{want}] "
            f"({len(config.elements)} elements × {config.channels} channels)"
        )
    layers = {int(k.split(".")[1]) for k in layout if k.startswith("interactions.")}
    if layers != set(range(config.num_interactions)):
        raise ModelFileError(
            f"{source} does not fit the architecture in its config: it has interaction layers "
            f"{sorted(layers)[:10]}, the config {config.num_interactions}"
        )
    floats = {"F32": "float32", "F64": "float64"}
    odd = sorted({d for d, _ in layout.values()} - set(floats))
    if odd:
        raise ModelFileError(f"{source} holds tensors of dtype {odd}; only F32 and F64 are read")
