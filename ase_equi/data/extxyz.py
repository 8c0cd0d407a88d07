"""Structures from a data file, each with where it came from (frame index and line number).

An extxyz file is read frame by frame: a line with the number of atoms ``n``, a comment line of
``key=value`` pairs (``Lattice``, ``Properties``, labels such as ``energy=``), then ``n`` atom
lines whose columns follow ``Properties``. Each frame is parsed by ASE on its own, so when ASE
fails the error can name the file, the frame (counted from 0) and the line (counted from 1), and
say what is wrong with that line (too few columns, a word where a number belongs, an unknown
element). A line with more columns than ``Properties`` declares is refused too: ASE reads the
first ones and drops the rest, so an inserted column would shift the labels. ASE's own reader
stops at the first blank line; here a blank line followed by more
frames is an error instead of a silent truncation.

Other formats (ASE databases, anything else ``ase.io.read`` reads) keep no line numbers.

Memory: one frame's lines at a time, each line at most :data:`MAX_LINE_CHARS` characters, so a
hostile file (a huge atom count, a gigabyte without a newline) fails fast in bounded memory.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

from ..errors import DataFileError

__all__ = ["MAX_LINE_CHARS", "SourcedAtoms", "read_structures", "structures_from"]

MAX_LINE_CHARS = 1 << 24  # 16 Mi characters: far above any real extxyz line
_COMPRESSED: dict[str, Callable[..., IO[Any]]] = {
    ".gz": gzip.open,
    ".bz2": bz2.open,
    ".xz": lzma.open,
}
_XYZ_SUFFIXES = {".xyz", ".extxyz"}
_COUNTED_FROM_0 = "frames are counted from 0"


@dataclass(frozen=True)
class SourcedAtoms:
    """One structure as read, with its place in the file.

    ``index`` is the frame's position in the file (from 0); ``first_line`` the 1-based line of
    its atom-count line in an extxyz file (``None`` for other formats). The comment line is
    ``first_line + 1`` and atom ``i`` (from 0) is on line ``first_line + 2 + i``.
    """

    atoms: Atoms
    index: int
    first_line: int | None = None

    def line_of(self, *, atom: int | None = None, header: bool = False) -> int | None:
        """The line of atom ``atom``, of the comment line (``header``), else of the count line."""
        if self.first_line is None:
            return None
        if atom is not None:
            return self.first_line + 2 + atom
        return self.first_line + 1 if header else self.first_line


def structures_from(structures: Any, caller: str) -> list[Atoms]:
    """The Atoms of ``structures``: a sequence of Atoms, or a data file's path (its frames,
    :func:`read_structures`); ``TypeError`` naming ``caller`` for one Atoms (``[atoms]`` is
    meant) or an item that is not an Atoms."""
    if isinstance(structures, (str, os.PathLike)):
        return [item.atoms for item in read_structures(structures)]
    if isinstance(structures, Atoms):
        raise TypeError(f"{caller}() takes a list of structures (or a file): [atoms] for one")
    images = list(structures)
    for k, atoms in enumerate(images):
        if not isinstance(atoms, Atoms):
            raise TypeError(f"{caller}(): structure {k} is a {type(atoms).__name__}, not Atoms")
    return images


def _open_text(path: Path) -> IO[str]:
    opener = _COMPRESSED.get(path.suffix.lower())
    if opener is not None:
        return opener(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _is_xyz(path: Path) -> bool:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED:
        suffixes = suffixes[:-1]
    return bool(suffixes) and suffixes[-1] in _XYZ_SUFFIXES


def read_structures(path: str | os.PathLike) -> list[SourcedAtoms]:
    """Every structure in ``path`` with its frame index and (extxyz) line number.

    Parameters
    ----------
    path:
        An extxyz file (``.xyz``/``.extxyz``, optionally ``.gz``/``.bz2``/``.xz``), an ASE
        database (``.db``; key-value pairs go to ``info``, per-atom ``data`` arrays to
        ``arrays``) or any other file ``ase.io.read`` understands.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    DataFileError
        The file is empty, not text, not extxyz, or a frame cannot be parsed; the message names
        the file, the frame (from 0) and, for extxyz, the line (from 1) and what is wrong there.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "h2.xyz").write_text("2\\nenergy=-1.0\\nH 0 0 0\\nH 0 0 0.74\\n")
    >>> [(s.index, s.first_line, s.atoms.get_chemical_formula())
    ...  for s in read_structures(folder / "h2.xyz")]
    [(0, 1, 'H2')]
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file {path} does not exist")
    if path.suffix == ".db":
        out = [SourcedAtoms(a, k) for k, a in enumerate(_read_db(path))]
    elif _is_xyz(path):
        out = list(_read_extxyz(path))
    else:
        out = [SourcedAtoms(a, k) for k, a in enumerate(_read_other(path))]
    if not out:
        raise DataFileError(f"data file {path} contains no structures (it is empty)")
    return out


