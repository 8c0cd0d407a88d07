"""Which MACE architectures we reproduce exactly; every other feature is refused by name.

:func:`check_supported` runs on the inert module tree before any tensor is converted: the model
class, the interaction blocks, the radial basis, cutoff, distance transform, readouts and their
activation must be the ones :class:`~ase_equi.model.mace.MaceModel` computes; otherwise
:class:`~ase_equi.errors.UnsupportedMaceFeature` names the feature and nothing is loaded.
"""

from __future__ import annotations

from typing import Any

import torch

from ...errors import ModelFileError, UnsupportedMaceFeature
from .objects import PickledModule

__all__ = [
    "DENSITY_BLOCKS",
    "NON_LINEAR",
    "RESIDUAL_BLOCKS",
    "check_supported",
    "module_attribute",
    "named_scalar",
    "named_tensor",
    "refuse_feature",
    "submodule",
]

SUPPORTED_MODELS = ("mace.modules.models.ScaleShiftMACE", "mace.modules.models.MACE")
RESIDUAL = "mace.modules.blocks.RealAgnosticResidualInteractionBlock"
NON_RESIDUAL = "mace.modules.blocks.RealAgnosticInteractionBlock"
DENSITY_RESIDUAL = "mace.modules.blocks.RealAgnosticDensityResidualInteractionBlock"
DENSITY = "mace.modules.blocks.RealAgnosticDensityInteractionBlock"
NON_LINEAR = "mace.modules.blocks.RealAgnosticResidualNonLinearInteractionBlock"
RESIDUAL_BLOCKS = (RESIDUAL, DENSITY_RESIDUAL)
DENSITY_BLOCKS = (DENSITY, DENSITY_RESIDUAL)

# (child module or attribute that betrays a feature, the feature's name)
UNSUPPORTED_CHILDREN = {
    "joint_embedding": "embeddings of charge/spin/other graph features (embedding_specs)",
    "embedding_readout": "embedding readout (use_embedding_readout=True)",
    "les": "LES long-range electrostatics",
    "field_dependence": "field-dependent (polarisation) blocks",
}


def refuse_feature(feature: str, path: str) -> None:
    raise UnsupportedMaceFeature(
        f"{path}: uses {feature}, which ase_equi does not support; nothing was loaded"
    )


def named_tensor(sd: dict[str, torch.Tensor], key: str, path: str) -> torch.Tensor:
    """``sd[key]``, or a :class:`ModelFileError` naming the missing tensor."""
    try:
        return sd[key]
    except KeyError:
        raise ModelFileError(
            f"{path}: the MACE model has no tensor {key!r}; the file is not a complete MACE model"
        ) from None


def named_scalar(sd: dict[str, torch.Tensor], key: str, path: str) -> float:
    """The one number ``sd[key]`` holds, or a :class:`ModelFileError` naming the tensor."""
    value = named_tensor(sd, key, path)
    if value.numel() != 1:
        raise ModelFileError(f"{path}: {key} should hold one number, it holds {value.numel()}")
    return value.item()


def submodule(module: PickledModule, name: str, path: str, where: str = "the MACE model") -> Any:
    """``module.children[name]``, or a :class:`ModelFileError` naming what is missing."""
    try:
        return module.children[name]
    except (KeyError, AttributeError):
        raise ModelFileError(
            f"{path}: {where} has no submodule {name!r} ({module.class_path}); the file is not "
            "a complete MACE model"
        ) from None


def module_attribute(module: PickledModule, name: str, path: str, where: str) -> Any:
    """``module.attributes[name]``, or a :class:`ModelFileError` naming what is missing."""
    try:
        return module.attributes[name]
    except KeyError:
        raise ModelFileError(
            f"{path}: {where} ({module.class_path}) has no attribute {name!r}; the file is not "
            "a complete MACE model"
        ) from None


def _check_pair_terms(root: PickledModule, radial: PickledModule, path: str) -> None:
    """The Agnesi transform and the ZBL repulsion are read; other kinds are refused."""
    if "distance_transform" in radial.children:
        kind = radial.children["distance_transform"].class_path.rsplit(".", 1)[-1]
        if kind != "AgnesiTransform":
            refuse_feature(f"the {kind.removesuffix('Transform')} distance transform", path)
    if "pair_repulsion_fn" in root.children:
        kind = root.children["pair_repulsion_fn"].class_path.rsplit(".", 1)[-1]
        if kind != "ZBLBasis":
            refuse_feature(f"the pair repulsion {kind}", path)


