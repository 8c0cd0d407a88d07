"""The bundled model zoo: models trained by this project, shipped in ``ase_equi/models/``.

A zoo model ``NAME`` is a model file (``NAME.json`` + ``NAME.safetensors`` + ``NAME.md``) in the
package's ``models`` folder; its card records the data, level of theory and measured errors.
Nothing is downloaded: what is listed here is what is installed.

Examples
--------
>>> "metals" in zoo_names()
True
>>> zoo_path("no-such-model")
Traceback (most recent call last):
...
KeyError: "unknown zoo model 'no-such-model'; the zoo has: metals, molecules-pbe, silicon-xtb"
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ase.data import chemical_symbols

ZOO_DIR = Path(__file__).parent / "models"


def zoo_names() -> list[str]:
    """Names of the bundled models, sorted."""
    return sorted(p.stem for p in ZOO_DIR.glob("*.json"))


def zoo_path(name: str) -> Path:
    """The ``NAME.json`` of zoo model ``name``; ``KeyError`` naming the known models if absent."""
    path = ZOO_DIR / f"{name}.json"
    if not name or "/" in name or os.sep in name or not path.is_file():
        known = ", ".join(zoo_names()) or "(none installed)"
        raise KeyError(f"unknown zoo model {name!r}; the zoo has: {known}")
    return path


def is_zoo_name(model: str | os.PathLike) -> bool:
    """True when ``model`` names a zoo model rather than a file on disk."""
    text = os.fspath(model)
    if not text or "/" in text or os.sep in text or Path(text).exists():
        return False
    return (ZOO_DIR / f"{text}.json").is_file()


def resolve(model: str | os.PathLike) -> str | os.PathLike:
    """``model`` as a path: a zoo name becomes its ``NAME.json``; a file path stays as it is.

    A bare name (no directory, no suffix) that is neither a file nor in the zoo raises
    ``ValueError`` listing the zoo.
    """
    text = os.fspath(model)
    if is_zoo_name(text):
        return zoo_path(text)
    from .io.model_file import model_paths

    bare = not any(c in text for c in ("/", os.sep, "."))
    if bare and not any(p.exists() for p in model_paths(text)):
        known = ", ".join(zoo_names()) or "(none installed)"
        raise ValueError(
            f"{text!r} is neither a model file nor a zoo model (unknown zoo model {text!r}; "
            f"the zoo has: {known})"
        )
    return model


def zoo_entries() -> list[dict[str, Any]]:
    """One summary row per zoo model, from the cards (no weights are read)."""
    from .io.model_file import read_header

    rows = []
    for name in zoo_names():
        header = read_header(zoo_path(name))
        card, cfg = header.get("card", {}), header["config"]
        test = card.get("test_errors", {})
        rows.append(
            {
                "name": name,
                "elements": " ".join(chemical_symbols[z] for z in cfg["elements"]),
                "level_of_theory": card.get("level_of_theory", ""),
                "cutoff": cfg["r_max"],
                "energy_mae": test.get("energy_mae"),
                "forces_mae": test.get("forces_mae"),
                "stress_mae": test.get("stress_mae"),
                "kbytes": round(header["weights_bytes"] / 1024),
            }
        )
    return rows


def zoo_table() -> str:
    """The zoo as a markdown table (what ``ase-equi zoo`` prints)."""

    def num(x: Any) -> str:
        return "–" if x is None else f"{x:.3g}"

    lines = [
        "| name | elements | level of theory | cutoff (Å) | test MAE E (meV/atom) "
        "| F (meV/Å) | σ (meV/Å³) | weights (kB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in zoo_entries():
        lines.append(
            f"| {r['name']} | {r['elements']} | {r['level_of_theory']} | {r['cutoff']} | "
            f"{num(r['energy_mae'])} | {num(r['forces_mae'])} | {num(r['stress_mae'])} | "
            f"{r['kbytes']} |"
        )
    return "\n".join(lines) + "\n"