# ---------------------------------------------------------------------------------------------
# extxyz, frame by frame


class _Lines:
    """Numbered lines of a text file, each bounded by :data:`MAX_LINE_CHARS`."""

    def __init__(self, handle: IO[str], path: Path) -> None:
        self.handle, self.path, self.number = handle, path, 0
        self.pending: str | None = None

    def push_back(self, line: str) -> None:
        """Un-read ``line`` (the last one read): the next call returns it again."""
        self.pending = line
        self.number -= 1

    def next(self) -> str | None:
        """The next line (with its newline), or None at the end of the file."""
        if self.pending is not None:
            line, self.pending = self.pending, None
            self.number += 1
            return line
        try:
            line = self.handle.readline(MAX_LINE_CHARS + 1)
        except UnicodeDecodeError as err:
            raise DataFileError(
                f"{self.path}, line {self.number + 1}: not a text (UTF-8) file ({err.reason} "
                f"at byte {err.start}); is it an extxyz file?"
            ) from None
        except (OSError, EOFError, lzma.LZMAError) as err:
            raise DataFileError(f"{self.path}: cannot be decompressed or read: {err}") from None
        if not line:
            return None
        self.number += 1
        if len(line) > MAX_LINE_CHARS:
            raise DataFileError(
                f"{self.path}, line {self.number}: longer than {MAX_LINE_CHARS} characters; "
                "is it an extxyz file?"
            )
        return line


def _read_extxyz(path: Path) -> Iterator[SourcedAtoms]:
    with _open_text(path) as handle:
        lines = _Lines(handle, path)
        k = 0
        while True:
            line = lines.next()
            if line is None:
                return
            if not line.strip():
                _rest_must_be_blank(lines, k)
                return
            first = lines.number
            where = f"{path}, frame {k} ({_COUNTED_FROM_0}), line {first}"
            try:
                n = int(line)
            except ValueError:
                raise DataFileError(
                    f"{where}: expected the number of atoms of a frame, found "
                    f"{line.strip()[:60]!r}; is this an extxyz file?"
                ) from None
            if n < 0:
                raise DataFileError(f"{where}: negative number of atoms {n}")
            block = [line]
            for _ in range(n + 1):  # the comment line, then n atom lines
                more = lines.next()
                if more is None:
                    raise DataFileError(
                        f"{where}: the frame declares {n} atoms but the file ends after "
                        f"{max(len(block) - 2, 0)} atom lines (line {lines.number})"
                    )
                block.append(more)
            block += _vec_lines(lines)
            yield SourcedAtoms(_parse_frame(block, path, k, first), k, first)
            k += 1


def _vec_lines(lines: _Lines) -> list[str]:
    """ASE's optional ``VEC1``..``VEC3`` lines after a frame (old cell notation)."""
    out: list[str] = []
    while len(out) < 3:
        line = lines.next()
        if line is None:
            break
        if not line.lstrip().startswith("VEC"):
            lines.push_back(line)
            break
        out.append(line)
    return out


def _rest_must_be_blank(lines: _Lines, k: int) -> None:
    blank = lines.number
    while (line := lines.next()) is not None:
        if line.strip():
            raise DataFileError(
                f"{lines.path}, line {blank}: blank line after frame {k - 1} "
                f"({_COUNTED_FROM_0}), but more text follows at line {lines.number}; ASE would "
                "silently stop reading here. Remove the blank line(s)."
            )


def _parse_frame(block: list[str], path: Path, k: int, first: int) -> Atoms:
    from ase.io import read

    extra = _extra_columns(block, first)
    if extra:  # ASE reads the first columns and drops the rest: labels shifted, no error
        raise DataFileError(f"{path}, frame {k} ({_COUNTED_FROM_0}), {extra}")
    try:
        atoms = read(io.StringIO("".join(block)), format="extxyz", index=0)
        assert isinstance(atoms, Atoms)  # index=0 reads one frame
        return atoms
    except Exception as err:  # noqa: BLE001 - ASE raises many types; all become one message
        reason = _diagnose(block, first) or (
            f"line {first + 1}: ASE cannot read the frame: {type(err).__name__}: {err}"
        )
        raise DataFileError(f"{path}, frame {k} ({_COUNTED_FROM_0}), {reason}") from None


