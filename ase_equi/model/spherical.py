"""Real spherical harmonics of the edge directions.

``edge_vectors [n_edges, 3] -> [n_edges, (max_ell + 1)²]`` with irreps ``0e + 1o + 2e + ...``.
The vectors are normalised first, so only the direction r̂ enters, and the harmonics use
e3nn's *component* normalisation, Σ_m Y_lm(r̂)² = 2l + 1, and its real basis and component
order. They are equivariant: Y(R r̂) = D(R) Y(r̂).
"""

from __future__ import annotations

from e3nn import o3


def edge_spherical_harmonics(max_ell: int) -> o3.SphericalHarmonics:
    """The module computing Y_l(r̂) for l = 0 … max_ell.

    Examples
    --------
    >>> import torch
    >>> sh = edge_spherical_harmonics(2)
    >>> y = sh(torch.tensor([[0.0, 0.0, 2.0]], dtype=torch.float64))
    >>> y.shape, float(y[0, 0])
    (torch.Size([1, 9]), 1.0)
    """
    irreps = o3.Irreps.spherical_harmonics(max_ell)
    return o3.SphericalHarmonics(irreps, normalize=True, normalization="component")
