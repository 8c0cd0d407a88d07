"""MACE ``.model`` files → our ModelConfig and weights, without mace-torch and without pickled code.

The pickled module tree is read as inert data by :mod:`ase_equi.io.mace_pickle`; this module
checks that it is an architecture we reproduce exactly, reads the hyper-parameters, and renames
the tensors onto :class:`~ase_equi.model.mace.MaceModel`:

==========================================================  ==========================================
MACE (``ScaleShiftMACE`` / ``MACE``)                        ase_equi
==========================================================  ==========================================
``node_embedding.linear.*``                                 same
``radial_embedding.bessel_fn.bessel_weights``, ``prefactor`` ``radial_embedding.bessel.frequencies``,
                                                            ``prefactor``
``atomic_energies_fn.atomic_energies`` (one head)           ``reference_energies``
``scale_shift.scale``, ``shift`` (one head)                 ``scale``, ``shift``
``interactions.t.conv_tp_weights.layerK.weight``            ``interactions.t.radial_mlp.layerK.weight``
``interactions.t.{linear_up,conv_tp,linear,skip_tp}.*``     same
``products.t.symmetric_contractions.contractions.k.``       ``products.t.contractions.k.``
``weights_max`` / ``weights.j``                             ``weights.{N-1}`` / ``weights.{N-2-j}``
``U_matrix_ν [(2L+1), D…D, K]``                             ``coupling_ν`` folded onto monomials
``products.t.linear.*``, ``readouts.*`` (one head)          same
==========================================================  ==========================================

What we had to choose to keep this one-to-one: the same e3nn modules and instruction order for
the linear maps and tensor products (so their flat weight vectors mean the same thing), the same
normalisation constants (e3nn's ``normalize2mom`` SiLU constant, ``avg_num_neighbors``), and the
coupling tensors carried in the file rather than recomputed (MACE keeps linearly dependent
coupling paths; folding them onto symmetric monomials is exact).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import UnsupportedMaceFeature
from ..model.config import ModelConfig
from ..model.mace import MaceModel
from ..model.product import fold_symmetric
from .mace_pickle import PickledModule, read_mace_model, state_dict
from .model_file import LoadedModel, build_from_state_dict

log = logging.getLogger(__name__)

SUPPORTED_MODELS = ("mace.modules.models.ScaleShiftMACE", "mace.modules.models.MACE")
RESIDUAL = "mace.modules.blocks.RealAgnosticResidualInteractionBlock"
NON_RESIDUAL = "mace.modules.blocks.RealAgnosticInteractionBlock"

# (child module or attribute that betrays a feature, the feature's name)
UNSUPPORTED_CHILDREN = {
    "pair_repulsion_fn": "ZBL pair repulsion (pair_repulsion=True)",
    "joint_embedding": "embeddings of charge/spin/other graph features (embedding_specs)",
    "embedding_readout": "embedding readout (use_embedding_readout=True)",
    "les": "LES long-range electrostatics",
    "field_dependence": "field-dependent (polarisation) blocks",
}


def _refuse(feature: str, path: str) -> None:
    raise UnsupportedMaceFeature(
        f"{path}: uses {feature}, which ase_equi does not support; nothing was loaded"
    )


def _check_supported(root: PickledModule, path: str) -> None:
    if root.class_path not in SUPPORTED_MODELS:
        _refuse(f"the model class {root.class_path}", path)
    for child, feature in UNSUPPORTED_CHILDREN.items():
        if child in root.children:
            _refuse(feature, path)
    attrs = root.attributes
    if attrs.get("use_so3"):
        _refuse("SO(3) (parity-free) spherical harmonics (use_so3=True)", path)
    if attrs.get("use_agnostic_product"):
        _refuse("element-agnostic products (use_agnostic_product=True)", path)
    if attrs.get("use_last_readout_only"):
        _refuse("a readout on the last layer only (use_last_readout_only=True)", path)
    if attrs.get("apply_cutoff") is False:
        _refuse("a cutoff applied to the radial MLP output (apply_cutoff=False)", path)
    if attrs.get("edge_irreps") not in (None, "None"):
        _refuse(f"reduced edge irreps (edge_irreps={attrs.get('edge_irreps')})", path)
    radial = root.children["radial_embedding"]
    if "distance_transform" in radial.children:
        kind = radial.children["distance_transform"].class_path.rsplit(".", 1)[-1]
        kind = kind.removesuffix("Transform")
        _refuse(f"the {kind} distance transform", path)
    basis = radial.children["bessel_fn"].class_path
    if not basis.endswith(".BesselBasis"):
        _refuse(f"the radial basis {basis.rsplit('.', 1)[-1]}", path)
    cutoff = radial.children["cutoff_fn"].class_path
    if not cutoff.endswith(".PolynomialCutoff"):
        _refuse(f"the cutoff function {cutoff.rsplit('.', 1)[-1]}", path)
    interactions = root.children["interactions"].children
    for t, block in interactions.items():
        allowed = (RESIDUAL, NON_RESIDUAL) if t == "0" else (RESIDUAL,)
        if block.class_path not in allowed:
            kind = block.class_path.rsplit(".", 1)[-1]
            _refuse(f"the interaction block {kind} (layer {t})", path)
        if block.attributes.get("cueq_config") not in (None, "None") or block.attributes.get(
            "oeq_config"
        ) not in (None, "None"):
            _refuse("cuEquivariance/OpenEquivariance layouts (convert to e3nn first)", path)
    for t, readout in root.children["readouts"].children.items():
        kind = readout.class_path.rsplit(".", 1)[-1]
        if kind not in ("LinearReadoutBlock", "NonLinearReadoutBlock"):
            _refuse(f"the readout {kind} (layer {t})", path)
        if kind == "NonLinearReadoutBlock":
            act = readout.children["non_linearity"].children["acts"].children["0"]
            f = act.attributes.get("f")
            name = getattr(f, "path", str(f))
            if name != "torch.nn.functional.silu":
                _refuse(f"the readout activation {name}", path)


def mace_heads(root: PickledModule) -> list[str]:
    heads = root.attributes.get("heads") or ["Default"]
    return [str(h) for h in heads]


def _pick_head(heads: list[str], head: str | None, path: str) -> int:
    if head is None:
        # As MACE: a model trained with several heads answers with its 'Default' head when it
        # has one, otherwise its first head.
        return heads.index("Default") if "Default" in heads else 0
    if head not in heads:
        raise ValueError(f"{path} has no head {head!r}; its heads are {heads}")
    return heads.index(head)


def mace_to_ase_equi(
    path: str | os.PathLike, *, head: str | None = None
) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Read a MACE file into ``(config, state_dict for MaceModel, card)``."""
    path = str(path)
    root = read_mace_model(path)
    _check_supported(root, path)
    sd = state_dict(root)
    heads = mace_heads(root)
    h = _pick_head(heads, head, path)
    n_heads = len(heads)

    elements = [int(z) for z in sd["atomic_numbers"].tolist()]
    e0 = sd["atomic_energies_fn.atomic_energies"].to(torch.float64)
    e0 = e0.reshape(n_heads, len(elements))[h] if e0.dim() == 2 or n_heads > 1 else e0
    scale = shift = None
    if "scale_shift.scale" in sd:
        scale = torch.atleast_1d(sd["scale_shift.scale"]).to(torch.float64)
        shift = torch.atleast_1d(sd["scale_shift.shift"]).to(torch.float64)
        scale = scale[h] if scale.numel() > 1 else scale[0]
        shift = shift[h] if shift.numel() > 1 else shift[0]

    interactions = root.children["interactions"].children
    num_interactions = len(interactions)
    first = interactions["0"]
    channels = sd["node_embedding.linear.output_mask"].numel()
    products = root.children["products"].children
    correlation = []
    for t in range(num_interactions):
        prefix = f"products.{t}.symmetric_contractions.contractions.0."
        correlation.append(sum(1 for k in sd if k.startswith(prefix + "U_matrix_")))
    coupling_dim = sd["products.0.symmetric_contractions.contractions.0.U_matrix_1"].shape[-2]
    max_ell = math.isqrt(coupling_dim) - 1
    hidden = first.attributes["hidden_irreps"] if num_interactions > 1 else None
    max_L = (
        len(products["0"].children["symmetric_contractions"].children["contractions"].children) - 1
    )
    if hidden is not None and "0o" in str(hidden):
        _refuse("odd-parity scalars in the hidden irreps", path)
    mlp_layers = sorted(k for k in sd if k.startswith("interactions.0.conv_tp_weights.layer"))
    radial_mlp = [sd[k].shape[1] for k in mlp_layers[:-1]]
    last = str(num_interactions - 1)
    readout_hidden = sd[f"readouts.{last}.linear_1.output_mask"].numel() // n_heads

    config = ModelConfig(
        elements=tuple(elements),
        reference_energies=tuple(e0.tolist()),
        r_max=float(sd["r_max"]),
        num_bessel=sd["radial_embedding.bessel_fn.bessel_weights"].numel(),
        envelope_p=int(sd["radial_embedding.cutoff_fn.p"]),
        max_ell=max_ell,
        channels=channels,
        max_L=max_L,
        num_interactions=num_interactions,
        correlation=tuple(correlation),
        radial_mlp=tuple(radial_mlp),
        readout_hidden=readout_hidden,
        avg_num_neighbors=float(first.attributes["avg_num_neighbors"]),
        scale=float(scale) if scale is not None else 1.0,
        shift=float(shift) if shift is not None else 0.0,
        residual_first=first.class_path == RESIDUAL,
    )
    ours = _rename(sd, config, h, n_heads)
    card = {
        "name": Path(path).stem,
        "description": f"Imported from the MACE file {Path(path).name} ({root.class_path}).",
        "source": "mace-torch .model file (read without unpickling code)",
        "head": heads[h],
        "heads_in_file": heads,
    }
    return config, ours, card


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
        parts = key.split(".")
        if key.startswith("node_embedding.") or (parts[0] == "products" and parts[2] == "linear"):
            out[key] = value
        elif parts[0] == "interactions":
            if "_compiled_" in key or parts[2] == "conv_tp":
                continue  # e3nn constants (Wigner 3j, masks): ours are exact, not read
            if parts[2] == "conv_tp_weights":
                parts[2] = "radial_mlp"
            out[".".join(parts)] = value
        elif parts[0] == "products" and parts[2] == "symmetric_contractions":
            t, k, name = parts[1], parts[4], parts[5]
            n = config.correlation[int(t)]
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
    w = value.reshape(n_heads * hidden, n_heads)[head * hidden : (head + 1) * hidden, head]
    return (w / math.sqrt(n_heads)).contiguous()


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
