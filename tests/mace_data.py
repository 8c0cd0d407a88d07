"""The MACE reference files in tests/fixtures/mace, decompressed on first use.

The ``.model`` files are stored xz-compressed (their symmetric-contraction U matrices are sparse);
each test process decompresses the ones it needs into one temporary folder.
"""

from __future__ import annotations

import functools
import json
import lzma
import tempfile
from pathlib import Path

DATA = Path(__file__).parent / "fixtures" / "mace"
NAMES = sorted(
    p.name.removesuffix(".model.xz")
    for p in DATA.glob("*.model.xz")
    if not p.name.startswith(("unsupported_", "multihead"))
)


@functools.cache
def _cache_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="ase_equi_mace_"))


def model_file(name: str) -> Path:
    """Path of the decompressed ``<name>.model``."""
    out = _cache_dir() / f"{name}.model"
    if not out.exists():
        out.write_bytes(lzma.decompress((DATA / f"{name}.model.xz").read_bytes()))
    return out


def reference(name: str) -> dict:
    return json.loads((DATA / f"reference_{name}.json").read_text())
