"""Resource bounds for reading MACE ``.model`` files: bytes, pickle work, nesting.

A hostile ``.model`` file must fail with a :class:`~ase_equi.errors.ModelFileError` that names
the problem, within seconds and within memory proportional to what the file really holds. The
bounds, each checked *before* the work it limits:

Decompressed bytes
    An archive may inflate to at most ``min(MAX_TOTAL_BYTES, MAX_INFLATION × on-disk size +
    BUDGET_FLOOR)`` bytes (4 GiB; 32 × the file + 16 MiB). torch writes its archives
    uncompressed, so real files use about 1 ×; deflating a real MACE file gains 2–4 ×. The sum
    of the sizes that the zip central directory declares for its entries is checked against
    this budget before anything is decompressed; TorchScript archives nested in e3nn's
    ``__codegen__`` draw on the same budget. Entries are then read by streaming in 1 MiB chunks
    into a buffer of the declared size, failing as soon as an entry holds more or fewer bytes
    than declared.
Storages and tensors
    The bytes the pickle declares for a storage (``numel × itemsize``) must equal the zip
    entry's declared size (checked before reading it). A tensor view must lie inside its
    storage (``offset + Σ (size_i − 1) stride_i < numel``), with non-negative strides and at
    most ``MAX_TENSOR_DIMS`` dimensions; the logical bytes of all tensor views (a stride-0
    view counts every repeated element) share the byte budget above.
Pickle work
    Before unpickling, a scan of the opcodes refuses memo indices beyond the number of opcodes
    read so far (a huge index makes the unpickler allocate a table of that size) and tuples
    nested more than ``MAX_TUPLE_DEPTH`` deep (hashing them recurses in C and can crash the
    interpreter). The callables the unpickler may call (``set``, ``OrderedDict``,
    ``_codecs.encode``, placeholder classes, ...) charge the number of items they copy to a
    work budget of ``WORK_PER_BYTE × pickle size + WORK_FLOOR`` items, so that one shared
    container passed to thousands of calls cannot multiply its cost.
Object graph
    The placeholder tree is converted as a graph: each object once (shared references stay
    shared, so a "billion laughs" of memo references costs what its bytes cost), reference
    cycles are refused, nesting is limited to ``MAX_DEPTH``, and the module tree, with shared
    submodules counted at every place they are attached (as ``state_dict`` lists them), to
    ``MAX_EXPANDED`` modules and tensors.

Examples
--------
>>> budget = ByteBudget(limit=100, label="x.model")
>>> budget.charge(60, "entries")
>>> budget.charge(60, "entries")
Traceback (most recent call last):
...
ase_equi.errors.ModelFileError: x.model: entries need 120 bytes in all, more than the 100 \
bytes this file may inflate to (32 x its size + 16 MiB, at most 4 GiB)
"""

from __future__ import annotations

import os
import pickletools
import reprlib
import zipfile
from dataclasses import dataclass

from ...errors import ModelFileError

MAX_INFLATION = 32
BUDGET_FLOOR = 16 << 20  # bytes
MAX_TOTAL_BYTES = 4 << 30  # bytes
MAX_TENSOR_DIMS = 16
MAX_TUPLE_DEPTH = 64
MAX_DEPTH = 100
MAX_EXPANDED = 1_000_000
WORK_PER_BYTE = 4
WORK_FLOOR = 100_000
_CHUNK = 1 << 20

_short = reprlib.Repr()
_short.maxlevel, _short.maxstring, _short.maxother = 3, 60, 60


def short_repr(value: object) -> str:
    """``repr`` cut to a few levels and characters (safe on deeply nested or huge values)."""
    return _short.repr(value)


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n} bytes"


@dataclass
class ByteBudget:
    """Bytes one file may inflate to (zip entries and logical tensor sizes), with a running count.

    Attributes
    ----------
    limit : int
        Bytes allowed in all.
    label : str
        The file, for messages.
    used : int
        Bytes charged so far.
    """

    limit: int
    label: str
    used: int = 0

    @classmethod
    def for_file(cls, path: str | os.PathLike) -> ByteBudget:
        """The budget of a file of this on-disk size (see the module docstring)."""
        size = os.path.getsize(path)
        return cls(min(MAX_TOTAL_BYTES, MAX_INFLATION * size + BUDGET_FLOOR), os.fspath(path))

    def charge(self, nbytes: int, what: str) -> None:
        """Count ``nbytes`` more, or raise :class:`ModelFileError` naming ``what``."""
        self.used += nbytes
        if self.used > self.limit:
            raise ModelFileError(
                f"{self.label}: {what} need {_size(self.used)} in all, more than the "
                f"{_size(self.limit)} this file may inflate to ({MAX_INFLATION} x its size + "
                f"{BUDGET_FLOOR >> 20} MiB, at most {MAX_TOTAL_BYTES >> 30} GiB)"
            )


