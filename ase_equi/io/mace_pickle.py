"""Read MACE ``.model`` files (whole pickled torch modules) without executing pickled code.

A ``.model`` file is what ``torch.save(model, path)`` writes: a zip archive holding

- ``<root>/data.pkl``: the pickled module tree (protocol 2);
- ``<root>/data/<key>``: one raw storage blob per tensor storage, referenced from the pickle
  through ``persistent_load`` ids ``('storage', <storage type>, key, location, numel)``;
- ``<root>/byteorder`` (``little`` or ``big``, absent in old files = little) and
  ``<root>/version``.

Unpickling such a file with torch.load and safe loading switched off imports mace and runs whatever
callables the pickle names, so a malicious file can run arbitrary code. This reader instead
resolves every global the pickle names through a fixed table:

- a few safe callables get our own implementations: tensor and parameter rebuilding
  (``torch._utils._rebuild_tensor_v2``, ``_rebuild_parameter``), storage types
  (``torch.DoubleStorage``, ...), torch dtypes, ``collections.OrderedDict``, ``set``,
  ``frozenset`` and ``_codecs.encode`` (protocol 2 stores ``bytes`` as latin-1 text);
- classes under ``mace.``, ``e3nn.``, ``torch.nn.modules.`` and ``torch.fx.`` become inert
  placeholders that only record their arguments and state: nothing is imported;
- ``torch.fx.graph_module.reduce_graph_module`` (opt_einsum_fx contractions inside MACE's
  symmetric contraction) is recorded as a placeholder module keeping the generated source as
  text, never compiled;
- activation functions that MACE stores as attributes (``torch.nn.functional.silu``, ...)
  become :class:`GlobalRef` names, which refuse to be called;
- anything else raises :class:`UnsafeModelError` naming the global.

e3nn irreps (``Irreps``, ``_MulIr``, ``Irrep``) are turned into their e3nn strings, for example
``"128x0e+128x1o"``.

e3nn modules built by code generation (``Linear``, ``TensorProduct``) pickle their compiled
parts as ``__codegen__``: a dict of TorchScript archives (zip files as ``bytes``). On loading,
e3nn re-attaches each one as a submodule, so their buffers (Wigner-3j blocks ``_w3j_*``) are
part of ``model.state_dict()``. This reader opens those archives with the same restricted
unpickler (plus TorchScript's own ``__torch__.*`` classes and type tags), takes the parameter
and buffer names from the ``__parameters__`` / ``__buffers__`` lines of the archived class
definitions (read as text, never compiled) and attaches the results as children, so that
:func:`state_dict` gives the same keys as ``model.state_dict()``.

Examples
--------
>>> import lzma, tempfile
>>> from pathlib import Path
>>> packed = Path(__file__).parents[2] / "tests" / "data" / "mace" / "mp0_medium.model.xz"
>>> path = Path(tempfile.mkdtemp()) / "mp0_medium.model"
>>> path.write_bytes(lzma.decompress(packed.read_bytes())) > 0
True
>>> root = read_mace_model(path)
>>> root.class_path
'mace.modules.models.ScaleShiftMACE'
>>> root.children["interactions"].children["0"].attributes["hidden_irreps"]
'128x0e+128x1o'
>>> state_dict(root)["r_max"].item()
6.0
"""

from __future__ import annotations

import ast
import collections
import functools
import io
import math
import os
import pickle
import re
import zipfile
import zlib
from typing import Any

import torch

from .pickle_bounds import (
    MAX_TENSOR_DIMS,
    ByteBudget,
    WorkBudget,
    check_archive,
    read_entry,
    scan_pickle,
    short_repr,
)
from .pickled_objects import (
    GlobalRef,
    ModelFileError,
    PickledModule,
    PickledObject,
    UnsafeModelError,
    _Placeholder,
    _Storage,
    _StorageType,
    _TensorRecord,
)
from .pickled_tree import _Converter, _is_bookkeeping, _tensors

__all__ = [
    "GlobalRef",
    "ModelFileError",
    "PickledModule",
    "PickledObject",
    "UnsafeModelError",
    "read_mace_model",
    "state_dict",
]