def _properties(comment: str, line: int) -> tuple[str, list[tuple[str, str, int]]] | str:
    """``(Properties string, [(name, type, count), ...])`` or a reason naming the line."""
    from ase.io.extxyz import key_val_str_to_dict

    try:
        info = key_val_str_to_dict(comment)
    except Exception as err:  # noqa: BLE001
        return f"line {line}: the comment line is not extxyz key=value pairs: {err}"
    text = str(info.get("Properties", "species:S:1:pos:R:3"))
    parts = text.split(":")
    if len(parts) % 3:
        return f"line {line}: Properties={text!r} is not name:type:count triples"
    columns = []
    for name, kind, count in zip(parts[::3], parts[1::3], parts[2::3], strict=True):
        if kind not in "RISL" or not count.isdigit():
            return f"line {line}: Properties entry {name}:{kind}:{count} is not valid"
        columns.append((name, kind, int(count)))
    return text, columns


def _extra_columns(block: list[str], first: int) -> str | None:
    """The first atom line with more columns than ``Properties`` declares, and why (a
    ``Properties`` that cannot be parsed is left to ASE and :func:`_diagnose`)."""
    parsed = _properties(block[1], first + 1)
    if isinstance(parsed, str):
        return None
    text, columns = parsed
    expected = sum(count for _, _, count in columns)
    for i, raw in enumerate(block[2:]):
        tokens = len(raw.split())
        if tokens > expected and not raw.lstrip().startswith("VEC"):
            return (
                f"line {first + 2 + i} (atom {i}): {tokens} columns, but Properties={text} "
                f"declares {expected}"
            )
    return None


def _diagnose(block: list[str], first: int) -> str | None:
    """The first line of a frame that ASE cannot read, and why; None if none is found."""
    parsed = _properties(block[1], first + 1)
    if isinstance(parsed, str):
        return parsed
    text, columns = parsed
    expected = sum(count for _, _, count in columns)
    for i, raw in enumerate(block[2 : len(block)], start=0):
        if raw.lstrip().startswith("VEC"):
            continue
        line, tokens = first + 2 + i, raw.split()
        if len(tokens) != expected:
            return (
                f"line {line} (atom {i}): {len(tokens)} columns, but Properties={text} needs "
                f"{expected}"
            )
        position = 0
        for name, kind, count in columns:
            for token in tokens[position : position + count]:
                problem = _bad_token(name, kind, token)
                if problem:
                    return f"line {line} (atom {i}), column '{name}': {problem}"
            position += count
    return None


def _bad_token(name: str, kind: str, token: str) -> str | None:
    if kind == "R":
        try:
            float(token)
        except ValueError:
            return f"{token!r} is not a number"
    elif kind == "I":
        try:
            int(token)
        except ValueError:
            return f"{token!r} is not an integer"
    elif kind == "L" and token not in ("T", "F", "True", "False", "true", "false"):
        return f"{token!r} is not a logical (T or F)"
    elif name == "species" and token.capitalize() not in atomic_numbers:
        return f"{token!r} is not a chemical element"
    return None


# ---------------------------------------------------------------------------------------------
# other formats


def _read_db(path: Path) -> list[Atoms]:
    import ase.db

    out = []
    try:
        with ase.db.connect(path) as db:
            for row in db.select():
                atoms = row.toatoms()
                atoms.info.update(row.key_value_pairs)
                for name, value in (row.get("data") or {}).items():
                    if np.ndim(value) == 2 and np.shape(value)[0] == len(atoms):  # per-atom
                        atoms.arrays[name] = np.asarray(value)
                    else:
                        atoms.info[name] = value
                out.append(atoms)
    except DataFileError:
        raise
    except Exception as err:  # noqa: BLE001 - sqlite/json errors of a damaged database
        raise DataFileError(
            f"{path}: cannot be read as an ASE database after {len(out)} rows "
            f"(row {len(out)}, {_COUNTED_FROM_0}): {type(err).__name__}: {err}"
        ) from None
    return out


def _read_other(path: Path) -> list[Atoms]:
    from ase.io import read

    try:
        images = read(path, index=":")
    except Exception as err:  # noqa: BLE001 - ASE raises many types for unreadable files
        raise DataFileError(
            f"{path}: ase.io.read cannot read it ({type(err).__name__}: {err}); data files "
            "are extxyz (.xyz/.extxyz), ASE databases (.db) or another format ASE reads"
        ) from None
    return list(images) if isinstance(images, list) else [images]