def _check_interactions(interactions: dict[str, PickledModule], path: str) -> None:
    """One block family for all layers (the first may be non-residual), e3nn layouts only."""
    density = interactions["0"].class_path in DENSITY_BLOCKS
    for t, block in interactions.items():
        # one family for all layers: (non-)residual first, residual after
        family = (DENSITY, DENSITY_RESIDUAL) if density else (NON_RESIDUAL, RESIDUAL)
        if interactions["0"].class_path == NON_LINEAR:
            family = (NON_LINEAR, NON_LINEAR)
        allowed = family if t == "0" else family[1:]
        if block.class_path not in allowed:
            kind = block.class_path.rsplit(".", 1)[-1]
            refuse_feature(f"the interaction block {kind} (layer {t})", path)
        if block.attributes.get("cueq_config") not in (None, "None") or block.attributes.get(
            "oeq_config"
        ) not in (None, "None"):
            refuse_feature("cuEquivariance/OpenEquivariance layouts (convert to e3nn first)", path)


def check_supported(root: PickledModule, path: str) -> None:
    """Refuse (``UnsupportedMaceFeature``) any part of ``root`` that we do not reproduce.

    One check per feature, in the order the model computes; long but flat (no branch
    depends on another), so it stays one function.
    """
    if root.class_path not in SUPPORTED_MODELS:
        refuse_feature(f"the model class {root.class_path}", path)
    for child, feature in UNSUPPORTED_CHILDREN.items():
        if child in root.children:
            refuse_feature(feature, path)
    attrs = root.attributes
    if attrs.get("use_so3"):
        refuse_feature("SO(3) (parity-free) spherical harmonics (use_so3=True)", path)
    if attrs.get("use_last_readout_only"):
        refuse_feature("a readout on the last layer only (use_last_readout_only=True)", path)
    first = submodule(submodule(root, "interactions", path), "0", path, "interactions")
    if first.class_path != NON_LINEAR:  # MACE-MH's options, read with its block only
        if attrs.get("apply_cutoff") is False:
            refuse_feature(
                "the cutoff on the tensor-product weights (apply_cutoff=False) with the "
                f"interaction block {first.class_path.rsplit('.', 1)[-1]}",
                path,
            )
        if attrs.get("edge_irreps") not in (None, "None"):
            refuse_feature(
                f"reduced edge irreps (edge_irreps={attrs.get('edge_irreps')}) with the "
                f"interaction block {first.class_path.rsplit('.', 1)[-1]}",
                path,
            )
    radial = submodule(root, "radial_embedding", path)
    _check_pair_terms(root, radial, path)
    basis = submodule(radial, "bessel_fn", path, "radial_embedding").class_path
    if not basis.endswith(".BesselBasis"):
        refuse_feature(f"the radial basis {basis.rsplit('.', 1)[-1]}", path)
    cutoff = submodule(radial, "cutoff_fn", path, "radial_embedding").class_path
    if not cutoff.endswith(".PolynomialCutoff"):
        refuse_feature(f"the cutoff function {cutoff.rsplit('.', 1)[-1]}", path)
    for name in ("node_embedding", "atomic_energies_fn", "products"):
        submodule(root, name, path)
    interactions = submodule(root, "interactions", path).children
    if not interactions or list(interactions) != [str(t) for t in range(len(interactions))]:
        raise ModelFileError(
            f"{path}: interactions should be numbered 0, 1, ...; found {list(interactions)[:10]}"
        )
    _check_interactions(interactions, path)
    from .nonlinear_support import check_nonlinear_block  # it uses this module's helpers

    for t, block in interactions.items():
        if block.class_path == NON_LINEAR:
            check_nonlinear_block(block, path, f"interactions.{t}")
    for t, readout in submodule(root, "readouts", path).children.items():
        kind = readout.class_path.rsplit(".", 1)[-1]
        if kind not in ("LinearReadoutBlock", "NonLinearReadoutBlock"):
            refuse_feature(f"the readout {kind} (layer {t})", path)
        if kind == "NonLinearReadoutBlock":
            where = f"readouts.{t}"
            gate = submodule(readout, "non_linearity", path, where)
            acts = submodule(gate, "acts", path, f"{where}.non_linearity")
            act = submodule(acts, "0", path, f"{where}.non_linearity.acts")
            f = act.attributes.get("f")
            name = getattr(f, "path", str(f))
            if name != "torch.nn.functional.silu":
                refuse_feature(f"the readout activation {name}", path)
