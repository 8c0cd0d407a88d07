"""The restricted unpickler: every global a MACE pickle names goes through a fixed table.

Safe callables (tensor and parameter rebuilding, storage types, torch dtypes,
``collections.OrderedDict``, ``set``, ``frozenset``, latin-1 ``_codecs.encode``) get our own
implementations; classes under ``mace.``, ``e3nn.``, ``torch.nn.modules.`` and ``torch.fx.``
become inert :class:`~ase_equi.io.mace.objects.Placeholder` subclasses; activation functions
become :class:`~ase_equi.io.mace.objects.GlobalRef` names; anything else raises
:class:`~ase_equi.errors.UnsafeModelError` naming the global. Every read is bounded by the
budgets of :mod:`ase_equi.io.mace.bounds`. :mod:`ase_equi.io.mace.reader` describes the file
layout.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import zipfile
from typing import Any

import torch

from .bounds import (
    MAX_TENSOR_DIMS,
    ByteBudget,
    WorkBudget,
    check_archive,
    read_entry,
    scan_pickle,
    short_repr,
)
from .objects import (
    GlobalRef,
    ModelFileError,
    Placeholder,
    Storage,
    StorageType,
    TensorRecord,
    UnsafeModelError,
)

__all__ = ["RestrictedUnpickler"]

# Class namespaces whose members become inert placeholders (never imported).
_PLACEHOLDER_PREFIXES = ("mace.", "e3nn.", "torch.nn.modules.", "torch.fx.")
# Activation functions stored as attributes; the importer maps these names to its own.
_ACTIVATIONS = frozenset(
    {
        "torch.nn.functional.silu",
        "torch.tanh",
        "torch.abs",
        "torch.sigmoid",
        "torch.nn.functional.sigmoid",  # the gates of MACE-MH's non-linear interaction block
        "torch.nn.functional.tanh",
    }
)
_GRAPH_MODULE = "torch.fx.graph_module.GraphModule"
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


class RestrictedUnpickler(pickle.Unpickler):
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
        self._storages: dict[str, Storage] = {}
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
            return StorageType(_STORAGE_DTYPES[name])
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
            self._classes[path] = type(name, (Placeholder,), attributes)
        return self._classes[path]

    def _reduce_graph_module(self, body: dict, import_block: str) -> Placeholder:
        """Stand-in for a ``torch.fx.GraphModule``: keep its generated code as text only."""
        if not isinstance(body, dict) or not isinstance(import_block, str):
            raise ModelFileError(f"{self._path}: malformed torch.fx GraphModule record")
        self._work.charge(len(body), "torch.fx GraphModule record")
        module = self._placeholder_class(_GRAPH_MODULE)()
        module.__setstate__({**body, "_import_block": import_block})
        return module

    # -- tensors ---------------------------------------------------------------------------
    def persistent_load(self, pid: Any) -> Storage:
        if not (
            isinstance(pid, tuple)
            and len(pid) == 5
            and pid[0] == "storage"
            and isinstance(pid[1], StorageType)
            and isinstance(pid[2], str)
            and isinstance(pid[4], int)
        ):
            raise ModelFileError(f"{self._path}: unexpected persistent id {short_repr(pid)}")
        _, storage_type, key, _location, numel = pid
        if key not in self._storages:
            data = self._read_storage(key, storage_type.dtype, numel)
            self._storages[key] = Storage(key, data)
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
        size: Any,  # as the pickle gives them: checked below
        stride: Any,
        requires_grad: bool = False,
        backward_hooks: Any = None,
        metadata: Any = None,
    ) -> TensorRecord:
        """A view of ``storage``, checked to lie inside it; its logical bytes are charged."""
        if not isinstance(storage, Storage):
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
        return TensorRecord(storage, offset, size, stride)

    def _rebuild_parameter(
        self, data: Any, requires_grad: bool, backward_hooks: Any
    ) -> TensorRecord:
        if not isinstance(data, TensorRecord):
            raise ModelFileError(f"{self._path}: parameter record without tensor data")
        if backward_hooks:
            raise UnsafeModelError(f"{self._path}: a parameter record carries backward hooks")
        return data


def _int_tuple(value: Any) -> tuple[int, ...] | None:
    """``value`` as a tuple of plain ints, or None if it is not one."""
    if not isinstance(value, (tuple, list)) or any(type(v) is not int for v in value):
        return None
    return tuple(value)