# Class namespaces whose members become inert placeholders (never imported).
_PLACEHOLDER_PREFIXES = ("mace.", "e3nn.", "torch.nn.modules.", "torch.fx.")
# Activation functions stored as attributes; the importer maps these names to its own.
_ACTIVATIONS = frozenset(
    {
        "torch.nn.functional.silu",
        "torch.tanh",
        "torch.abs",
        "torch.sigmoid",
        "torch.nn.functional.tanh",
    }
)
_GRAPH_MODULE = "torch.fx.graph_module.GraphModule"
MAX_SCRIPT_MODULES = 10_000  # modules in one TorchScript archive (e3nn's hold one or two)
_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


def _strip_type_tag(value: Any, *type_tag: Any) -> Any:
    """TorchScript's ``restore_type_tag`` / ``build_*list``: return the value unchanged."""
    return value


_TORCHSCRIPT_TAGS = frozenset(
    f"torch.jit._pickle.{name}"
    for name in ("restore_type_tag", "build_intlist", "build_doublelist", "build_boollist")
)


def _encode(text: Any, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` restricted to what protocol 2 uses for ``bytes``: latin-1 text."""
    if (
        not isinstance(text, str)
        or not isinstance(encoding, str)
        or encoding.replace("-", "").lower() != "latin1"
    ):
        raise UnsafeModelError(
            f"_codecs.encode is only allowed on str with latin1, got {short_repr(encoding)}"
        )
    return text.encode("latin1")


def _length(items: Any, what: str) -> int:
    if not isinstance(items, (list, tuple, dict, set, frozenset, str, bytes)):
        raise ModelFileError(f"{what} called on a {type(items).__name__}")
    return len(items)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves globals only through the allow-list of this module.

    ``torchscript=True`` is for the TorchScript archives nested in e3nn's ``__codegen__``: it
    also accepts TorchScript's ``__torch__.*`` classes (as placeholders) and type tags.
    """

    def __init__(
        self,
        archive: zipfile.ZipFile,
        label: str,
        budget: ByteBudget,
        *,
        torchscript: bool = False,
    ) -> None:
        pickles = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise ModelFileError(f"{label}: expected one <root>/data.pkl in the archive")
        check_archive(archive, budget, label)  # declared sizes, before decompressing anything
        data = read_entry(archive, pickles[0], label)
        scan_pickle(data, label)
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self.root = pickles[0].split("/", 1)[0]
        self._archive = archive
        self._path = label
        self._budget = budget
        self._work = WorkBudget.for_pickle(len(data), label)
        self._torchscript = torchscript
        self._big_endian = self._read_byteorder() == "big"
        self._storages: dict[str, _Storage] = {}
        self._classes: dict[str, type] = {}

    def _read_byteorder(self) -> str:
        name = f"{self.root}/byteorder"
        if name not in self._archive.namelist():
            return "little"
        order = bytes(read_entry(self._archive, name, self._path)).decode("ascii").strip()
        if order not in ("little", "big"):
            raise ModelFileError(f"{self._path}: unknown byte order {short_repr(order)} in {name}")
        return order

    # -- globals ---------------------------------------------------------------------------
    def find_class(self, module: str, name: str) -> Any:
        path = f"{module}.{name}"
        if module in ("builtins", "__builtin__") and name in ("set", "frozenset"):
            return self._counted({"set": set, "frozenset": frozenset}[name])
        if path == "collections.OrderedDict":
            return self._counted(collections.OrderedDict)
        if path == "_codecs.encode":
            return self._encode
        if path == "torch._utils._rebuild_tensor_v2":
            return self._rebuild_tensor
        if path == "torch._utils._rebuild_parameter":
            return self._rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if path in _ACTIVATIONS:
            return GlobalRef(path)
        if module == "torch" and isinstance(vars(torch).get(name), torch.dtype):
            return vars(torch)[name]  # vars(): no lazy torch.__getattr__ imports
        if path == "torch.fx.graph_module.reduce_graph_module":
            return self._reduce_graph_module
        if path.startswith(_PLACEHOLDER_PREFIXES):
            return self._placeholder_class(path)
        if self._torchscript and path.startswith("__torch__."):
            return self._placeholder_class(path)
        if self._torchscript and path in _TORCHSCRIPT_TAGS:
            return _strip_type_tag
        raise UnsafeModelError(
            f"refusing to load {self._path}: the pickle references {path}, which is not on the "
            "allow-list of safe callables or module classes (unpickling it could run code)"
        )

    def _counted(self, kind: type) -> Any:
        """``kind(items)``, charging the items it copies to the work budget."""

        def build(items: Any = ()) -> Any:
            self._work.charge(_length(items, kind.__name__), f"{kind.__name__}(...)")
            return kind(items)

        return build

    def _encode(self, text: Any, encoding: str = "utf-8") -> bytes:
        self._work.charge(_length(text, "_codecs.encode"), "_codecs.encode(...)")
        return _encode(text, encoding)

    def _placeholder_class(self, path: str) -> type:
        if path not in self._classes:
            name = path.rsplit(".", 1)[-1]
            attributes = {"class_path": path, "_work": self._work}
            self._classes[path] = type(name, (_Placeholder,), attributes)
        return self._classes[path]

    def _reduce_graph_module(self, body: dict, import_block: str) -> _Placeholder:
        """Stand-in for a ``torch.fx.GraphModule``: keep its generated code as text only."""
        if not isinstance(body, dict) or not isinstance(import_block, str):
            raise ModelFileError(f"{self._path}: malformed torch.fx GraphModule record")
        self._work.charge(len(body), "torch.fx GraphModule record")
        module = self._placeholder_class(_GRAPH_MODULE)()
        module.__setstate__({**body, "_import_block": import_block})
        return module

    # -- tensors ---------------------------------------------------------------------------
    def persistent_load(self, pid: Any) -> _Storage:
        if not (
            isinstance(pid, tuple)
            and len(pid) == 5
            and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)
            and isinstance(pid[2], str)
            and isinstance(pid[4], int)
        ):
            raise ModelFileError(f"{self._path}: unexpected persistent id {short_repr(pid)}")
        _, storage_type, key, _location, numel = pid
        if key not in self._storages:
            data = self._read_storage(key, storage_type.dtype, numel)
            self._storages[key] = _Storage(key, data)
        return self._storages[key]

    def _read_storage(self, key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        """One storage blob as a 1-D tensor ``[numel]`` of ``dtype``, in native byte order.

        The size the pickle declares (``numel × itemsize``) must equal the size the zip entry
        declares, checked before the entry is decompressed.
        """
        itemsize = torch.empty((), dtype=dtype).element_size()
        name = f"{self.root}/data/{key}"
        try:
            declared = self._archive.getinfo(name).file_size
        except KeyError:
            raise ModelFileError(f"{self._path}: storage record {name} is missing") from None
        if numel < 0 or declared != numel * itemsize:
            raise ModelFileError(
                f"{self._path}: storage {name} holds {declared} bytes, expected "
                f"{numel * itemsize} ({numel} x {dtype}); the file is truncated or corrupt"
            )
        blob = read_entry(self._archive, name, self._path)
        if numel == 0:
            return torch.empty(0, dtype=dtype)
        raw = torch.frombuffer(blob, dtype=torch.uint8)
        if self._big_endian and itemsize > 1:
            raw = raw.view(numel, itemsize).flip(1).reshape(-1).clone()
        return raw.view(dtype)

    def _rebuild_tensor(
        self,
        storage: Any,
        storage_offset: int,
        size: tuple,
        stride: tuple,
        requires_grad: bool = False,
        backward_hooks: Any = None,
        metadata: Any = None,
    ) -> _TensorRecord:
        """A view of ``storage``, checked to lie inside it; its logical bytes are charged."""
        if not isinstance(storage, _Storage):
            raise ModelFileError(f"{self._path}: tensor record without a storage")
        if backward_hooks:
            raise UnsafeModelError(f"{self._path}: a tensor record carries backward hooks")
        size, stride = _int_tuple(size), _int_tuple(stride)
        offset = storage_offset
        if (
            size is None
            or stride is None
            or len(size) != len(stride)
            or len(size) > MAX_TENSOR_DIMS
            or type(offset) is not int
            or offset < 0
            or min(size + stride, default=0) < 0
        ):
            raise ModelFileError(
                f"{self._path}: malformed tensor record of storage {storage.key}: size "
                f"{short_repr(size)}, stride {short_repr(stride)}, offset {short_repr(offset)} "
                f"(at most {MAX_TENSOR_DIMS} dimensions, sizes, strides and offset >= 0)"
            )
        numel = math.prod(size)
        available = storage.data.numel()
        last = offset + sum((n - 1) * step for n, step in zip(size, stride, strict=True))
        if (numel > 0 and last >= available) or offset > available:
            raise ModelFileError(
                f"{self._path}: tensor view of storage {storage.key} (size {list(size)}, "
                f"stride {list(stride)}, offset {offset}) reaches beyond its {available} elements"
            )
        self._budget.charge(numel * storage.data.element_size(), "tensor views (logical sizes)")
        return _TensorRecord(storage, offset, size, stride)

    def _rebuild_parameter(
        self, data: Any, requires_grad: bool, backward_hooks: Any
    ) -> _TensorRecord:
        if not isinstance(data, _TensorRecord):
            raise ModelFileError(f"{self._path}: parameter record without tensor data")
        if backward_hooks:
            raise UnsafeModelError(f"{self._path}: a parameter record carries backward hooks")
        return data


def _int_tuple(value: Any) -> tuple[int, ...] | None:
    """``value`` as a tuple of plain ints, or None if it is not one."""
    if not isinstance(value, (tuple, list)) or any(type(v) is not int for v in value):
        return None
    return tuple(value)


# ----------------------------------------------------------------------------------------------
# TorchScript archives nested in e3nn's __codegen__


def _script_members(archive: zipfile.ZipFile, root: str, class_path: str) -> dict[str, list]:
    """``__parameters__`` / ``__buffers__`` of a TorchScript class, read from its source text."""
    module_path, class_name = class_path.rsplit(".", 1)
    source_name = f"{root}/code/{module_path.replace('.', '/')}.py"
    if source_name not in archive.namelist():
        raise ModelFileError(f"TorchScript source {source_name} is missing")
    source = bytes(read_entry(archive, source_name, source_name)).decode("utf-8")
    block = re.search(rf"^class {re.escape(class_name)}\(Module\):\n((?:  .*\n)*)", source, re.M)
    members = {"__parameters__": [], "__buffers__": []}
    for key in members:
        line = re.search(rf"^  {key} = (\[.*\])$", block.group(1) if block else "", re.M)
        if line is None:
            raise ModelFileError(f"no {key} line for class {class_name} in {source_name}")
        members[key] = ast.literal_eval(line.group(1))
    return members


def _read_torchscript(blob: Any, label: str, *, budget: ByteBudget) -> PickledModule:
    """An e3nn ``__codegen__`` TorchScript archive (``bytes``) as an inert module.

    Its entries draw on the byte budget of the file that holds it.
    """
    if not isinstance(blob, bytes):
        raise ModelFileError(f"{label}: __codegen__ entry is {type(blob).__name__}, not bytes")
    read_script = functools.partial(_read_torchscript, budget=budget)
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            unpickler = _RestrictedUnpickler(archive, label, budget, torchscript=True)
            tree = unpickler.load()
            convert = _Converter(label, read_script)
            return _script_module(tree, archive, unpickler.root, convert, {})
    except zipfile.BadZipFile as error:
        raise ModelFileError(f"{label}: unreadable TorchScript archive ({error})") from None


def _script_module(
    value: Any, archive: zipfile.ZipFile, root: str, convert: _Converter, seen: dict[Any, Any]
) -> PickledModule:
    """One ``__torch__`` module; ``seen`` holds the ids of modules read and each class's members."""
    if not isinstance(value, _Placeholder) or not isinstance(value._state, dict):
        raise ModelFileError(f"TorchScript archive holds {type(value).__name__}, not a module")
    if id(value) in seen:
        raise ModelFileError(f"TorchScript module {value.class_path} is attached twice")
    if len(seen) >= MAX_SCRIPT_MODULES:
        raise ModelFileError(f"TorchScript archive holds more than {MAX_SCRIPT_MODULES} modules")
    seen[id(value)] = None
    if value.class_path not in seen:  # each class's source is read once
        seen[value.class_path] = _script_members(archive, root, value.class_path)
    members = seen[value.class_path]
    module = PickledModule(value.class_path, {}, {}, {}, {})
    for key, item in value._state.items():
        if key in members["__parameters__"]:
            module.parameters[key] = item
        elif key in members["__buffers__"]:
            module.buffers[key] = item
        elif isinstance(item, _Placeholder) and item.class_path.startswith("__torch__."):
            module.children[key] = _script_module(item, archive, root, convert, seen)
        elif not _is_bookkeeping(key):
            module.attributes[key] = convert(item)
    module.parameters = _tensors(module.parameters, value.class_path)
    module.buffers = _tensors(module.buffers, value.class_path)
    return module


# ----------------------------------------------------------------------------------------------
# Public functions


def read_mace_model(path: str | os.PathLike) -> PickledModule:
    """Read a MACE ``.model`` file into inert data, executing no pickled code.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by ``torch.save(model, path)`` (torch zip format).

    Returns
    -------
    PickledModule
        The root module (e.g. ``mace.modules.models.ScaleShiftMACE``) with its submodules.

    Raises
    ------
    UnsafeModelError
        The pickle names a callable outside the allow-list (the message names it).
    ModelFileError
        The file is missing, not a torch zip archive, truncated or corrupt.
    """
    label = os.fspath(path)
    try:
        budget = ByteBudget.for_file(label)
        with zipfile.ZipFile(label) as archive:
            tree = _RestrictedUnpickler(archive, label, budget).load()
            read_script = functools.partial(_read_torchscript, budget=budget)
            return _Converter(label, read_script)._module(tree, "the pickled object")
    except ModelFileError as error:  # and its subclasses: the same class, with the file named
        message = str(error)
        raise type(error)(message if label in message else f"{label}: {message}") from None
    except RecursionError:
        raise ModelFileError(
            f"{label}: the pickle nests objects too deeply to read (Python's recursion limit)"
        ) from None
    except FileNotFoundError:
        raise ModelFileError(f"{label}: no such file") from None
    except zipfile.BadZipFile as error:
        raise ModelFileError(
            f"{label}: not a readable torch zip archive ({error}); the file may be truncated or "
            "corrupt, or written by torch < 1.6 in the legacy format"
        ) from None
    except (
        pickle.UnpicklingError,
        EOFError,
        KeyError,
        IndexError,
        AttributeError,
        ValueError,
        TypeError,
        RuntimeError,
        NotImplementedError,
        OSError,
        zlib.error,
    ) as error:
        raise ModelFileError(
            f"{label}: cannot read the pickled model ({type(error).__name__}: "
            f"{short_repr(str(error))})"
        ) from None


def state_dict(root: PickledModule) -> dict[str, torch.Tensor]:
    """Flatten parameters and persistent buffers as ``torch.nn.Module.state_dict()`` does.

    Keys are dotted paths (``"interactions.0.linear.weight"``); within each module the
    parameters come first, then the buffers, then the children, in registration order.
    """
    out: dict[str, torch.Tensor] = {}

    def visit(module: PickledModule, prefix: str) -> None:
        for name, tensor in module.parameters.items():
            out[prefix + name] = tensor
        for name, tensor in module.buffers.items():
            if name not in module.non_persistent_buffers:
                out[prefix + name] = tensor
        for name, child in module.children.items():
            visit(child, f"{prefix}{name}.")

    visit(root, "")
    return out
