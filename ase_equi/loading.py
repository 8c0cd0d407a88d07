"""The one place where a model argument becomes a loaded model.

Users name a model in four ways, everywhere in the package (calculator, fine-tuning, evaluation,
the command line): a zoo name (``"metals"``), one of our model files (``NAME.json``,
``NAME.safetensors`` or the stem ``NAME``), a MACE ``.model`` file (read without executing
pickled code), or an already loaded :class:`~ase_equi.io.model_file.LoadedModel`.
:func:`load_model` turns each into a :class:`LoadedModel` on the asked device and dtype with the
asked head.

Examples
--------
>>> loaded = load_model("metals")
>>> loaded.config.r_max, loaded.head
(5.0, 'Default')
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any, TypeVar

import torch

from .errors import ModelFileError
from .io.model_committee import LoadedCommittee, committee_from_models, read_committee_file
from .io.model_file import LoadedModel, read_model_file
from .io.model_header import model_paths, read_header
from .zoo import resolve

_Loaded = TypeVar("_Loaded", LoadedModel, LoadedCommittee)

__all__ = [
    "LoadedCommittee",
    "LoadedModel",
    "is_committee",
    "load_any",
    "load_committee",
    "load_for_inference",
    "load_model",
    "model_label",
    "moved",
]


def moved(loaded: _Loaded, device: torch.device | str, dtype: torch.dtype) -> _Loaded:
    """``loaded`` itself when its weights are already in ``device`` and ``dtype``, else a copy
    moved there: a model the user holds (and may share with a calculator of another dtype)
    is never changed under them."""
    weights, target = next(iter(loaded.model.parameters()), None), torch.device(device)
    if weights is None or (
        weights.dtype == dtype
        and weights.device.type == target.type
        and target.index in (None, weights.device.index)
    ):
        return loaded
    copied = copy.deepcopy(loaded)
    copied.model.to(device=target, dtype=dtype)
    return copied


def load_model(
    model: str | os.PathLike | LoadedModel,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    head: str | None = None,
) -> LoadedModel:
    """Load a zoo model, one of our model files, a MACE ``.model`` file, or pass a loaded model.

    Parameters
    ----------
    model:
        Zoo name, path of a model file (ours or MACE's), or a :class:`LoadedModel` (itself
        when already in ``dtype`` and on ``device``, else a copy moved there: :func:`moved`).
    dtype:
        Torch dtype of the parameters; ``None`` keeps float64 (exact E0 and couplings).
    device:
        Torch device.
    head:
        Head of a multi-head model; ``None`` takes the model's default head. An unknown head
        raises :class:`~ase_equi.errors.ModelFileError` listing the heads.

    Raises
    ------
    ModelFileError
        The file is missing, damaged, compressed, out of the supported bounds, or has no such
        head (the message names which).
    ValueError
        A bare name that is neither a file nor a zoo model (the message lists the zoo).
    """
    if isinstance(model, LoadedModel):
        from .calculator_options import check_head

        check_head(model, head, f"the loaded model '{model.name}'")
        return moved(model, device, dtype or torch.float64)
    path = resolve(model)
    if os.fspath(path).endswith(".model"):
        from .io.mace import load_mace_model

        return load_mace_model(path, dtype=dtype or torch.float64, device=device, head=head)
    if is_committee(path):
        raise ModelFileError(
            f"{os.fspath(path)} is a committee of several models: load it with "
            "ase_equi.loading.load_committee, or give it to EquivariantCalculator"
        )
    return read_model_file(path, dtype=dtype, device=device, head=head)


def load_for_inference(
    model: str | os.PathLike | LoadedModel,
    *,
    dtype: str = "float64",
    device: torch.device | str = "cpu",
    head: str | None = None,
) -> LoadedModel:
    """:func:`load_model` for evaluation (``evaluate``, ``relax``, Hessians): ``dtype`` by name
    (``"float64"`` or ``"float32"``, checked), ``device`` checked to exist here, the model in
    eval mode with its weights frozen (derivatives are taken with respect to positions only)."""
    from .calculator_options import DTYPES, available_device

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of 'float64' or 'float32', got {dtype!r}")
    if not isinstance(model, (str, os.PathLike, LoadedModel)):  # a list, a calculator, ...
        raise TypeError(
            f"one model is needed here (a zoo name, a model file or a LoadedModel), not a "
            f"{type(model).__name__}: a committee's mean and spread come from "
            "EquivariantCalculator, a calculator's own model is its .loaded"
        )
    loaded = load_model(model, dtype=DTYPES[dtype], device=available_device(device), head=head)
    loaded.model.eval()
    for parameter in loaded.model.parameters():
        parameter.requires_grad_(False)
    return loaded


def is_committee(model: object) -> bool:
    """True for a list of model files, a :class:`LoadedCommittee`, or a committee file."""
    if isinstance(model, (list, tuple, LoadedCommittee)):
        return True
    if isinstance(model, LoadedModel):
        return False
    path = resolve(model)  # type: ignore[arg-type]
    if os.fspath(path).endswith(".model") or not model_paths(path)[0].exists():
        return False
    return read_header(path).get("committee") is not None


def load_committee(
    model: str | os.PathLike | Sequence[str | os.PathLike] | LoadedCommittee,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
) -> LoadedCommittee:
    """A committee from one committee file, a list of model files (zoo names, ours or MACE's:
    each loaded with :func:`load_model`), or a :class:`LoadedCommittee` (moved to ``device`` and
    ``dtype`` in place).

    Raises
    ------
    ValueError
        Members that differ in cutoff, elements or architecture (named), fewer than two.
    ModelFileError
        A file that cannot be read (see :func:`load_model`).
    """
    if isinstance(model, LoadedCommittee):
        return moved(model, device, dtype or torch.float64)
    if isinstance(model, (list, tuple)):
        _compare_headers(model)  # our files: a different architecture is refused before loading
        members = [load_model(m, dtype=dtype, device=device) for m in model]
        return committee_from_models(members, sources=[os.fspath(m) for m in model])
    return read_committee_file(resolve(model), dtype=dtype, device=device)  # type: ignore[arg-type]


def load_any(
    model: str | os.PathLike | Sequence[str | os.PathLike] | LoadedModel | LoadedCommittee,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    head: str | None = None,
) -> LoadedModel | LoadedCommittee:
    """:func:`load_committee` for a committee (see :func:`is_committee`; ``head`` must be None
    or its one head), else :func:`load_model`."""
    if not is_committee(model):
        return load_model(model, dtype=dtype, device=device, head=head)  # type: ignore[arg-type]
    from .calculator_options import check_head

    committee = load_committee(model, dtype=dtype, device=device)  # type: ignore[arg-type]
    check_head(committee, head, f"the committee '{committee.name}'")
    return committee


def model_label(model: Any) -> str | list[str]:
    """How a model argument is recorded (the calculator's ``parameters["model"]``)."""
    if isinstance(model, (LoadedModel, LoadedCommittee)):
        return model.source or model.name
    if isinstance(model, (list, tuple)):
        return [os.fspath(m) for m in model]
    return os.fspath(model)


def _compare_headers(models: Sequence[str | os.PathLike]) -> None:
    """``ValueError`` naming two of our model files whose headers' architectures differ."""
    from .model.committee import architecture_difference

    configs = {}
    for model in models:
        path = resolve(model)
        if not os.fspath(path).endswith(".model") and model_paths(path)[0].exists():
            configs[os.fspath(model)] = read_header(path)["config"]
    names = list(configs)
    for name in names[1:]:
        diff = architecture_difference(configs[names[0]], configs[name])
        if diff is not None:
            raise ValueError(
                f"committee members {names[0]} and {name} differ in {diff}; the members of a "
                "committee need the same cutoff, elements and architecture"
            )
