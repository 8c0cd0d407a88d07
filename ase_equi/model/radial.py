"""Radial basis of the edge lengths: Bessel functions times a smooth polynomial envelope.

The radial embedding of an edge of length r (Å) is

.. math::

    R_n(r) = \\sqrt{2 / r_\\mathrm{max}}\\, \\frac{\\sin(k_n r)}{r}\\; u(r / r_\\mathrm{max}),
    \\qquad k_n = n \\pi / r_\\mathrm{max},\\quad n = 1 \\dots N,

with the polynomial envelope of order p (DimeNet, Gasteiger et al. 2020)

.. math::

    u(x) = 1 - \\frac{(p+1)(p+2)}{2} x^p + p(p+2) x^{p+1} - \\frac{p(p+1)}{2} x^{p+2},
    \\qquad u(x \\ge 1) = 0,

which goes to zero at the cutoff together with its first and second derivatives, so energies
and forces are continuous when a neighbour crosses ``r_max``.
"""

from __future__ import annotations

import math

import torch


class BesselBasis(torch.nn.Module):
    """Spherical Bessel functions of order zero, ``[n_edges, 1] -> [n_edges, num_bessel]``.

    Parameters
    ----------
    r_max:
        Cutoff radius in Å.
    num_bessel:
        Number N of basis functions.

    Notes
    -----
    The wave numbers k_n = nπ/r_max live in the buffer ``frequencies`` so that a model file
    (or an imported MACE file with trained frequencies) carries them exactly.

    Examples
    --------
    >>> basis = BesselBasis(r_max=5.0, num_bessel=8)
    >>> basis(torch.tensor([[1.0], [2.0]], dtype=torch.float64)).shape
    torch.Size([2, 8])
    """

    frequencies: torch.Tensor  # [num_bessel], 1/Å
    prefactor: torch.Tensor  # [], Å^(-1/2)

    def __init__(self, r_max: float, num_bessel: int = 8) -> None:
        super().__init__()
        n = torch.linspace(1.0, num_bessel, num_bessel, dtype=torch.float64)
        self.register_buffer("frequencies", math.pi / r_max * n)
        self.register_buffer("prefactor", torch.tensor(math.sqrt(2.0 / r_max), dtype=torch.float64))
        self.r_max = r_max

    def forward(self, edge_lengths: torch.Tensor) -> torch.Tensor:
        """``edge_lengths [n_edges, 1]`` (Å) → ``[n_edges, num_bessel]``."""
        return self.prefactor * (torch.sin(self.frequencies * edge_lengths) / edge_lengths)

    def extra_repr(self) -> str:
        return f"r_max={self.r_max}, num_bessel={len(self.frequencies)}"


class PolynomialEnvelope(torch.nn.Module):
    """Smooth cutoff u(r/r_max) of order p, ``[n_edges, 1] -> [n_edges, 1]``; zero beyond r_max.

    Examples
    --------
    >>> env = PolynomialEnvelope(r_max=4.0, p=5)
    >>> r = torch.tensor([[0.0], [4.0], [5.0]], dtype=torch.float64)  # Å
    >>> env(r).flatten().tolist() == [1, 0, 0]  # 1 at r = 0, 0 at and beyond r_max
    True
    """

    def __init__(self, r_max: float, p: int = 5) -> None:
        super().__init__()
        self.r_max = float(r_max)
        self.p = int(p)

    def forward(self, edge_lengths: torch.Tensor) -> torch.Tensor:
        p = float(self.p)
        x = edge_lengths / self.r_max
        u = (
            1.0
            - ((p + 1.0) * (p + 2.0) / 2.0) * torch.pow(x, p)
            + p * (p + 2.0) * torch.pow(x, p + 1)
            - (p * (p + 1.0) / 2.0) * torch.pow(x, p + 2)
        )
        return u * (edge_lengths < self.r_max)

    def extra_repr(self) -> str:
        return f"r_max={self.r_max}, p={self.p}"


class RadialEmbedding(torch.nn.Module):
    """Edge lengths → Bessel basis × envelope, ``[n_edges, 1] -> [n_edges, num_bessel]``."""

    def __init__(self, r_max: float, num_bessel: int = 8, envelope_p: int = 5) -> None:
        super().__init__()
        self.bessel = BesselBasis(r_max, num_bessel)
        self.envelope = PolynomialEnvelope(r_max, envelope_p)
        self.num_bessel = num_bessel

    def forward(
        self, edge_lengths: torch.Tensor, basis_lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``edge_lengths [n_edges, 1]`` (Å) → ``[n_edges, num_bessel]``; with
        ``basis_lengths`` (a transformed length, e.g. Agnesi's) the Bessel functions see that,
        the envelope still ``edge_lengths``."""
        basis = self.bessel(edge_lengths if basis_lengths is None else basis_lengths)
        return basis * self.envelope(edge_lengths)