@dataclass
class WorkBudget:
    """Items the unpickler's callables may copy, proportional to the pickle's size."""

    limit: int
    label: str
    used: int = 0

    @classmethod
    def for_pickle(cls, nbytes: int, label: str) -> WorkBudget:
        return cls(WORK_PER_BYTE * nbytes + WORK_FLOOR, label)

    def charge(self, items: int, what: str) -> None:
        self.used += items
        if self.used > self.limit:
            raise ModelFileError(
                f"{self.label}: the pickle makes its callables copy more than {self.limit} items "
                f"({what}); a small pickle that does this much work is hostile"
            )


def check_archive(archive: zipfile.ZipFile, budget: ByteBudget, label: str) -> None:
    """Charge every entry's declared size to ``budget`` before anything is decompressed."""
    total = 0
    for info in archive.infolist():
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise ModelFileError(
                f"{label}: zip entry {info.filename} is stored uncompressed but declares "
                f"{info.file_size} bytes of content in {info.compress_size} bytes"
            )
        total += info.file_size
    budget.charge(total, f"the zip entries of {label} (declared sizes)")


def read_entry(archive: zipfile.ZipFile, name: str, label: str) -> bytearray:
    """One zip entry, streamed into a buffer of its declared size (never more)."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise ModelFileError(f"{label}: the archive has no entry {name}") from None
    buffer = bytearray(info.file_size)
    filled = 0
    with archive.open(info) as stream:
        while filled < len(buffer):
            chunk = stream.read(min(_CHUNK, len(buffer) - filled))
            if not chunk:
                break
            buffer[filled : filled + len(chunk)] = chunk
            filled += len(chunk)
        extra = stream.read(1)
    if filled != len(buffer) or extra:
        found = "more" if extra else str(filled)
        raise ModelFileError(
            f"{label}: zip entry {name} declares {info.file_size} bytes but holds {found}; "
            "the file is truncated or corrupt"
        )
    return buffer


_TUPLE_OPS = frozenset({"EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3"})
_KEEP_BOTTOM = frozenset({"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"})
_PUT = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_GET = frozenset({"GET", "BINGET", "LONG_BINGET"})


def scan_pickle(data: bytes | bytearray, label: str) -> int:
    """Check memo indices and tuple nesting of a pickle without running it; return the opcodes.

    Each stack item carries an upper bound of its tuple nesting (tuples are immutable, so the
    bound is fixed when the tuple is built). ``REDUCE`` results inherit the nesting of their
    arguments' items (TorchScript's type tags return an argument unchanged).
    """
    stack: list[int] = []
    marks: list[int] = []
    memo: dict[int, int] = {}
    count = 0
    try:
        for opcode, arg, _pos in pickletools.genops(bytes(data)):
            count += 1
            name = opcode.name
            if name == "MARK":
                marks.append(len(stack))
                continue
            if name in _PUT or name == "MEMOIZE":
                index = len(memo) if name == "MEMOIZE" else arg
                if not isinstance(index, int) or index > count or not stack:
                    raise ModelFileError(f"{label}: pickle memo index {index} out of range")
                memo[index] = stack[-1]
                continue
            if name in _GET:
                if arg not in memo:
                    raise ModelFileError(f"{label}: pickle reads memo entry {arg}, never stored")
                stack.append(memo[arg])
                continue
            if name == "DUP":
                stack.append(stack[-1] if stack else 0)
                continue
            if name == "POP" and marks and marks[-1] == len(stack):
                marks.pop()
                continue
            before = opcode.stack_before
            if pickletools.markobject in before:
                if not marks:
                    raise ModelFileError(f"{label}: pickle opcode {name} without a MARK")
                start = marks.pop()
                popped = stack[start:]
                del stack[start:]
                below = before.index(pickletools.markobject)
            else:
                popped, below = [], len(before)
            if below > len(stack):
                raise ModelFileError(f"{label}: pickle stack underflow at opcode {name}")
            bottom = stack[len(stack) - below :]
            del stack[len(stack) - below :]
            if name in _TUPLE_OPS:
                depth = 1 + max(popped + bottom, default=0)
                if depth > MAX_TUPLE_DEPTH:
                    raise ModelFileError(
                        f"{label}: the pickle nests tuples more than {MAX_TUPLE_DEPTH} deep"
                    )
            elif name in _KEEP_BOTTOM:
                depth = bottom[0] if bottom else 0
            elif name == "REDUCE":
                depth = max(bottom[-1] - 1, 0) if bottom else 0
            else:
                depth = 0
            stack.extend([depth] * len(opcode.stack_after))
    except ValueError as error:  # pickletools: bad opcode, truncated argument, ...
        if isinstance(error, ModelFileError):
            raise
        raise ModelFileError(f"{label}: not a valid pickle ({error})") from None
    return count
