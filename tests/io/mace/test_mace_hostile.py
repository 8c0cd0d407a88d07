"""Hostile MACE ``.model`` files: each fails fast, within bounded memory, with a named error.

Every file is generated here, small on disk (the zip bombs are ~3 MB and inflate to 3 GiB).
The cases that could exhaust memory, recurse without end or crash the interpreter run in one
child process with a 3 GiB address-space limit and a timeout (``bounded_run``); each must
raise the expected class, name the problem, and finish in a few seconds.
"""

from __future__ import annotations

import re
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
from bounded_run import run_bounded
from mace_data import model_file

from ase_equi import EquivariantCalculator
from ase_equi.io.mace import load_mace_model
from ase_equi.io.model_file import ModelFileError  # the public class must catch MACE errors

GIB = 1 << 30

# ----------------------------------------------------------------------------------------------
# Protocol-2 pickle opcodes, written by hand


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _text(value: str) -> bytes:
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _put(index: int) -> bytes:
    return b"r" + struct.pack("<I", index)


def _get(index: int) -> bytes:
    return b"j" + struct.pack("<I", index)


def _laughs() -> bytes:
    """Memo slots 0..9: slot k is a list holding slot k-1 ten times (10^9 leaves as a tree)."""
    out = _text("lol") + _put(0) + b"0"
    for level in range(1, 10):
        out += b"(" + _get(level - 1) * 10 + b"l" + _put(level) + b"0"
    return out


def _storage(key: str, numel: int) -> bytes:
    """``persistent_load(('storage', torch.FloatStorage, key, 'cpu', numel))``."""
    return (
        _tuple(
            _text("storage"),
            _global("torch", "FloatStorage"),
            _text(key),
            _text("cpu"),
            _int(numel),
        )
        + b"Q"
    )


def _tensor(storage: bytes, size: int, stride: int) -> bytes:
    """``torch._utils._rebuild_tensor_v2(storage, 0, (size,), (stride,), False, OrderedDict())``."""
    hooks = _global("collections", "OrderedDict") + b")R"
    return (
        _global("torch._utils", "_rebuild_tensor_v2")
        + _tuple(storage, _int(0), _tuple(_int(size)), _tuple(_int(stride)), b"\x89", hooks)
        + b"R"
    )


def _module(parameters: dict[str, bytes]) -> bytes:
    """A ``torch.nn.Linear`` placeholder whose state holds these parameters (then STOP)."""
    params = b"}" + b"".join(_text(k) + v + b"s" for k, v in parameters.items())
    state = (
        b"}"
        + _text("_parameters")
        + params
        + b"s"
        + _text("_buffers")
        + b"}s"
        + _text("_modules")
        + b"}s"
    )
    return b"\x80\x02" + _global("torch.nn.modules.linear", "Linear") + b")\x81" + state + b"b."


# ----------------------------------------------------------------------------------------------
# Zip archives, written by hand (a zip bomb needs a precompressed stream)


