"""The interaction's linear map applied straight to the tensor product's message classes.

An interaction block maps the summed tensor-product messages (irreps ``irreps_mid``, one block
per path) to the message irreps with an e3nn :class:`~e3nn.o3.Linear`: for every output
block l (channels o, components m)

.. math::

    y_{o m} = \\alpha_l \\sum_{n \\to l} \\sum_c W^{(n)}_{c o}\\, x^{(n)}_{c m},
    \\qquad \\alpha_l = \\big( \\textstyle\\sum_{n \\to l} C \\big)^{-1/2},

the sum running over the paths n whose output irrep is l (e3nn's "element" path
normalisation; the weights ``W^{(n)} [C, C_out]`` are the e3nn layer's, in its order).
:class:`MessageLinear` evaluates this from the tensor product's class tensors
(:meth:`~ase_equi.model.tensor_product.ChannelwiseTensorProduct.receiver_message_classes`,
``[N, n·C, d₃]``): the classes of each output irrep are joined along the path-channel axis and
multiplied by one ``[C_out, Σ n·C]`` matrix gathered from the e3nn weight vector, so that the
output comes out directly in the channel layout ``[N, C_out, Σ_l (2l+1)]`` that the product
block reads. The same numbers as e3nn's linear map after ``to_irreps`` and before
``irreps_to_channels``, up to the order of floating-point sums, in a few operations instead of
a few per path.
"""

from __future__ import annotations

import torch
from e3nn import o3

from .tensor_product import ChannelwiseTensorProduct


class MessageLinear(torch.nn.Module):
    """Class tensors of ``tp`` → ``[N, C_out, target.dim / C_out]`` with ``linear``'s weights.

    Parameters
    ----------
    tp:
        The block's tensor product (its classes fix the input layout).
    linear:
        The block's e3nn ``Linear(tp.irreps_mid, target)``; only its structure is read here,
        its ``weight`` is passed to :meth:`forward` (it stays the block's parameter).

    Raises
    ------
    ValueError
        If the target has an irrep twice, a multiplicity other than ``C_out`` or a class
        mixes output irreps: then the block keeps e3nn's linear map
        (:func:`supports`).
    """

    def __init__(self, tp: ChannelwiseTensorProduct, linear: o3.Linear) -> None:
        super().__init__()
        target = linear.irreps_out
        if not supports(tp, linear):
            raise ValueError(f"no class plan for {tp.irreps_mid} -> {target}")
        c, c_out = tp.channels, target[0].mul
        classes = [paths for piece in tp.classes for _, _, paths in piece]  # paths per class
        self.plan: list[tuple[list[int], float]] = []  # per target block: classes, alpha
        for i_out, (_, ir) in enumerate(target):
            members = [k for k, paths in enumerate(classes) if tp.irreps_mid[paths[0]].ir == ir]
            columns = [  # path n's weights: block n of the e3nn vector, [C, C_out] row-major
                (torch.arange(c * c_out).reshape(c, c_out) + n * c * c_out).transpose(0, 1)
                for k in members
                for n in classes[k]
            ]
            index = torch.cat(columns, dim=1) if columns else torch.zeros(c_out, 0)
            self.register_buffer(f"index_{i_out}", index.long(), persistent=False)
            fan_in = c * len(columns)
            self.plan.append((members, fan_in**-0.5 if fan_in else 1.0))
        self.dims = [ir.dim for _, ir in target]
        self.c_out = c_out

    def forward(self, classes: list[torch.Tensor], weight: torch.Tensor) -> torch.Tensor:
        """``classes [N, n·C, d₃]`` (all pieces, in order) and the e3nn weight vector →
        ``[N, C_out, Σ d_l]``."""
        n_nodes = classes[0].shape[0]
        out = []
        for i_out, ((members, alpha), dim) in enumerate(zip(self.plan, self.dims, strict=True)):
            if not members:
                out.append(classes[0].new_zeros(n_nodes, self.c_out, dim))
                continue
            parts = [classes[k] for k in members]
            x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)  # [N, Σ n·C, d]
            w = weight[getattr(self, f"index_{i_out}")]  # [C_out, Σ n·C]
            out.append(torch.matmul(w * alpha, x))  # [N, C_out, d]
        return out[0] if len(out) == 1 else torch.cat(out, dim=-1)


def supports(tp: ChannelwiseTensorProduct, linear: o3.Linear) -> bool:
    """Whether :class:`MessageLinear` reproduces ``linear`` on ``tp``'s messages: one block per
    target irrep, all of one multiplicity, e3nn's default instructions without biases, and
    every class of one output irrep (its paths' blocks, in ``irreps_mid``, in path order)."""
    target = linear.irreps_out
    if len({ir for _, ir in target}) != len(target) or len({m for m, _ in target}) != 1:
        return False
    if linear.bias.numel() or linear.irreps_in != tp.irreps_mid:
        return False
    if any(ir not in target for _, ir in tp.irreps_mid):
        return False
    expected = [(n, _block_of(target, ir)) for n, (_, ir) in enumerate(tp.irreps_mid)]
    if [(ins.i_in, ins.i_out) for ins in linear.instructions] != expected:
        return False
    return all(
        len({tp.irreps_mid[n].ir for n in paths}) == 1
        for piece in tp.classes
        for _, _, paths in piece
    )


def _block_of(target: o3.Irreps, ir: o3.Irrep) -> int:
    return next(i for i, (_, other) in enumerate(target) if other == ir)
