"""Gated equivariant non-linearity: scalars through an activation, l > 0 features scaled by gates.

For node features laid out as ``[scalars | gates | gated]`` (e3nn irreps, scalars and gates
both ``0e`` channels), the output is

.. math::

    \\big[\\, c_s\\,\\phi(s) \\;\\big|\\; c_g\\,\\sigma(g_k)\\, x_k \\,\\big],

where s are the scalar channels, φ the scalar activation (SiLU), x_k the k-th gated channel
(a vector of 2l+1 components), g_k its gate and σ the gate activation (the logistic sigmoid).
Multiplying an l > 0 feature by an invariant keeps it equivariant. The constants
:math:`c = 1/\\sqrt{E_{z \\sim N(0,1)}[f(z)^2]}` normalise each activation's second moment
(e3nn's ``normalize2mom``), so that unit-variance inputs give unit-variance outputs.

Used by the residual non-linear interaction block of MACE-MH
(:mod:`~ase_equi.model.nonlinear_interaction`).
"""

from __future__ import annotations

import torch
from e3nn import o3

__all__ = ["ACTIVATION_CONSTANTS", "GatedNonLinearity", "activation_constant"]


#: 1/sqrt(E[f(z)^2]) for z ~ N(0, 1), as e3nn's ``normalize2mom`` estimates it (one million
#: seeded samples, float64): the constants of e3nn's and mace-torch's gates. Stored, not
#: re-estimated (0.1 s each); ``tests/model/test_gated_nonlinearity.py`` checks them.
ACTIVATION_CONSTANTS = {"silu": 1.6791767923989418, "sigmoid": 1.8467055342154763}


def activation_constant(name: str) -> float:
    """The second-moment normalisation constant of activation ``name`` ("silu" or "sigmoid").

    Examples
    --------
    >>> activation_constant("silu"), activation_constant("sigmoid")
    (1.6791767923989418, 1.8467055342154763)
    """
    return ACTIVATION_CONSTANTS[name]


class GatedNonLinearity(torch.nn.Module):
    """``[n, irreps_in.dim] -> [n, irreps_out.dim]`` for the gated irreps ``gated``.

    Parameters
    ----------
    gated_out:
        Irreps of the output: its ``0e`` part are the scalars (SiLU), every ``l > 0`` block is
        gated channel by channel (sigmoid gates), e.g. ``"8x0e+8x1o+8x2e"``. Must be sorted,
        with the scalars first.

    The input is ``irreps_in = (S + G)x0e + gated`` (scalars, then one gate per gated channel in
    the order of the gated blocks, then the gated blocks), e3nn's sorted and simplified layout.

    Examples
    --------
    >>> gate = GatedNonLinearity(o3.Irreps("2x0e+1x1o"))
    >>> str(gate.irreps_in), gate(torch.zeros(1, 6, dtype=torch.float64)).shape
    ('3x0e+1x1o', torch.Size([1, 5]))
    """

    def __init__(self, gated_out: o3.Irreps) -> None:
        super().__init__()
        gated_out = o3.Irreps(gated_out)
        self.num_scalars = sum(mul for mul, ir in gated_out if ir.l == 0)
        if any(ir.l == 0 for _, ir in gated_out[1:]) or (
            self.num_scalars and gated_out[0].ir != o3.Irrep("0e")
        ):
            raise ValueError(f"gated irreps must be sorted with even scalars first: {gated_out}")
        self.gated = o3.Irreps([(mul, ir) for mul, ir in gated_out if ir.l > 0])
        self.num_gates = self.gated.num_irreps
        self.irreps_in = (
            o3.Irreps(f"{self.num_scalars + self.num_gates}x0e") + self.gated
        ).simplify()
        self.irreps_out = gated_out
        self.scalar_constant = activation_constant("silu")
        self.gate_constant = activation_constant("sigmoid")

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        s, g = self.num_scalars, self.num_gates
        scalars = torch.nn.functional.silu(features[:, :s]) * self.scalar_constant
        gates = torch.sigmoid(features[:, s : s + g]) * self.gate_constant  # [n, G]
        parts = [scalars]
        start, gate_start = s + g, 0
        for mul, ir in self.gated:
            block = features[:, start : start + mul * ir.dim].reshape(-1, mul, ir.dim)
            gate = gates[:, gate_start : gate_start + mul].unsqueeze(-1)  # [n, mul, 1]
            parts.append((block * gate).reshape(-1, mul * ir.dim))
            start += mul * ir.dim
            gate_start += mul
        return torch.cat(parts, dim=-1)

    def extra_repr(self) -> str:
        return f"{self.irreps_in} -> {self.irreps_out} (SiLU scalars, sigmoid gates)"
