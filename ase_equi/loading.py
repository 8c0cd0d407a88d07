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

import os

import torch

from .io.model_file import LoadedModel, read_model_file
from .zoo import resolve

__all__ = ["LoadedModel", "load_for_inference", "load_model"]


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
        Zoo name, path of a model file (ours or MACE's), or a :class:`LoadedModel`.
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
        model.model.to(device=device, dtype=dtype or torch.float64)
        return model
    path = resolve(model)
    if os.fspath(path).endswith(".model"):
        from .io.mace import load_mace_model

        return load_mace_model(path, dtype=dtype or torch.float64, device=device, head=head)
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
    loaded = load_model(model, dtype=DTYPES[dtype], device=available_device(device), head=head)
    loaded.model.eval()
    for parameter in loaded.model.parameters():
        parameter.requires_grad_(False)
    return loaded
