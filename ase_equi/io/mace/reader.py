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
>>> packed = Path(__file__).parents[3] / "tests" / "fixtures" / "mace" / "mp0_medium.model.xz"
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

import functools
import os
import pickle
import zipfile
import zlib

import torch

from .bounds import ByteBudget, short_repr
from .objects import GlobalRef, ModelFileError, PickledModule, PickledObject, UnsafeModelError
from .torchscript import read_torchscript
from .tree import Converter
from .unpickler import RestrictedUnpickler

__all__ = [
    "GlobalRef",
    "ModelFileError",
    "PickledModule",
    "PickledObject",
    "UnsafeModelError",
    "read_mace_model",
    "state_dict",
]


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
            tree = RestrictedUnpickler(archive, label, budget).load()
            read_script = functools.partial(read_torchscript, budget=budget)
            return Converter(label, read_script)._module(tree, "the pickled object")
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
