"""Training checkpoints on disk: checksummed, written atomically, one good previous one kept.

File layout (``checkpoints/last.pt`` and ``checkpoints/previous.pt``)::

    [payload: torch.save of a dict of tensors and plain values]
    [footer, 48 bytes: b"AEQCKPT1" | payload length (uint64, little-endian) | SHA-256(payload)]

:func:`save_checkpoint` writes ``last.pt.tmp<pid>``, fsyncs it, moves a ``last.pt`` that still
verifies to ``previous.pt`` and renames the new file into place; a kill at any moment leaves at
least one good checkpoint. :func:`resume_checkpoint` verifies ``last.pt`` and falls back to
``previous.pt`` with a warning naming the damaged file; :func:`remove_stale_temporaries` deletes
the ``*.tmp<pid>`` files a killed writer left behind. The payload is read with
``torch.load(weights_only=True)``, only after its checksum matched.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from ..errors import CheckpointError
from .config import CHECKPOINT_FORMAT

log = logging.getLogger(__name__)

MAGIC = b"AEQCKPT1"
FOOTER = struct.Struct("<8sQ32s")  # magic, payload length, SHA-256 digest: 48 bytes
LAST, PREVIOUS = "last.pt", "previous.pt"
_TMP = re.compile(r"\.tmp(\d+)$")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not possible on every platform; the file itself was fsynced
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(
    path: str | os.PathLike, write: Callable[[IO[Any]], object], mode: str = "wb"
) -> Path:
    """Write ``path`` through ``path.tmp<pid>``, fsync it and rename it into place: a reader
    sees the old file or the whole new one, never half a file. A kill during ``write`` leaves
    only the temporary, which :func:`remove_stale_temporaries` deletes later.

    Parameters
    ----------
    path:
        The file to (re)write; missing parent directories are created.
    write:
        Called once with the open temporary file (opened with ``mode``), e.g.
        ``lambda fh: fh.write(text)``.
    mode:
        ``"wb"`` (bytes) or ``"w"`` (text).

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> atomic_write(folder / "note.txt", lambda fh: fh.write("done\\n"), "w").read_text()
    'done\\n'
    >>> sorted(p.name for p in folder.iterdir())  # no temporary left behind
    ['note.txt']
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    with open(tmp, mode) as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` (``.../last.pt``) with its checksum, atomically, keeping the
    file it replaces as ``previous.pt`` when that one verifies."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getbuffer()
    footer = FOOTER.pack(MAGIC, len(payload), hashlib.sha256(payload).digest())
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(payload)
        fh.write(footer)
        fh.flush()
        os.fsync(fh.fileno())
    if path.exists():
        try:
            _verified_payload(path)
        except CheckpointError as err:  # keep the older good one as 'previous'
            log.warning("%s; not kept as %s", err, PREVIOUS)
        else:
            os.replace(path, path.with_name(PREVIOUS))
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _verified_payload(path: Path) -> bytes:
    """The payload bytes of checkpoint ``path`` after checking size, footer and SHA-256."""
    try:
        size = path.stat().st_size
    except OSError as err:
        raise CheckpointError(f"checkpoint {path} cannot be read: {err}") from None
    if size < FOOTER.size:
        raise CheckpointError(
            f"checkpoint {path} is truncated: {size} bytes, less than its {FOOTER.size}-byte footer"
        )
    with open(path, "rb") as fh:
        fh.seek(size - FOOTER.size)
        magic, length, digest = FOOTER.unpack(fh.read(FOOTER.size))
        if magic != MAGIC:
            raise CheckpointError(
                f"checkpoint {path} has no ase_equi checksum footer (truncated, overwritten, "
                "or written by an older version)"
            )
        if length != size - FOOTER.size:
            raise CheckpointError(
                f"checkpoint {path} is truncated or padded: footer says {length} bytes of "
                f"payload, the file holds {size - FOOTER.size}"
            )
        fh.seek(0)
        payload = fh.read(length)
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"checkpoint {path} fails its SHA-256 checksum (damaged)")
    return payload


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The training state in checkpoint ``path`` (written by :func:`save_checkpoint`).

    Raises
    ------
    CheckpointError
        The file is missing, truncated, fails its checksum or is not a training checkpoint.
    """
    path = Path(path)
    payload = _verified_payload(path)
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    # checksum matched, yet unreadable: not ours. torch.load raises many types here (pickle,
    # zip, runtime errors), and each becomes the one CheckpointError that names the file
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"checkpoint {path} cannot be read: {err}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an ase_equi training checkpoint")
    return state


def resume_checkpoint(directory: str | os.PathLike) -> tuple[dict[str, Any], Path] | None:
    """``(state, path)`` of the newest good checkpoint in ``directory`` (``last.pt``, else
    ``previous.pt``, with a warning naming the damaged file), or None when there is none.

    Raises
    ------
    CheckpointError
        Checkpoint files exist but none verifies (each one named, with its problem).
    """
    directory = Path(directory)
    problems = []
    for name in (LAST, PREVIOUS):
        path = directory / name
        if not path.exists():
            continue
        try:
            state = load_checkpoint(path)
        except CheckpointError as err:
            problems.append(str(err))
            log.warning("%s; trying the previous checkpoint", err)
            continue
        if problems:
            log.warning("resuming from the previous checkpoint %s instead", path)
        return state, path
    if problems:
        raise CheckpointError(
            "no usable checkpoint in "
            f"{directory}: {'; '.join(problems)}; remove the damaged files to start afresh"
        )
    return None


def remove_stale_temporaries(*directories: str | os.PathLike) -> list[Path]:
    """Delete ``*.tmp<pid>`` files in ``directories`` left by writers that are no longer
    running (a kill during a write); returns what was removed."""
    removed = []
    for directory in directories:
        directory = Path(directory)
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            match = _TMP.search(path.name)
            if match is None or not path.is_file():
                continue
            pid = int(match.group(1))
            if pid != os.getpid() and _alive(pid):
                continue  # another live process is writing it
            path.unlink(missing_ok=True)
            log.info("removed %s, left by an interrupted write", path)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except OSError:  # e.g. PermissionError: it exists, owned by someone else
        return True
    return True