def _deflated_zeros(nbytes: int) -> bytes:
    """A raw deflate stream of ``nbytes`` zeros, built from identical fully flushed blocks."""
    chunk = 1 << 20
    assert nbytes % chunk == 0
    zeros = bytes(chunk)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    last = deflate.compress(zeros) + deflate.flush(zlib.Z_FINISH)
    return first + block * (nbytes // chunk - 2) + last


def _write_zip(path: Path, entries: dict[str, bytes | tuple[bytes, int]]) -> Path:
    """Entries: bytes (stored) or ``(raw deflate stream, inflated size)``.

    The CRC of a deflated entry is left 0: a reader must refuse it before inflating.
    """
    local, central = bytearray(), bytearray()
    for name, entry in entries.items():
        if isinstance(entry, tuple):
            data, size, method, crc = entry[0], entry[1], 8, 0
        else:
            data, size, method, crc = entry, len(entry), 0, zlib.crc32(entry)
        raw = name.encode()
        offset = len(local)
        local += (
            struct.pack(
                "<4s5H3L2H",
                b"PK\x03\x04",
                20,
                0,
                method,
                0,
                0x21,
                crc,
                len(data),
                size,
                len(raw),
                0,
            )
            + raw
            + data
        )
        central += (
            struct.pack(
                "<4s6H3L5H2L",
                b"PK\x01\x02",
                20,
                20,
                0,
                method,
                0,
                0x21,
                crc,
                len(data),
                size,
                len(raw),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + raw
        )
    end = struct.pack(
        "<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), len(local), 0
    )
    path.write_bytes(bytes(local + central + end))
    return path


def _archive(path: Path, payload: bytes, extra: dict | None = None) -> Path:
    return _write_zip(
        path, {"archive/data.pkl": payload, "archive/byteorder": b"little", **(extra or {})}
    )


# ----------------------------------------------------------------------------------------------
# Edits of a real MACE file


def _rewrite(source: Path, target: Path, edit) -> Path:
    with zipfile.ZipFile(source) as archive:
        records = {info.filename: archive.read(info) for info in archive.infolist()}
    name = next(n for n in records if n.endswith("/data.pkl"))
    records[name] = edit(records[name])
    with zipfile.ZipFile(target, "w") as archive:
        for key, data in records.items():
            archive.writestr(key, data)
    return target


def _stretch_output_mask(pickle_bytes: bytes) -> bytes:
    """The first output_mask (node embedding, 128 entries) → a stride-0 view of 30,000."""
    start = pickle_bytes.index(b"output_mask")
    pattern = re.compile(rb"QK\x00K\x80\x85(q.)K\x01\x85", re.S)
    match = pattern.search(pickle_bytes, start)
    edited = b"QK\x00M" + struct.pack("<H", 30000) + b"\x85" + match.group(1) + b"K\x00\x85"
    return pickle_bytes[: match.start()] + edited + pickle_bytes[match.end() :]


def _drop_radial_embedding(pickle_bytes: bytes) -> bytes:
    """Rename the child 'radial_embedding' (same length), so the model has none."""
    old = _text("radial_embedding")
    assert old in pickle_bytes
    return pickle_bytes.replace(old, _text("radial_embeddinX"))


# ----------------------------------------------------------------------------------------------
# The cases: file builder, expected class, message fragment


def _cases(tmp: Path) -> dict[str, tuple[Path, str, str, str]]:
    nested = 100_000
    one_mib = 1 << 20
    big = 3 * GIB
    laughs = b"\x80\x02" + _laughs() + _get(9)
    text = "x" * one_mib
    encode = b"\x80\x02" + _global("_codecs", "encode") + _put(0)
    encode += _tuple(_text(text), _text("latin1")) + _put(1) + b"]"
    encode += (_get(0) + _get(1) + b"Ra") * 5000  # the same 1 MiB text encoded 5000 times
    # an empty storage (resizable in torch): BUILD's Tensor.__setstate__ → set_() grew it to 1 GiB
    storage = _storage("0", 0) + _put(0)
    build = (
        _tensor(storage, 0, 1)
        + _tuple(_get(0), _int(0), _tuple(_int(GIB // 4)), _tuple(_int(1)))
        + b"b"
    )
    real = model_file("mp0_small")
    return {
        "storage_bomb": (
            _archive(
                tmp / "storage_bomb.model",
                _module({"w": _tensor(_storage("0", big // 4), 4, 1)}),
                {"archive/data/0": (_deflated_zeros(big), big)},
            ),
            "read_mace_model",
            "ModelFileError",
            "may inflate to",
        ),
        "pickle_bomb": (
            _write_zip(
                tmp / "pickle_bomb.model", {"archive/data.pkl": (_deflated_zeros(big), big)}
            ),
            "read_mace_model",
            "ModelFileError",
            "may inflate to",
        ),
        "billion_laughs": (
            _archive(tmp / "laughs.model", laughs + b"."),
            "read_mace_model",
            "ModelFileError",
            "not a torch module",
        ),
        "self_referential_list": (
            _archive(tmp / "cycle.model", b"\x80\x02]" + _put(0) + _get(0) + b"a."),
            "read_mace_model",
            "ModelFileError",
            "reference cycle",
        ),
        "nested_lists": (
            _archive(
                tmp / "nested.model", b"\x80\x02" + b"]" * nested + b"a" * (nested - 1) + b"."
            ),
            "read_mace_model",
            "ModelFileError",
            "levels deep",
        ),
        "nested_tuple_as_key": (  # hashing it recursed in C and crashed the interpreter
            _archive(tmp / "tuples.model", b"\x80\x02}" + b")" + b"\x85" * 1_000_000 + b"K\x01s."),
            "read_mace_model",
            "ModelFileError",
            "tuples more than 64 deep",
        ),
        "huge_memo_index": (
            _archive(tmp / "memo.model", b"\x80\x02)r\x00\x00\x00\x10."),
            "read_mace_model",
            "ModelFileError",
            "memo index",
        ),
        "shared_text_encoded_many_times": (
            _archive(tmp / "encode.model", encode + b"."),
            "read_mace_model",
            "ModelFileError",
            "_codecs.encode",
        ),
        "build_resizes_tensor": (
            _archive(tmp / "build.model", _module({"w": build}), {"archive/data/0": b""}),
            "read_mace_model",
            "UnsafeModelError",
            "BUILD",
        ),
        "view_beyond_storage": (
            _archive(
                tmp / "beyond.model",
                _module({"w": _tensor(_storage("0", 4), 5, 1)}),
                {"archive/data/0": bytes(16)},
            ),
            "read_mace_model",
            "ModelFileError",
            "beyond its 4 elements",
        ),
        "stride0_output_mask": (
            _rewrite(real, tmp / "stretched.model", _stretch_output_mask),
            "load_mace_model",
            "ModelFileError",
            "channels",
        ),
        "missing_radial_embedding": (
            _rewrite(real, tmp / "no_radial.model", _drop_radial_embedding),
            "load_mace_model",
            "ModelFileError",
            "no submodule 'radial_embedding'",
        ),
    }


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    cases = _cases(tmp_path_factory.mktemp("hostile"))
    setup = """
    from ase_equi.io.mace import read_mace_model
    from ase_equi.io.mace import load_mace_model
    """
    expressions = {name: f"{call}({str(path)!r})" for name, (path, call, *_) in cases.items()}
    records = run_bounded(expressions, setup=setup, limit_gib=3.0, timeout=180)
    return cases, records


CASES = [
    "storage_bomb",
    "pickle_bomb",
    "billion_laughs",
    "self_referential_list",
    "nested_lists",
    "nested_tuple_as_key",
    "huge_memo_index",
    "shared_text_encoded_many_times",
    "build_resizes_tensor",
    "view_beyond_storage",
    "stride0_output_mask",
    "missing_radial_embedding",
]


@pytest.mark.parametrize("name", CASES)
def test_hostile_file_fails_fast_with_a_named_error(hostile, name):
    cases, records = hostile
    path, _call, expected, fragment = cases[name]
    record = records[name]
    assert path.stat().st_size < 10 << 20  # small on disk
    assert record["error"] == expected, record
    assert "ModelFileError" in record["bases"]
    assert fragment in record["message"], record["message"]
    assert path.name in record["message"], record["message"]
    assert record["seconds"] < 10, record  # "a few seconds", with slack for a loaded machine
    assert record["peak_rss_mib"] < 1536, record


def test_shared_references_stay_cheap(tmp_path):
    """Billion laughs inside a module attribute: read once, shared, in well under a second."""
    from ase_equi.io.mace import read_mace_model

    payload = _module({})[:-2] + _text("lol") + _laughs() + _get(9) + b"sb."
    root = read_mace_model(_archive(tmp_path / "laughs_module.model", payload))
    outer = root.attributes["lol"]
    assert len(outer) == 10 and outer[0] is outer[9]  # a graph, not 10^9 copies


def test_public_error_class_catches_a_truncated_mace_file(tmp_path):
    """One hierarchy: ase_equi.io.model_file.ModelFileError catches the MACE reader's errors."""
    path = tmp_path / "truncated.model"
    data = model_file("mace_nonresidual").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated.model"):
        load_mace_model(path)
    with pytest.raises(ModelFileError, match="truncated.model"):
        EquivariantCalculator(str(path))
