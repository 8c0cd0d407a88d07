"""Checks and reading of MACE-MH's residual non-linear interaction block (inert module tree).

The block (mace-torch's ``RealAgnosticResidualNonLinearInteractionBlock``) is reproduced by
:class:`~ase_equi.model.nonlinear_interaction.NonLinearInteractionBlock` when its parts are the
ones that block computes: radial MLPs made of Linear / LayerNorm (ε = 1e-5, affine) / SiLU
layers, and a gate with SiLU scalars and sigmoid gates in e3nn's layout, whose normalisation
constants (stored in the file) equal ours. Both gate classes that mace-torch releases have
pickled are read: e3nn's ``Gate`` (up to 0.3.15) and ``mace.modules.gate.GatedEquivariantBlock``
(0.3.16). Every other variant is refused by name; nothing in the file is executed.
"""

from __future__ import annotations

import math
from typing import Any

from e3nn import o3

from ...errors import ModelFileError
from ...model.gated_nonlinearity import activation_constant
from .objects import PickledModule
from .support import module_attribute, refuse_feature, submodule

__all__ = ["check_nonlinear_block", "edge_channels", "nonlinear_fields"]

GATE_CLASSES = ("mace.modules.gate.GatedEquivariantBlock", "e3nn.nn._gate.Gate")
RADIAL_MLP = "mace.modules.radial.RadialMLP"
LAYER_CLASSES = {
    "torch.nn.modules.linear.Linear": "Linear",
    "torch.nn.modules.normalization.LayerNorm": "LayerNorm",
    "torch.nn.modules.activation.SiLU": "SiLU",
}


def _function_name(value: Any) -> str:
    return getattr(value, "path", str(value))


def _check_constant(name: str, stored: Any, activation: str, path: str, where: str) -> None:
    """The file's normalisation constant of ``activation`` must be the one we compute."""
    ours = activation_constant(activation)
    if not isinstance(stored, float) or not math.isclose(stored, ours, rel_tol=1e-9):
        raise ModelFileError(
            f"{path}: {where}.{name} = {stored!r:.40} is not the {activation} normalisation "
            f"constant {ours!r}; the file is inconsistent"
        )


def _check_gate(gate: PickledModule, path: str, where: str) -> None:
    """SiLU scalars, sigmoid gates, e3nn (multiplicity-first) layout."""
    if gate.class_path not in GATE_CLASSES:
        refuse_feature(f"the gate {gate.class_path} ({where})", path)
    if gate.class_path == GATE_CLASSES[0]:
        attrs = gate.attributes
        if attrs.get("_layout_is_ir_mul"):
            refuse_feature(f"the ir_mul (cuEquivariance) gate layout ({where})", path)
        found = {
            "scalar": _function_name(attrs.get("_act_scalar")),
            "gate": _function_name(attrs.get("_act_gate")),
        }
        _check_constant("_scalar_cst", attrs.get("_scalar_cst"), "silu", path, where)
        _check_constant("_gate_cst", attrs.get("_gate_cst"), "sigmoid", path, where)
    else:
        found = {}
        for kind, child in (("scalar", "act_scalars"), ("gate", "act_gates")):
            acts = submodule(submodule(gate, child, path, where), "acts", path, f"{where}.{child}")
            names = {_function_name(a.attributes.get("f")) for a in acts.children.values()}
            found[kind] = names.pop() if len(names) == 1 else str(sorted(names))
            activation = "silu" if kind == "scalar" else "sigmoid"
            for a in acts.children.values():
                _check_constant("cst", a.attributes.get("cst"), activation, path, where)
    expected = {"scalar": "torch.nn.functional.silu", "gate": "torch.nn.functional.sigmoid"}
    for kind, name in found.items():
        if name != expected[kind]:
            refuse_feature(f"the {kind} activation {name} in the gate ({where})", path)


