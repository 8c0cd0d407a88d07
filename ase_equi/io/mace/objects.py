"""Inert stand-ins for what a MACE pickle contains: nothing here can run pickled code.

:class:`PickledModule` is one ``torch.nn.Module`` as plain data, :class:`GlobalRef` a function
or class kept as its dotted name, :class:`PickledObject` any other object; ``Placeholder`` is
the base of the classes the restricted unpickler creates instead of importing anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ...errors import ModelFileError, UnsafeModelError

__all__ = ["GlobalRef", "ModelFileError", "PickledModule", "PickledObject", "UnsafeModelError"]


@dataclass
class PickledModule:
    """One ``torch.nn.Module`` of the pickled tree, as inert data.

    Attributes
    ----------
    class_path : str
        Dotted class name, e.g. ``"mace.modules.models.ScaleShiftMACE"``.
    attributes : dict[str, Any]
        Plain attributes from the module's ``__dict__`` (``torch.nn.Module`` bookkeeping such
        as hooks removed): numbers, strings, lists, dicts, irreps as e3nn strings, bytes,
        :class:`GlobalRef` for functions, :class:`PickledObject` for other objects.
    parameters, buffers : dict[str, torch.Tensor]
        This module's own ``_parameters`` and ``_buffers`` (entries registered as ``None`` are
        left out).
    children : dict[str, PickledModule]
        The submodules (``_modules``), in registration order.
    non_persistent_buffers : frozenset[str]
        Buffers that ``state_dict()`` leaves out.
    """

    class_path: str
    attributes: dict[str, Any]
    parameters: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    children: dict[str, PickledModule]
    non_persistent_buffers: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class GlobalRef:
    """A function or class named by the pickle, kept as its dotted name, never imported.

    >>> GlobalRef("torch.nn.functional.silu").name
    'silu'
    """

    path: str

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UnsafeModelError(f"the pickle tries to call {self.path}; calls to it are refused")


@dataclass
class PickledObject:
    """A non-module object of the pickle: class name, constructor arguments and state.

    ``fields`` names the arguments of the namedtuples we know (e3nn's ``Instruction``\\ s).
    """

    class_path: str
    args: tuple
    state: Any = None

    @property
    def fields(self) -> dict[str, Any] | None:
        names = _NAMEDTUPLE_FIELDS.get(self.class_path)
        return None if names is None else dict(zip(names, self.args, strict=True))


_NAMEDTUPLE_FIELDS = {
    "e3nn.o3._linear.Instruction": ("i_in", "i_out", "path_shape", "path_weight"),
    "e3nn.o3._tensor_product._instruction.Instruction": (
        "i_in1",
        "i_in2",
        "i_out",
        "connection_mode",
        "has_weight",
        "path_weight",
        "path_shape",
    ),
}


def _refuse_build(what: str) -> None:
    raise UnsafeModelError(
        f"the pickle applies BUILD (__setstate__) to {what}; refused (on a tensor this would "
        "let the file resize or replace its storage)"
    )


class Placeholder:
    """Base of the inert stand-in classes: records constructor arguments and pickled state.

    The unpickler makes one subclass per class name, with ``_work`` set to its work budget,
    charged with the number of arguments each construction copies.
    """

    class_path = "<placeholder>"
    _work: Any = None
    _args: tuple = ()  # constructor arguments, set per instance in __new__
    _state: Any = None  # what BUILD (__setstate__) gave

    def __new__(cls, *args: Any, **kwargs: Any) -> Placeholder:
        if cls._work is not None:
            cls._work.charge(len(args) + len(kwargs), f"arguments of {cls.class_path}")
        instance = super().__new__(cls)
        instance._args = args
        instance._state = None
        return instance

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self._state = state


@dataclass(frozen=True)
class StorageType:
    dtype: torch.dtype

    def __setstate__(self, state: Any) -> None:
        _refuse_build("a storage type")


class Storage:
    """One storage blob of the archive as a 1-D tensor ``[numel]``; inert to BUILD."""

    def __init__(self, key: str, data: torch.Tensor) -> None:
        self.key = key
        self.data = data

    def __setstate__(self, state: Any) -> None:
        _refuse_build(f"storage {self.key}")


class TensorRecord:
    """A tensor as ``_rebuild_tensor_v2`` describes it: a view of a storage, made on demand.

    The unpickler hands these out instead of tensors, so that a ``BUILD`` opcode cannot reach
    ``torch.Tensor.__setstate__`` (whose ``set_`` resizes storages); bounds are checked by the
    unpickler before one is made.
    """

    def __init__(
        self, storage: Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]
    ) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def tensor(self) -> torch.Tensor:
        """The view ``[*size]`` of the storage."""
        return self.storage.data.as_strided(self.size, self.stride, self.offset)

    def __setstate__(self, state: Any) -> None:
        _refuse_build(f"a tensor of storage {self.storage.key}")
