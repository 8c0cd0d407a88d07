"""Checks of the committee fields of a model header: ``committee`` and
``uncertainty_calibration`` (the layout is described in :mod:`ase_equi.io.model_committee`).

Every check raises :class:`~ase_equi.errors.ModelFileError` naming the file and the field.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..errors import ModelFileError
from ..model.committee import STD_DDOF
from .model_header import check_head

__all__ = ["CALIBRATION_FIELDS", "KINDS", "MAX_MEMBERS", "check_committee_fields"]

KINDS = ("full", "shallow")
MAX_MEMBERS = 64
CALIBRATION_FIELDS = ("factor", "quantity", "method", "n_values", "miscalibration_area", "data")


def check_committee_fields(header: dict[str, Any], where: Path | str) -> None:
    """``ModelFileError`` naming the field unless ``committee`` and ``uncertainty_calibration``
    are null or well formed (called by the header check of format 2)."""
    entry, calibration = header["committee"], header["uncertainty_calibration"]
    if entry is None:
        if calibration is not None:
            raise ModelFileError(f"{where}: 'uncertainty_calibration' is set without a committee")
        return
    fields = {"kind", "size", "std_ddof", "members"}
    if not isinstance(entry, dict) or set(entry) != fields:
        got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise ModelFileError(
            f"{where}: 'committee' is set, but not as an object with exactly the fields "
            f"{sorted(fields)} (got {got})"
        )
    size, members = entry["size"], entry["members"]
    if entry["kind"] not in KINDS:
        raise ModelFileError(f"{where}: committee kind {entry['kind']!r:.40} is not one of {KINDS}")
    if isinstance(size, bool) or not isinstance(size, int) or not 2 <= size <= MAX_MEMBERS:
        raise ModelFileError(f"{where}: committee size must be an integer in 2..{MAX_MEMBERS}")
    if entry["std_ddof"] != STD_DDOF:
        raise ModelFileError(f"{where}: committee std_ddof must be {STD_DDOF} (divisor M − 1)")
    if not isinstance(members, list) or len(members) != size:
        raise ModelFileError(f"{where}: committee 'members' must list {size} members")
    n_elements = len(header["config"].get("elements") or ())
    for m, member in enumerate(members):
        if not isinstance(member, dict) or not isinstance(member.get("name"), str):
            raise ModelFileError(f"{where}: committee member {m} needs a 'name' (string)")
        if entry["kind"] == "full":
            check_head(
                member["name"],
                {k: v for k, v in member.items() if k != "name"},
                n_elements,
                f"{where}: committee member {m}",
            )
        elif set(member) != {"name"}:
            raise ModelFileError(f"{where}: shallow committee member {m} has only a 'name'")
    if calibration is not None:
        _check_calibration(calibration, where)


def _check_calibration(calibration: Any, where: Path | str) -> None:
    if not isinstance(calibration, dict) or not set(calibration) <= set(CALIBRATION_FIELDS):
        raise ModelFileError(
            f"{where}: 'uncertainty_calibration' must be an object with fields among "
            f"{CALIBRATION_FIELDS}"
        )
    factor = calibration.get("factor")
    if isinstance(factor, bool) or not isinstance(factor, (int, float)):
        raise ModelFileError(f"{where}: uncertainty_calibration 'factor' must be a number")
    if not (math.isfinite(factor) and factor > 0):
        raise ModelFileError(
            f"{where}: uncertainty_calibration 'factor' must be finite and > 0, got {factor!r}"
        )
