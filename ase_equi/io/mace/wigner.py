"""The Wigner 3j symbols a MACE file carries in its tensor products, checked and classified.

e3nn stores one symbol block ``_w3j_{l1}_{l2}_{l3}`` per tensor-product path with all three
degrees ≥ 1 inside each compiled tensor product of the file. A file saved in float32 holds them
rounded to float32, and mace-torch computes with those rounded values even in float64 (its
messages then differ from exact ones by about 1e-9 relative). :func:`wigner_float32` checks
every block against e3nn's symbol (exactly, after rounding, for float32 blocks) and says
whether the file's are the rounded ones, so that the model can use the same
(:class:`~ase_equi.model.config.ModelConfig` ``wigner_float32``).
"""

from __future__ import annotations

import torch
from e3nn import o3

from ...errors import ModelFileError

__all__ = ["wigner_float32"]

MAX_DEGREE = 8  # well above any MACE model's max_ell; bounds the symbols computed for checking


def _degrees(key: str, path: str) -> tuple[int, int, int]:
    text = key.rsplit("._w3j_", 1)[1]
    parts = text.split("_")
    if len(parts) != 3 or not all(p.isdigit() and int(p) <= MAX_DEGREE for p in parts):
        raise ModelFileError(f"{path}: {key} does not name a Wigner 3j block of degrees ≤ 8")
    l1, l2, l3 = (int(p) for p in parts)
    return l1, l2, l3


def wigner_float32(sd: dict[str, torch.Tensor], path: str) -> bool:
    """True when the file's Wigner 3j blocks are e3nn's symbols rounded to float32, False when
    they are float64 (or absent); a block that is neither is a :class:`ModelFileError`."""
    dtypes = set()
    for key, value in sd.items():
        if "._w3j_" not in key or not key.startswith("interactions."):
            continue
        exact = o3.wigner_3j(*_degrees(key, path), dtype=torch.float64)
        if value.dtype == torch.float32:
            same = value.shape == exact.shape and torch.equal(value, exact.float())
        else:
            same = value.shape == exact.shape and bool(
                (value.to(torch.float64) - exact).abs().max() <= 1e-12
            )
        if not same:
            raise ModelFileError(f"{path}: {key} is not e3nn's Wigner 3j symbol")
        dtypes.add(value.dtype)
    if len(dtypes) > 1:
        raise ModelFileError(f"{path}: the Wigner 3j blocks mix dtypes {sorted(map(str, dtypes))}")
    return dtypes == {torch.float32}
