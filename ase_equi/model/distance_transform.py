"""Agnesi distance transform: edge lengths in units of the pair's covalent bond length.

Before the Bessel basis, an edge of length r (Å) between atoms of atomic numbers Z_s, Z_r can be
mapped onto

.. math::

    \\tilde r = \\Big( 1 + \\frac{a\\, x^{q}}{1 + x^{q - p}} \\Big)^{-1}, \\qquad
    x = r / r_0, \\qquad r_0 = \\tfrac12 \\big( R_\\mathrm{cov}(Z_s) + R_\\mathrm{cov}(Z_r) \\big),

which falls from 1 at r = 0 towards 0 at large r, fastest near the bond length r_0 (the
"Agnesi" radial transform of ACEpotentials.jl, Witt et al., J. Chem. Phys. 159, 164101 (2023)).
The Bessel functions then resolve bond-length changes of every pair alike. Only the basis sees
r̃; the cutoff envelope still acts on r. The parameters q, p, a (MACE: 0.9183, 4.5791,
1.0805) and the covalent-radius table live in buffers, so an imported file carries its own.
"""

from __future__ import annotations

import torch

from .covalent_radii import COVALENT_RADII

__all__ = ["AgnesiTransform"]


class AgnesiTransform(torch.nn.Module):
    """``edge_lengths [n_edges, 1]`` (Å) → dimensionless r̃ ``[n_edges, 1]`` in (0, 1].

    ``forward(edge_lengths, z_senders [n_edges], z_receivers [n_edges])``, with atomic numbers.

    Examples
    --------
    >>> t = AgnesiTransform().double()
    >>> r = torch.tensor([[0.31], [3.0]], dtype=torch.float64)  # Å, for two H atoms
    >>> z = torch.tensor([1, 1])
    >>> out = t(r, z, z).flatten()
    >>> bool(out[0] > out[1] > 0), round(float(out[0]), 4)  # r = r_0: 1 / (1 + a / 2)
    (True, 0.6492)
    """

    q: torch.Tensor  # []
    p: torch.Tensor  # []
    a: torch.Tensor  # []
    covalent_radii: torch.Tensor  # [119] Å, by atomic number

    def __init__(self, q: float = 0.9183, p: float = 4.5791, a: float = 1.0805) -> None:
        super().__init__()
        f64 = torch.float64
        self.register_buffer("q", torch.tensor(q, dtype=f64))
        self.register_buffer("p", torch.tensor(p, dtype=f64))
        self.register_buffer("a", torch.tensor(a, dtype=f64))
        self.register_buffer("covalent_radii", torch.tensor(COVALENT_RADII, dtype=f64))

    def forward(
        self, edge_lengths: torch.Tensor, z_senders: torch.Tensor, z_receivers: torch.Tensor
    ) -> torch.Tensor:
        r0 = 0.5 * (self.covalent_radii[z_senders] + self.covalent_radii[z_receivers])
        x = edge_lengths / r0.unsqueeze(-1)  # [n_edges, 1]
        return 1.0 / (1.0 + self.a * torch.pow(x, self.q) / (1.0 + torch.pow(x, self.q - self.p)))

    def extra_repr(self) -> str:
        return f"q={float(self.q):.4f}, p={float(self.p):.4f}, a={float(self.a):.4f}"
