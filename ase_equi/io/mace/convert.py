"""MACE ``.model`` files → our ModelConfig and weights, without mace-torch and without pickled code.

The pickled module tree is read as inert data by :mod:`ase_equi.io.mace.reader`; this module
checks (with :mod:`ase_equi.io.mace.support`) that it is an architecture we reproduce exactly,
reads the hyper-parameters, and renames the tensors onto :class:`~ase_equi.model.mace.MaceModel`:

=====================================================  ==========================================
MACE (``ScaleShiftMACE`` / ``MACE``)                   ase_equi
=====================================================  ==========================================
``node_embedding.linear.*``                            same
``radial_embedding.bessel_fn.bessel_weights``,         ``radial_embedding.bessel.frequencies``,
``prefactor``                                          ``prefactor``
``atomic_energies_fn.atomic_energies`` (one head)      ``reference_energies``
``scale_shift.scale``, ``shift`` (one head)            ``scale``, ``shift``
``interactions.t.conv_tp_weights.layerK.weight``       ``interactions.t.radial_mlp.layerK.weight``
``interactions.t.{linear_up,conv_tp,linear,skip_tp}.*`` same
``products.t.symmetric_contractions.contractions.k.``  ``products.t.contractions.k.``
``weights_max`` / ``weights.j``                        ``weights.{N-1}`` / ``weights.{N-2-j}``
``U_matrix_ν [(2L+1), D…D, K]``                        ``coupling_ν`` folded onto monomials
``products.t.linear.*``, ``readouts.*`` (one head)     same
=====================================================  ==========================================

What we had to choose to keep this one-to-one: the same e3nn modules and instruction order for
the linear maps and tensor products (so their flat weight vectors mean the same thing), the same
normalisation constants (e3nn's ``normalize2mom`` SiLU constant, ``avg_num_neighbors``), and the
coupling tensors carried in the file rather than recomputed (MACE keeps linearly dependent
coupling paths; folding them onto symmetric monomials is exact).

A damaged or hostile file fails with :class:`~ase_equi.errors.ModelFileError` naming the file
and the missing or inconsistent part: every submodule, attribute and tensor is looked up through
a helper that names it, and the hyper-parameters read from tensor sizes (channels, elements,
``max_ell``, readout width) are checked against each other and against ModelConfig's bounds
*before* anything is built, so a stretched mask cannot make the importer build a huge model.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, cast

import torch

from ...errors import AseEquiError, ModelFileError, UnsupportedMaceFeature
from ...model.config import ModelConfig
from ...model.mace import MaceModel
from ...model.product import fold_symmetric
from ..model_file import LoadedModel, build_from_state_dict
from .nonlinear_support import nonlinear_fields
from .objects import PickledModule
from .pair_terms import PAIR_TERM_TENSORS, pair_terms
from .reader import read_mace_model, state_dict
from .support import (
    DENSITY_BLOCKS,
    NON_LINEAR,
    RESIDUAL_BLOCKS,
    check_supported,
    module_attribute,
    refuse_feature,
    submodule,
)
from .support import named_scalar as _scalar
from .support import named_tensor as _tensor
from .wigner import wigner_float32

__all__ = ["UnsupportedMaceFeature", "load_mace_model", "mace_heads", "mace_to_ase_equi"]

log = logging.getLogger(__name__)


MAX_HEADS = 64


def mace_heads(root: PickledModule) -> list[str]:
    """The head names of a MACE model (``["Default"]`` for a model without heads)."""
    heads = root.attributes.get("heads") or ["Default"]
    if not isinstance(heads, (list, tuple)) or not 1 <= len(heads) <= MAX_HEADS:
        raise ModelFileError(f"the MACE model's 'heads' should be a list of 1..{MAX_HEADS} names")
    return [str(h) for h in heads]


def _pick_head(heads: list[str], head: str | None, path: str) -> int:
    if head is None:
        # As MACE's calculator: one head, or the head named "default" (any case); a model with
        # several heads and no default one (MACE-MH-1) needs the head named
        if len(heads) == 1:
            return 0
        defaults = [i for i, h in enumerate(heads) if h.lower() == "default"]
        if len(defaults) != 1:
            raise ValueError(
                f"{path} has no head named 'Default' among its heads {heads}: give one with "
                "head=..."
            )
        return defaults[0]
    if head not in heads:
        raise ValueError(f"{path} has no head {head!r}; its heads are {heads}")
    return heads.index(head)


def _check_sizes(sd: dict[str, torch.Tensor], path: str, n_elements: int, n_heads: int) -> None:
    """Sizes the file states twice must agree, before anything is built from them.

    ``channels`` is read from ``node_embedding.linear.output_mask`` and must match the node
    embedding's weights ``[n_elements × channels]``; ``max_ell`` from the coupling tensors must
    match the spherical-harmonics dimension ``(max_ell + 1)²``; the readout width from its mask
    must match its weights.
    """
    channels = _tensor(sd, "node_embedding.linear.output_mask", path).numel()
    weight = _tensor(sd, "node_embedding.linear.weight", path).numel()
    if weight != n_elements * channels:
        raise ModelFileError(
            f"{path}: inconsistent channels: node_embedding.linear.output_mask has {channels} "
            f"entries but node_embedding.linear.weight has {weight} = {n_elements} elements x "
            f"{weight / max(n_elements, 1):g} channels"
        )
    u = _tensor(sd, "products.0.symmetric_contractions.contractions.0.U_matrix_1", path)
    if u.dim() < 2 or math.isqrt(u.shape[-2]) ** 2 != u.shape[-2]:
        raise ModelFileError(
            f"{path}: products.0...U_matrix_1 has shape {list(u.shape)}; its second-to-last "
            "size should be (max_ell + 1)^2"
        )
    energies = _tensor(sd, "atomic_energies_fn.atomic_energies", path).numel()
    if energies != n_heads * n_elements:
        raise ModelFileError(
            f"{path}: atomic_energies has {energies} entries, expected {n_heads} heads x "
            f"{n_elements} elements"
        )


def mace_to_ase_equi(
    path: str | os.PathLike, *, head: str | None = None
) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Read a MACE file into ``(config, state_dict for MaceModel, card)``.

    Raises
    ------
    ModelFileError
        The file is unreadable, incomplete or inconsistent (the message names the part).
    UnsupportedMaceFeature
        The model uses a feature ase_equi does not reproduce.
    """
    path = str(path)
    root = read_mace_model(path)
    try:
        return _convert(root, path, head)
    except AseEquiError as error:
        message = str(error)
        raise type(error)(message if path in message else f"{path}: {message}") from None
    except (KeyError, IndexError, TypeError, AttributeError, RuntimeError, ValueError) as error:
        if isinstance(error, ValueError) and "has no head" in str(error):
            raise
        raise ModelFileError(
            f"{path}: malformed MACE model ({type(error).__name__}: {str(error)[:300]})"
        ) from None


