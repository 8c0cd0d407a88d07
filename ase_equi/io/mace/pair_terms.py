"""MACE's ZBL pair repulsion and Agnesi distance transform: their constants, read and checked.

The buffers of mace-torch's ``ZBLBasis`` (``pair_repulsion_fn``) and ``AgnesiTransform``
(``radial_embedding.distance_transform``) map one to one onto
:class:`~ase_equi.model.zbl.ZBLRepulsion` and
:class:`~ase_equi.model.distance_transform.AgnesiTransform`; their shapes are checked before
anything is built, and a ZBL envelope of another order than the radial cutoff's is refused.
"""

from __future__ import annotations

from typing import Any

import torch

from ...errors import ModelFileError
from .objects import PickledModule
from .support import named_scalar, named_tensor, refuse_feature, submodule

__all__ = ["PAIR_TERM_TENSORS", "pair_terms"]


#: MACE buffer → ours, for the ZBL repulsion and the Agnesi transform
PAIR_TERM_TENSORS = {
    "pair_repulsion_fn.c": "pair_repulsion.coefficients",
    "pair_repulsion_fn.a_exp": "pair_repulsion.a_exp",
    "pair_repulsion_fn.a_prefactor": "pair_repulsion.a_prefactor",
    "pair_repulsion_fn.covalent_radii": "pair_repulsion.covalent_radii",
    "radial_embedding.distance_transform.q": "distance_transform.q",
    "radial_embedding.distance_transform.p": "distance_transform.p",
    "radial_embedding.distance_transform.a": "distance_transform.a",
    "radial_embedding.distance_transform.covalent_radii": "distance_transform.covalent_radii",
}
PAIR_TERM_SHAPES = {"c": (4,), "covalent_radii": (119,)}  # the others are scalars


def pair_terms(root: PickledModule, sd: dict[str, torch.Tensor], path: str) -> dict[str, Any]:
    """``pair_repulsion`` and ``distance_transform`` of the config, after checking that the
    file's constants have the shapes we read (4 screening coefficients, 119 covalent radii,
    scalars) and that the ZBL envelope has the radial cutoff's order (our one ``envelope_p``)."""
    zbl = "pair_repulsion_fn" in root.children
    agnesi = "distance_transform" in submodule(root, "radial_embedding", path).children
    for key in PAIR_TERM_TENSORS:
        if (
            key.startswith("pair_repulsion_fn.")
            and not zbl
            or key.startswith("radial")
            and not agnesi
        ):
            continue
        shape = PAIR_TERM_SHAPES.get(key.rsplit(".", 1)[-1], ())
        if tuple(named_tensor(sd, key, path).shape) != shape:
            raise ModelFileError(
                f"{path}: {key} has shape {list(sd[key].shape)}, expected {list(shape)}"
            )
    if zbl:
        p_zbl = named_scalar(sd, "pair_repulsion_fn.p", path)
        p_cut = named_scalar(sd, "radial_embedding.cutoff_fn.p", path)
        if p_zbl != p_cut:
            refuse_feature(
                f"a ZBL envelope of order {p_zbl:g} different from the radial cutoff's {p_cut:g}",
                path,
            )
    return {"pair_repulsion": zbl, "distance_transform": "Agnesi" if agnesi else None}