def _check_radial_mlp(mlp: PickledModule, path: str, where: str) -> None:
    """Linear → LayerNorm(ε 1e-5, affine) → SiLU repeated, a Linear last."""
    if mlp.class_path != RADIAL_MLP:
        refuse_feature(f"the radial MLP {mlp.class_path} ({where})", path)
    layers = list(submodule(mlp, "net", path, where).children.values())
    kinds = [LAYER_CLASSES.get(layer.class_path, layer.class_path) for layer in layers]
    n_hidden = (len(kinds) - 1) // 3
    if kinds != ["Linear", "LayerNorm", "SiLU"] * n_hidden + ["Linear"]:
        refuse_feature(f"a radial MLP made of {kinds} ({where})", path)
    for layer in layers:
        attrs = layer.attributes
        if layer.class_path.endswith("LayerNorm") and (
            attrs.get("eps") != 1e-5 or attrs.get("elementwise_affine") is not True
        ):
            refuse_feature(f"a LayerNorm with eps={attrs.get('eps')!r} ({where})", path)
        if layer.class_path.endswith(".Linear") and "bias" not in layer.parameters:
            refuse_feature(f"a radial MLP layer without bias ({where})", path)


def check_nonlinear_block(block: PickledModule, path: str, where: str) -> None:
    """Refuse (``UnsupportedMaceFeature``) any part of the block that we do not reproduce."""
    _check_gate(submodule(block, "equivariant_nonlin", path, where), path, where)
    for name in ("conv_tp_weights", "density_fn"):
        _check_radial_mlp(submodule(block, name, path, where), path, f"{where}.{name}")
    if block.attributes.get("cueq_config") not in (None, "None"):
        refuse_feature("cuEquivariance layouts (convert to e3nn first)", path)


def edge_channels(block: PickledModule, path: str, where: str, max_l: int) -> int:
    """The multiplicity E of the block's edge irreps, which must be ``E × (0e + 1o + …)`` up to
    ``max_l`` (what :class:`~ase_equi.model.config.ModelConfig` ``edge_channels`` describes)."""
    text = module_attribute(block, "edge_irreps", path, where)
    irreps = o3.Irreps(str(text))
    if not len(irreps):
        raise ModelFileError(f"{path}: {where}.edge_irreps is empty")
    mul = irreps[0].mul
    expected = o3.Irreps([(mul, (l, (-1) ** l)) for l in range(max_l + 1)])
    if irreps != expected:
        refuse_feature(f"edge irreps {irreps} ({where}); only {expected} is read", path)
    return mul


def nonlinear_fields(
    root: PickledModule,
    interactions: dict[str, PickledModule],
    path: str,
    channels: int,
    max_l: int,
) -> dict[str, Any]:
    """The ModelConfig fields of MACE-MH's options: ``nonlinear_interaction``,
    ``edge_channels``, ``edge_irreps_first``, ``agnostic_product``, ``apply_cutoff``.

    Where MACE's ``edge_irreps`` is set, every layer after the first runs on ``E × (0e + 1o +
    …)`` and the first on ``E x 0e`` (``use_edge_irreps_first``) or on its ``channels x 0e``
    input; each block's own ``edge_irreps`` attribute is checked against that.
    """
    attrs = root.attributes
    out: dict[str, Any] = {
        "agnostic_product": bool(attrs.get("use_agnostic_product", False)),
        "apply_cutoff": attrs.get("apply_cutoff", True) is not False,
    }
    if interactions["0"].class_path != "mace.modules.blocks." + (
        "RealAgnosticResidualNonLinearInteractionBlock"
    ):
        return out
    out["nonlinear_interaction"] = True
    if attrs.get("edge_irreps") in (None, "None"):
        return out
    mul = edge_channels(root, path, "the MACE model", max_l)
    for t, block in interactions.items():
        if t != "0" and edge_channels(block, path, f"interactions.{t}", max_l) != mul:
            raise ModelFileError(f"{path}: interactions.{t}.edge_irreps differs from the model's")
    first = str(module_attribute(interactions["0"], "edge_irreps", path, "interactions.0"))
    flag = bool(attrs.get("use_edge_irreps_first"))
    expected = f"{mul}x0e" if flag else f"{channels}x0e"
    if first != expected:
        refuse_feature(f"first-layer edge irreps {first} with use_edge_irreps_first={flag}", path)
    out.update(edge_channels=mul, edge_irreps_first=flag)
    return out
