"""From the unpickler's placeholder tree to plain data (:class:`PickledModule` and values).

Irreps placeholders become e3nn strings (``"128x0e+128x1o"``), modules become
:class:`PickledModule` with their parameters, buffers, children and plain attributes; e3nn's
compiled ``__codegen__`` blobs are handed to the TorchScript reader given to the converter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .bounds import MAX_DEPTH, MAX_EXPANDED, short_repr
from .objects import (
    GlobalRef,
    ModelFileError,
    PickledModule,
    PickledObject,
    Placeholder,
    TensorRecord,
)

_IRREPS_CLASSES = ("e3nn.o3._irreps.Irreps", "e3nn.o3._irreps._MulIr", "e3nn.o3._irreps.Irrep")
_MODULE_BOOKKEEPING = frozenset(
    {"_parameters", "_buffers", "_modules", "_non_persistent_buffers_set", "_is_full_backward_hook"}
)


def _irrep(value: Any) -> str:
    """``Irrep`` placeholder (args ``((l, p),)`` or ``(l, p)``) → ``"1o"``."""
    args = value._args[0] if len(value._args) == 1 else value._args
    l, p = args
    return f"{l}{'e' if p == 1 else 'o'}"


def _mul_irrep(value: Any) -> str:
    args = value._args[0] if len(value._args) == 1 else value._args
    multiplicity, irrep = args
    return f"{multiplicity}x{_irrep(irrep)}"


def _irreps_string(value: Placeholder) -> str:
    try:
        if value.class_path.endswith(".Irrep"):
            return _irrep(value)
        if value.class_path.endswith("._MulIr"):
            return _mul_irrep(value)
        entries = value._args[0] if value._args else ()
        return "+".join(_mul_irrep(entry) for entry in entries)
    except (AttributeError, TypeError, ValueError, KeyError, IndexError):
        raise ModelFileError(
            f"unexpected pickled layout of {value.class_path}: {short_repr(value._args)}"
        ) from None


class Converter:
    """Turns the placeholder tree into :class:`PickledModule` / plain Python values.

    The pickle's objects form a graph (memo references share objects): each object is converted
    once and its result reused, so shared references stay shared and cost nothing more. A
    reference cycle, nesting deeper than ``MAX_DEPTH``, or a module tree that would expand to
    more than ``MAX_EXPANDED`` modules and tensors when shared submodules are repeated (as
    ``state_dict`` repeats them) raise :class:`ModelFileError`.
    """

    def __init__(self, label: str, read_script: Callable[[Any, str], PickledModule]) -> None:
        self._label = label
        self._read_script = read_script  # TorchScript blob, label -> PickledModule
        self._done: dict[int, Any] = {}
        self._active: set[int] = set()
        self._sizes: dict[int, int] = {}  # id(PickledModule) -> expanded size
        self._depth = 0

    def __call__(self, value: Any) -> Any:
        if isinstance(value, (str, bytes, int, float, type(None), torch.Tensor, torch.dtype)):
            return value
        if isinstance(value, GlobalRef):
            return value
        if isinstance(value, type) and issubclass(value, Placeholder):
            return GlobalRef(value.class_path)
        key = id(value)
        if key in self._done:
            return self._done[key]
        if key in self._active:
            raise ModelFileError(
                f"the pickle holds a reference cycle (a {type(value).__name__} that contains "
                "itself); a model file has none"
            )
        if self._depth >= MAX_DEPTH:
            raise ModelFileError(f"the pickle nests objects more than {MAX_DEPTH} levels deep")
        self._active.add(key)
        self._depth += 1
        try:
            converted = self._convert(value)
        finally:
            self._active.discard(key)
            self._depth -= 1
        self._done[key] = converted
        return converted

    def _convert(self, value: Any) -> Any:
        if isinstance(value, TensorRecord):
            return value.tensor()
        if isinstance(value, Placeholder):
            return self._placeholder(value)
        if isinstance(value, dict):
            return {self(k): self(v) for k, v in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            return type(value)(self(item) for item in value)
        raise ModelFileError(f"unexpected {type(value).__name__} object in the pickle")

    def _placeholder(self, value: Placeholder) -> Any:
        if value.class_path in _IRREPS_CLASSES:
            return _irreps_string(value)
        state = value._state
        if not (
            isinstance(state, dict) and {"_parameters", "_buffers", "_modules"} <= state.keys()
        ):
            return PickledObject(value.class_path, self(value._args), self(state))
        module = PickledModule(value.class_path, {}, {}, {}, {})
        module.parameters = module_tensors(state["_parameters"], value.class_path)
        module.buffers = module_tensors(state["_buffers"], value.class_path)
        module.non_persistent_buffers = frozenset(
            self(state.get("_non_persistent_buffers_set", ()))
        )
        children = state["_modules"]
        if not isinstance(children, dict):
            raise ModelFileError(f"{value.class_path}: _modules is not a dict")
        for name, child in children.items():
            if child is not None:
                module.children[str(name)] = self._module(child, f"submodule {name!r}")
        module.attributes = {
            key: self(item) for key, item in state.items() if not is_bookkeeping(key)
        }
        codegen = module.attributes.get("__codegen__")
        if isinstance(codegen, dict):  # as e3nn's CodeGenMixin.__setstate__ does
            for name, blob in codegen.items():
                module.children[name] = self._read_script(blob, f"{self._label} [{name}]")
            module.attributes["__codegen__"] = list(codegen)
        return module

    def _module(self, value: Any, what: str) -> PickledModule:
        converted = self(value)
        if not isinstance(converted, PickledModule):
            raise ModelFileError(f"{what} is a {type(converted).__name__}, not a torch module")
        if self._expanded(converted) > MAX_EXPANDED:
            raise ModelFileError(
                f"{what} ({converted.class_path}) expands to more than {MAX_EXPANDED} modules "
                "and tensors (shared submodules repeated); a model file has far fewer"
            )
        return converted

    def _expanded(self, module: PickledModule) -> int:
        """Modules + tensors of ``module`` with shared submodules counted at every use."""
        key = id(module)
        if key not in self._sizes:
            children = sum(self._expanded(child) for child in module.children.values())
            self._sizes[key] = 1 + len(module.parameters) + len(module.buffers) + children
        return self._sizes[key]


def is_bookkeeping(key: str) -> bool:
    """``torch.nn.Module`` internals that are not attributes of the architecture."""
    return key in _MODULE_BOOKKEEPING or key.endswith(
        ("_hooks", "_hooks_with_kwargs", "_hooks_always_called")
    )


def module_tensors(entries: Any, owner: str) -> dict[str, torch.Tensor]:
    if not isinstance(entries, dict):
        raise ModelFileError(f"{owner}: parameters/buffers are not a dict")
    out = {}
    for name, tensor in entries.items():
        if tensor is None:
            continue
        if isinstance(tensor, TensorRecord):
            tensor = tensor.tensor()
        if not isinstance(tensor, torch.Tensor):
            raise ModelFileError(f"{owner}: entry {name!r} is not a tensor")
        out[name] = tensor
    return out
