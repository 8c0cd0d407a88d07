"""Options of :class:`~ase_equi.calculator.EquivariantCalculator`: names, checks and heads.

Every check raises an error that names the option and the value it got.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import all_changes, compare_atoms, equal

from .errors import AseEquiError
from .io.model_committee import LoadedCommittee
from .io.model_file import LoadedModel
from .option_checks import is_finite_number
from .uncertainty import check_uncertainty_options

DTYPES = {"float64": torch.float64, "float32": torch.float32}
# the constructor's options, all in ``parameters`` (the model too) and all changeable by ``set``
OPTIONS = (
    "device",
    "dtype",
    "skin",
    "retain_memory",
    "resident_graph",
    "chunk_mib",
    "head",
    "uncertainty_threshold",
    "on_uncertain",
)
# keywords of other codes that mean something else here, or under another name
HINTS = {
    "default_dtype": "mace-torch's default_dtype is dtype here: dtype='float64' or 'float32'",
    "model_path": "give the model (zoo name or file) as the first argument",
    "model_paths": "give one model (zoo name or file) as the first argument",
    "compute_stress": "stress is computed when asked (atoms.get_stress()), for a cell of rank 3",
}


def refuse_unknown(kwargs: dict[str, Any], where: str, accepted: tuple[str, ...]) -> None:
    """``TypeError`` naming every keyword not in ``accepted`` (with a hint where one helps)."""
    unknown = [key for key in kwargs if key not in accepted]
    if not unknown:
        return
    hints = "".join(f"; {HINTS[key]}" for key in unknown if key in HINTS)
    raise TypeError(
        f"{where} got unknown keyword{'s' if len(unknown) > 1 else ''} "
        f"{', '.join(map(repr, unknown))}; it accepts {', '.join(accepted)}{hints}"
    )


def check_options(p: dict[str, Any]) -> torch.device:
    """Check the option values in ``p``; return the torch device (available on this machine)."""
    if p["dtype"] not in DTYPES:
        raise ValueError(f"dtype must be 'float64' or 'float32', got {p['dtype']!r}")
    skin = p["skin"]
    if not (is_finite_number(skin) and skin >= 0):
        raise ValueError(f"skin must be a finite number >= 0 (Å), got {skin!r}")
    chunk_mib = p["chunk_mib"]
    if chunk_mib is not None and not (is_finite_number(chunk_mib) and chunk_mib > 0):
        raise ValueError(f"chunk_mib must be None or a number > 0 (MiB), got {chunk_mib!r}")
    for key in ("retain_memory", "resident_graph"):
        allowed = (True, False) if key == "retain_memory" else (True, False, None)
        if not any(p[key] is value for value in allowed):
            raise ValueError(f"{key} must be one of {allowed}, got {p[key]!r}")
    if p["head"] is not None and not isinstance(p["head"], str):
        raise ValueError(f"head must be None or a head's name (str), got {p['head']!r}")
    check_uncertainty_options(p["uncertainty_threshold"], p["on_uncertain"])
    return available_device(p["device"])


def available_device(device: Any) -> torch.device:
    """``torch.device(device)`` if it exists on this machine, else ``AseEquiError`` saying so."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        message = f"device={device!r} is not a torch device ('cpu', 'cuda'): {err}"
        raise AseEquiError(message) from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise AseEquiError(
                f"device={device!r}, but no CUDA device is available to torch here "
                f"(torch {torch.__version__}, torch.cuda.is_available() is False); "
                'run on the CPU with device="cpu"'
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise AseEquiError(
                f"device={device!r}, but this machine has {torch.cuda.device_count()} CUDA "
                'device(s), numbered from 0; use device="cuda" or device="cpu"'
            )
        return dev
    if dev.type == "mps" and torch.backends.mps.is_available():
        return dev
    raise AseEquiError(f'device={device!r} is not available here; use device="cpu"')


def heads_of(loaded: LoadedModel | LoadedCommittee) -> list[str]:
    """The names of the model's heads, as recorded ([] when it records none)."""
    heads = getattr(loaded, "heads", None) or loaded.card.get("heads_in_file")
    heads = heads or loaded.card.get("heads")
    return [str(h) for h in heads] if heads else []


def head_of(loaded: LoadedModel | LoadedCommittee) -> str | None:
    """The name of the head the loaded model answers with, or None if it records none."""
    head = getattr(loaded, "head", None) or loaded.card.get("head")
    return None if head is None else str(head)


def check_head(loaded: LoadedModel | LoadedCommittee, head: str | None, what: str) -> None:
    """``ValueError`` unless ``head`` is None or the head ``loaded`` answers with."""
    if head is None or head == head_of(loaded):
        return
    heads = heads_of(loaded)
    if head in heads:
        raise ValueError(
            f"{what} answers with head {head_of(loaded)!r}, not {head!r}: load it with "
            f"head={head!r}, or give the calculator its file"
        )
    listed = f"its heads are {heads}" if heads else "it has one output and no named heads"
    raise ValueError(f"{what} has no head {head!r}; {listed}")


def changes_of(old: Atoms | None, new: Atoms, tol: float, ignored: Any) -> list[str]:
    """ASE's :func:`~ase.calculators.calculator.compare_atoms` (the same changes), each
    property compared exactly first and with ASE's tolerance ``tol`` only where that fails.

    An MD step asks the calculator several times about the atoms of its one model call;
    exactly equal arrays are within any tolerance, so the exact check decides those at a
    fraction of the cost of ``allclose``. Atoms with other per-atom arrays than ``old``'s
    go to ASE's own comparison.
    """
    if old is None or old.arrays.keys() != new.arrays.keys():
        return compare_atoms(old, new, tol=tol, excluded_properties=set(ignored))
    pairs = [("cell", old.cell.array, new.cell.array), ("pbc", old.pbc, new.pbc)]
    pairs += [(p, old.arrays[p], new.arrays[p]) for p in all_changes if p in old.arrays]
    return [
        name
        for name, a, b in pairs
        if name not in ignored and not np.array_equal(a, b) and not equal(a, b, atol=tol)
    ]


def charge_changed(old: Atoms | None, new: Atoms) -> bool:
    """Whether ``info["charge"]`` differs (ASE's comparison leaves ``info`` out; a charge set
    after a call must reach the check that refuses it)."""
    before = None if old is None else old.info.get("charge")
    after = new.info.get("charge")
    if before is None or after is None:
        return before is not after
    return not np.array_equal(before, after)