def _convert(
    root: PickledModule, path: str, head: str | None
) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, Any]]:
    check_supported(root, path)
    sd = state_dict(root)
    heads = mace_heads(root)
    h = _pick_head(heads, head, path)
    n_heads = len(heads)

    numbers = _tensor(sd, "atomic_numbers", path)
    if numbers.dim() != 1 or not 1 <= numbers.numel() <= 118:
        raise ModelFileError(
            f"{path}: atomic_numbers has shape {list(numbers.shape)}; expected [1..118]"
        )
    elements = [int(z) for z in numbers.tolist()]
    _check_sizes(sd, path, len(elements), n_heads)
    e0, scale, shift = _head_constants(sd, path, len(elements), n_heads, h)
    layers = _architecture(root, sd, path, n_heads)  # outside the try: its errors name parts
    try:
        config = ModelConfig(
            elements=tuple(elements),
            reference_energies=tuple(e0.tolist()),
            r_max=float(_scalar(sd, "r_max", path)),
            num_bessel=_tensor(sd, "radial_embedding.bessel_fn.bessel_weights", path).numel(),
            envelope_p=int(_scalar(sd, "radial_embedding.cutoff_fn.p", path)),
            scale=float(scale) if scale is not None else 1.0,
            shift=float(shift) if shift is not None else 0.0,
            **layers,
        )
    except ValueError as error:
        raise ModelFileError(
            f"{path}: the hyper-parameters read from the file are out of bounds: {error}"
        ) from None
    ours = _rename(sd, config, h, n_heads)
    card = {
        "name": Path(path).stem,
        "description": f"Imported from the MACE file {Path(path).name} ({root.class_path}).",
        "source": "mace-torch .model file (read without unpickling code)",
        "head": heads[h],
        "heads_in_file": heads,
    }
    return config, ours, card


