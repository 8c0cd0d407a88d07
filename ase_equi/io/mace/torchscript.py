"""TorchScript archives nested in e3nn's ``__codegen__``, read as inert modules.

e3nn modules built by code generation (``Linear``, ``TensorProduct``) pickle their compiled parts
as ``__codegen__``: a dict of TorchScript archives (zip files as ``bytes``). e3nn re-attaches each
one as a submodule on loading, so their buffers (Wigner-3j blocks ``_w3j_*``) are part of
``model.state_dict()``. Here each archive is opened with the same restricted unpickler (plus
TorchScript's own ``__torch__.*`` classes and type tags), the parameter and buffer names are
taken from the ``__parameters__`` / ``__buffers__`` lines of the archived class definitions
(read as text, never compiled), and the result is a
:class:`~ase_equi.io.mace.objects.PickledModule`.
"""

from __future__ import annotations

import ast
import functools
import io
import re
import zipfile
from typing import Any

from .bounds import ByteBudget, read_entry
from .objects import ModelFileError, PickledModule, Placeholder
from .tree import Converter, is_bookkeeping, module_tensors
from .unpickler import RestrictedUnpickler

__all__ = ["read_torchscript"]

MAX_SCRIPT_MODULES = 10_000  # modules in one TorchScript archive (e3nn's hold one or two)


def _script_members(archive: zipfile.ZipFile, root: str, class_path: str) -> dict[str, list]:
    """``__parameters__`` / ``__buffers__`` of a TorchScript class, read from its source text."""
    module_path, class_name = class_path.rsplit(".", 1)
    source_name = f"{root}/code/{module_path.replace('.', '/')}.py"
    if source_name not in archive.namelist():
        raise ModelFileError(f"TorchScript source {source_name} is missing")
    source = bytes(read_entry(archive, source_name, source_name)).decode("utf-8")
    block = re.search(rf"^class {re.escape(class_name)}\(Module\):\n((?:  .*\n)*)", source, re.M)
    members: dict[str, list] = {"__parameters__": [], "__buffers__": []}
    for key in members:
        line = re.search(rf"^  {key} = (\[.*\])$", block.group(1) if block else "", re.M)
        if line is None:
            raise ModelFileError(f"no {key} line for class {class_name} in {source_name}")
        members[key] = ast.literal_eval(line.group(1))
    return members


def read_torchscript(blob: Any, label: str, *, budget: ByteBudget) -> PickledModule:
    """An e3nn ``__codegen__`` TorchScript archive (``bytes``) as an inert module.

    Its entries draw on the byte budget of the file that holds it.
    """
    if not isinstance(blob, bytes):
        raise ModelFileError(f"{label}: __codegen__ entry is {type(blob).__name__}, not bytes")
    read_script = functools.partial(read_torchscript, budget=budget)
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            unpickler = RestrictedUnpickler(archive, label, budget, torchscript=True)
            tree = unpickler.load()
            convert = Converter(label, read_script)
            return _script_module(tree, archive, unpickler.root, convert, {})
    except zipfile.BadZipFile as error:
        raise ModelFileError(f"{label}: unreadable TorchScript archive ({error})") from None


def _script_module(
    value: Any, archive: zipfile.ZipFile, root: str, convert: Converter, seen: dict[Any, Any]
) -> PickledModule:
    """One ``__torch__`` module; ``seen`` holds the ids of modules read and each class's members."""
    if not isinstance(value, Placeholder) or not isinstance(value._state, dict):
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
        elif isinstance(item, Placeholder) and item.class_path.startswith("__torch__."):
            module.children[key] = _script_module(item, archive, root, convert, seen)
        elif not is_bookkeeping(key):
            module.attributes[key] = convert(item)
    module.parameters = module_tensors(module.parameters, value.class_path)
    module.buffers = module_tensors(module.buffers, value.class_path)
    return module
