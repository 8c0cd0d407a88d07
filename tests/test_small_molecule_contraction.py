"""The symmetric contraction's few-node layout against the definition of the product basis.

Both layouts of :class:`~ase_equi.model.product.SymmetricContraction` (nodes first for up to
``FEW_NODES`` nodes of an element, nodes last beyond) must give
B_{c,m} = Σ_ν Σ_k w_{z k c} Σ_i U^{(ν)}_{m, i_1…i_ν, k} x_{c,i_1} ⋯ x_{c,i_ν}, and its gradient,
evaluated here by a plain einsum over the unfolded coupling tensors.
"""

from __future__ import annotations

import pytest
import torch
from e3nn import o3

from ase_equi.graph.layout import ElementGroups
from ase_equi.model import product
from ase_equi.model.product import SymmetricContraction


def definition(contraction: SymmetricContraction, x: torch.Tensor, z: torch.Tensor):
    """``B [n, C·M]`` from the unfolded couplings, node by node (no Horner scheme)."""
    out = 0
    letters = "pqrs"
    for order in range(1, contraction.correlation + 1):
        u = contraction.symmetric_couplings(order)  # [M, D^ν, K]
        u = u.reshape(u.shape[0], *[contraction.dim] * order, u.shape[-1])
        w = contraction.weights[order - 1][z]  # [n, K, C]
        idx = letters[:order]
        operands = ",".join(f"nc{i}" for i in idx)
        out = out + torch.einsum(f"m{idx}k,nkc,{operands}->ncm", u, w, *[x] * order)
    return out.reshape(x.shape[0], -1)


@pytest.mark.parametrize("n_nodes", [1, 5, product.FEW_NODES + 7])
@pytest.mark.parametrize("irrep_out", ["0e", "1o"])
def test_contraction_equals_its_definition_for_few_and_many_nodes(n_nodes, irrep_out):
    torch.manual_seed(0)
    contraction = SymmetricContraction(o3.Irreps("0e+1o+2e"), o3.Irrep(irrep_out), 3, 2, 4)
    contraction = contraction.double()
    x = torch.randn(n_nodes, 4, contraction.dim, dtype=torch.float64, requires_grad=True)
    z = torch.arange(n_nodes) % 2
    got = contraction(x, ElementGroups(z))
    expected = definition(contraction, x, z)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    probe = torch.randn_like(expected)
    (grad_got,) = torch.autograd.grad((got * probe).sum(), x)
    (grad_expected,) = torch.autograd.grad((expected * probe).sum(), x)
    torch.testing.assert_close(grad_got, grad_expected, rtol=1e-12, atol=1e-12)
