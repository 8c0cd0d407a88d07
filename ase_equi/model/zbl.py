"""Ziegler-Biersack-Littmark (ZBL) pair repulsion, switched off smoothly at short range.

For an edge of length r (Å) between atoms of atomic numbers Z_s and Z_r the screened Coulomb
energy of the two bare nuclei is (Ziegler, Biersack and Littmark, *The Stopping and Range of
Ions in Solids*, 1985)

.. math::

    V(r) = \\frac{k_e Z_s Z_r}{r}\\, \\phi(r / a), \\qquad
    \\phi(x) = \\sum_{k=1}^{4} c_k e^{-b_k x}, \\qquad
    a = \\frac{a_\\mathrm{pre}\\, a_0}{Z_s^{\\,\\alpha} + Z_r^{\\,\\alpha}},

with k_e = 14.3996 eV·Å (e²/4πε₀), the Bohr radius a_0 = 0.529 Å, the universal screening
function's coefficients c = (0.1818, 0.5099, 0.2802, 0.02817) and decay rates
b = (3.2, 0.9423, 0.4028, 0.2016), α = 0.300 and a_pre = 0.4543 (the values MACE uses).
V is multiplied by the polynomial envelope u(r / r_c) of order p
(:class:`~ase_equi.model.radial.PolynomialEnvelope`) with the pair's own range
r_c = R_cov(Z_s) + R_cov(Z_r), the sum of the covalent radii, so the repulsion acts only at
contacts shorter than a bond and vanishes there with two continuous derivatives.

Every edge is listed in both directions, so each carries half the pair energy, given to its
receiver: atom i gets ε_i = ½ Σ_{s→i} V(r_si) u(r_si / r_c). In a MACE model this per-atom
energy joins the readout energies *before* the scale and shift (it is scaled with them).
The constants live in buffers so that a file (an imported MACE model) carries its own values.
"""

from __future__ import annotations

import torch

from .covalent_radii import COVALENT_RADII

__all__ = ["ZBLRepulsion", "polynomial_envelope"]

COULOMB_EV_ANGSTROM = 14.3996  # e²/(4πε₀) in eV·Å, as MACE rounds it
BOHR_ANGSTROM = 0.529
SCREENING_DECAY = (3.2, 0.9423, 0.4028, 0.2016)  # b_k of the universal screening function


def polynomial_envelope(x: torch.Tensor, r_c: torch.Tensor, p: float) -> torch.Tensor:
    """u(x / r_c) of order p (1 at 0, 0 at and beyond r_c with two derivatives); any shape."""
    y = x / r_c
    u = (
        1.0
        - ((p + 1.0) * (p + 2.0) / 2.0) * torch.pow(y, p)
        + p * (p + 2.0) * torch.pow(y, p + 1)
        - (p * (p + 1.0) / 2.0) * torch.pow(y, p + 2)
    )
    return u * (x < r_c)


class ZBLRepulsion(torch.nn.Module):
    """Per-atom ZBL repulsion energies (eV) from the edges.

    Parameters
    ----------
    p:
        Order of the polynomial envelope (MACE uses the radial cutoff's order,
        ``ModelConfig.envelope_p``).

    Shapes
    ------
    ``forward(edge_lengths [n_edges, 1] (Å), z_senders [n_edges], z_receivers [n_edges],
    receivers [n_edges], num_nodes)`` → ``[num_nodes]`` (eV); ``z_*`` are atomic numbers.

    Examples
    --------
    >>> zbl = ZBLRepulsion(p=5).double()
    >>> r = torch.tensor([[0.5], [0.5], [2.0], [2.0]], dtype=torch.float64)
    >>> z = torch.tensor([1, 1, 1, 1])
    >>> e = zbl(r, z, z, torch.tensor([0, 1, 2, 3]), 4)  # two H2, at 0.5 Å and 2 Å
    >>> bool(e[0] > 0), float(e[2])  # repulsive inside 2 R_cov(H) = 0.62 Å, zero beyond
    (True, 0.0)
    """

    coefficients: torch.Tensor  # [4] c_k
    a_exp: torch.Tensor  # [] α
    a_prefactor: torch.Tensor  # [] a_pre
    covalent_radii: torch.Tensor  # [119] Å, by atomic number

    def __init__(self, p: int = 5) -> None:
        super().__init__()
        self.p = int(p)
        f64 = torch.float64
        self.register_buffer(
            "coefficients", torch.tensor([0.1818, 0.5099, 0.2802, 0.02817], dtype=f64)
        )
        self.register_buffer("a_exp", torch.tensor(0.300, dtype=f64))
        self.register_buffer("a_prefactor", torch.tensor(0.4543, dtype=f64))
        self.register_buffer("covalent_radii", torch.tensor(COVALENT_RADII, dtype=f64))

    def forward(
        self,
        edge_lengths: torch.Tensor,
        z_senders: torch.Tensor,
        z_receivers: torch.Tensor,
        receivers: torch.Tensor,
        num_nodes: int,
    ) -> torch.Tensor:
        r = edge_lengths.reshape(-1)  # [n_edges]
        zs = z_senders.to(r.dtype)
        zr = z_receivers.to(r.dtype)
        a = (
            self.a_prefactor
            * BOHR_ANGSTROM
            / (torch.pow(zs, self.a_exp) + torch.pow(zr, self.a_exp))
        )
        x = r / a
        phi = sum(
            c * torch.exp(-b * x) for c, b in zip(self.coefficients, SCREENING_DECAY, strict=True)
        )
        pair = (COULOMB_EV_ANGSTROM * zs * zr) / r * phi
        r_c = self.covalent_radii[z_senders] + self.covalent_radii[z_receivers]
        half = 0.5 * pair * polynomial_envelope(r, r_c, float(self.p))
        return r.new_zeros(num_nodes).index_add(0, receivers, half)

    def extra_repr(self) -> str:
        return f"p={self.p}"
