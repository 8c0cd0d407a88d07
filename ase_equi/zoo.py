"""The bundled model zoo: models trained by this project, in the project's top-level ``models/``.

A zoo model ``NAME`` is a model file (``NAME.json`` + ``NAME.safetensors`` + ``NAME.md``) in
``models/``, which the wheel installs as the package-data package ``ase_equi_zoo`` (read with
:mod:`importlib.resources`); its card records the data, level of theory and measured errors.
Nothing is downloaded: what is listed here is what is installed. Each zoo model's header hash
(which covers its config, heads, card and the weights' SHA-256) is pinned in :data:`ZOO_PINS`,
so a zoo file replaced after installation is refused when resolved by name.

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

import importlib.resources
import os
from pathlib import Path
from typing import Any

from ase.data import chemical_symbols

from .errors import ModelFileError

ZOO_PACKAGE = "ase_equi_zoo"


def _zoo_dir() -> Path:
    """The folder of the installed zoo package; in a source tree without an install, ``models/``.

    A zoo inside a zip archive (not a folder) is refused: model files are read by path.
    """
    try:
        root = importlib.resources.files(ZOO_PACKAGE)
    except ModuleNotFoundError:  # running from a source tree that was never installed
        return Path(__file__).resolve().parents[1] / "models"
    if not isinstance(root, Path):
        raise ModelFileError(
            f"the zoo package {ZOO_PACKAGE} is installed as {root!r}, not as a folder; install "
            "ase_equi from its wheel (pip unpacks it) to use zoo models"
        )
    return root


#: Folder of the zoo files (``NAME.json``, ``NAME.safetensors``, ``NAME.md``).
ZOO_DIR = _zoo_dir()

#: ``header_sha256`` of every zoo model as released (update with the model, in the same commit).
ZOO_PINS: dict[str, str] = {
    "metals": "f6380e8d544d1603c7015642b6891fa2602d527bc09d4e503341a6d71334ceab",
    "molecules-pbe": "dde73d36abfeb18be259d950c45ec5b66be520524487a6181554efc34e04fca7",
    "silicon-xtb": "ed9d8fd6bd33f97d1c3c62e3c8bac498a0866c698b1d6ac16663e85b60155611",
}


def zoo_names() -> list[str]:
    """Names of the bundled models (pinned and installed), sorted."""
    return sorted(name for name in ZOO_PINS if (ZOO_DIR / f"{name}.json").is_file())


def zoo_path(name: str) -> Path:
    """The ``NAME.json`` of zoo model ``name``, checked against its pin.

    Raises
    ------
    KeyError
        ``name`` is not a zoo model (the message lists the zoo).
    ModelFileError
        The installed file's header hash differs from the pin: the zoo file was replaced.
    """
    if name not in ZOO_PINS or not (ZOO_DIR / f"{name}.json").is_file():
        known = ", ".join(zoo_names()) or "(none installed)"
        raise KeyError(f"unknown zoo model {name!r}; the zoo has: {known}")
    path = ZOO_DIR / f"{name}.json"
    check_pin(name, path)
    return path


def check_pin(name: str, path: Path) -> None:
    """``ModelFileError`` unless the header at ``path`` carries the pinned hash of ``name``."""
    from .io.model_file import read_header

    try:
        digest = read_header(path).get("header_sha256")
    except ModelFileError as err:
        raise ModelFileError(f"zoo model {name!r} was replaced or damaged: {err}") from err
    if digest != ZOO_PINS[name]:
        raise ModelFileError(
            f"zoo model {name!r} at {path} was replaced: its header hash "
            f"{str(digest)[:16]}… is not the pinned {ZOO_PINS[name][:16]}…; reinstall ase_equi "
            "or load the file by its path if you trust it"
        )


def is_zoo_name(model: str | os.PathLike) -> bool:
    """True when ``model`` names a zoo model rather than a file on disk."""
    text = os.fspath(model)
    if not text or "/" in text or os.sep in text or Path(text).exists():
        return False
    return text in ZOO_PINS and (ZOO_DIR / f"{text}.json").is_file()


def resolve(model: str | os.PathLike) -> str | os.PathLike:
    """``model`` as a path: a zoo name becomes its ``NAME.json``; a file path stays as it is.

    A bare name (no directory, no suffix) that is neither a file nor in the zoo raises
    ``ValueError`` listing the zoo; a compressed file (``.xz``, ``.gz``, ...) raises
    ``ModelFileError`` asking to decompress it first.
    """
    from .io.model_file import model_paths, refuse_compressed

    text = os.fspath(model)
    if is_zoo_name(text):
        return zoo_path(text)
    refuse_compressed(text)

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