def _head_constants(
    sd: dict[str, torch.Tensor], path: str, n_elements: int, n_heads: int, h: int
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Head ``h``'s E0 ``[n_elements]`` (eV), scale ``[]`` and shift ``[]`` (eV), float64.

    scale and shift are None for a plain ``MACE`` model (no ``scale_shift`` block).
    """
    e0 = _tensor(sd, "atomic_energies_fn.atomic_energies", path).to(torch.float64)
    e0 = e0.reshape(n_heads, n_elements)[h] if e0.dim() == 2 or n_heads > 1 else e0
    scale = shift = None
    if "scale_shift.scale" in sd:
        scale = torch.atleast_1d(sd["scale_shift.scale"]).to(torch.float64)
        shift = torch.atleast_1d(_tensor(sd, "scale_shift.shift", path)).to(torch.float64)
        if scale.numel() not in (1, n_heads) or shift.numel() not in (1, n_heads):
            raise ModelFileError(f"{path}: scale_shift should hold 1 or {n_heads} values")
        scale = scale[h] if scale.numel() > 1 else scale[0]
        shift = shift[h] if shift.numel() > 1 else shift[0]
    return e0, scale, shift


def _architecture(
    root: PickledModule, sd: dict[str, torch.Tensor], path: str, n_heads: int
) -> dict[str, Any]:
    """The ModelConfig fields that describe the layers, read from module attributes and sizes."""
    interactions = submodule(root, "interactions", path).children
    num_interactions = len(interactions)
    first = interactions["0"]
    products = submodule(root, "products", path)
    correlation = []
    for t in range(num_interactions):
        prefix = f"products.{t}.symmetric_contractions.contractions.0."
        correlation.append(sum(1 for k in sd if k.startswith(prefix + "U_matrix_")))
    coupling_dim = sd["products.0.symmetric_contractions.contractions.0.U_matrix_1"].shape[-2]
    hidden = (
        module_attribute(first, "hidden_irreps", path, "interactions.0")
        if num_interactions > 1
        else None
    )
    product = submodule(products, "0", path, "products")
    contractions = submodule(
        submodule(product, "symmetric_contractions", path, "products.0"),
        "contractions",
        path,
        "products.0.symmetric_contractions",
    )
    if hidden is not None and "0o" in str(hidden):
        refuse_feature("odd-parity scalars in the hidden irreps", path)
    nonlinear = first.class_path == NON_LINEAR
    prefix = "interactions.0.conv_tp_weights." + ("net." if nonlinear else "layer")
    mlp_layers = sorted(
        (k for k in sd if k.startswith(prefix) and k.endswith(".weight") and sd[k].dim() == 2),
        key=lambda k: int(k.removeprefix(prefix).split(".")[0]),
    )
    last = str(num_interactions - 1)
    readout_mask = _tensor(sd, f"readouts.{last}.linear_1.output_mask", path)
    channels = sd["node_embedding.linear.output_mask"].numel()
    max_l = len(contractions.children) - 1
    widths = [sd[k].shape[0 if nonlinear else 1] for k in mlp_layers[:-1]]
    return {
        "max_ell": math.isqrt(coupling_dim) - 1,
        "channels": channels,
        "max_L": max_l,
        "num_interactions": num_interactions,
        "correlation": tuple(correlation),
        "radial_mlp": tuple(widths),
        "readout_hidden": readout_mask.numel() // n_heads,
        "avg_num_neighbors": float(
            module_attribute(first, "avg_num_neighbors", path, "interactions.0")
        ),
        "residual_first": first.class_path in RESIDUAL_BLOCKS or nonlinear,
        "density_normalisation": first.class_path in DENSITY_BLOCKS,
        **nonlinear_fields(root, interactions, path, channels, max_l),
        "wigner_float32": wigner_float32(sd, path),
        **pair_terms(root, sd, path),
    }


def _rename(
    sd: dict[str, torch.Tensor], config: ModelConfig, head: int, n_heads: int
) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    out["reference_energies"] = torch.tensor(config.reference_energies, dtype=torch.float64)
    out["scale"] = torch.tensor(config.scale, dtype=torch.float64)
    out["shift"] = torch.tensor(config.shift, dtype=torch.float64)
    out["radial_embedding.bessel.frequencies"] = sd["radial_embedding.bessel_fn.bessel_weights"]
    out["radial_embedding.bessel.prefactor"] = sd["radial_embedding.bessel_fn.prefactor"]
    last = config.num_interactions - 1
    for key, value in sd.items():
        if key in PAIR_TERM_TENSORS:
            out[PAIR_TERM_TENSORS[key]] = value
            continue
        parts = key.split(".")
        if key.startswith("node_embedding.") or (parts[0] == "products" and parts[2] == "linear"):
            out[key] = value
        elif parts[0] == "interactions":
            if "_compiled_" in key or parts[2] in ("conv_tp", "equivariant_nonlin"):
                continue  # e3nn constants (Wigner 3j, masks): ours are exact, not read
            if parts[2] == "conv_tp_weights":
                parts[2] = "radial_mlp"
            out[".".join(parts)] = value
        elif parts[0] == "products" and parts[2] == "symmetric_contractions":
            t, k, name = parts[1], parts[4], parts[5]
            n = cast(tuple, config.correlation)[int(t)]  # a tuple after ModelConfig's checks
            dest = f"products.{t}.contractions.{k}."
            if name == "weights_max":
                out[dest + f"weights.{n - 1}"] = value
            elif name == "weights":
                out[dest + f"weights.{n - 2 - int(parts[6])}"] = value
            elif name.startswith("U_matrix_"):
                order = int(name.rsplit("_", 1)[1])
                dim = value.shape[-2]
                u = value.reshape(-1, *[dim] * order, value.shape[-1])
                out[dest + f"coupling_{order}"] = fold_symmetric(u.to(torch.float64), dim, order)
        elif parts[0] == "readouts":
            out[key] = _readout_head(key, value, int(parts[1]) == last, head, n_heads, config)
    # A coupling order without any equivariant path is all zeros in MACE (its weights are empty
    # placeholders): keep zero columns and zero weights, so the order contributes nothing.
    for key in [k for k in out if ".coupling_" in k]:
        if not bool(out[key].abs().sum() > 0):
            order = int(key.rsplit("_", 1)[1])
            out[key] = out[key][..., :0]
            wkey = key.replace(f"coupling_{order}", f"weights.{order - 1}")
            out[wkey] = torch.zeros(len(config.elements), 0, config.channels, dtype=torch.float64)
    return out


def _readout_head(
    key: str, value: torch.Tensor, is_last: bool, head: int, n_heads: int, config: ModelConfig
) -> torch.Tensor:
    """Restrict a multi-head readout tensor to one head (identity for one head)."""
    if n_heads == 1 or not key.endswith(".weight"):
        if key.endswith("output_mask") and n_heads > 1:
            return value[: value.numel() // n_heads]
        return value
    hidden = config.readout_hidden
    if not is_last:  # linear: [C, H] → [C, 1]
        return value.reshape(-1, n_heads)[:, head].contiguous()
    if ".linear_1." in key:  # [C, H·16] → [C, 16]: head h owns hidden units h·16 … h·16+15
        return value.reshape(-1, n_heads * hidden)[:, head * hidden : (head + 1) * hidden].reshape(
            -1
        )
    # linear_2: [H·16, H] → [16, 1]; e3nn normalises by 1/sqrt(fan-in): H·16 there, 16 here
    # (in float64: a float32 file's weights divided in float32 would be rounded again)
    w = value.reshape(n_heads * hidden, n_heads)[head * hidden : (head + 1) * hidden, head]
    return (w.to(torch.float64) / math.sqrt(n_heads)).contiguous()


def load_mace_model(
    path: str | os.PathLike,
    *,
    head: str | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> LoadedModel:
    """A MACE ``.model`` file as a ready :class:`LoadedModel` (same numbers as mace-torch)."""
    config, tensors, card = mace_to_ase_equi(path, head=head)
    model: MaceModel = build_from_state_dict(config, tensors, source=str(path))
    model = model.to(device=device, dtype=dtype).eval()
    return LoadedModel(model=model, config=config, card=card, source=str(path))
