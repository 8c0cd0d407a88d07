"""Tests of ase_equi.model.coupling: equivariance, symmetry, completeness and normalisation.

The number of columns K is checked against an independent count that uses neither
Clebsch–Gordan coefficients nor e3nn: the multiplicity of L^p in Sym^ν V from group characters.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from e3nn import o3
from helpers import random_rotation

from ase_equi.model.coupling import MAX_ENTRIES, symmetric_coupling_basis

IRREPS = "0e+1o+2e+3o"  # max_ell = 3, D = 16
BOTH_PARITIES = "0e+0o+1o+1e+2e+2o+3o+3e"  # D = 32
ATOL = 1e-10  # float64


# == independent count: characters of O(3) = SO(3) × {1, inversion} ==


def so3_character(l: int, theta: torch.Tensor) -> torch.Tensor:
    """χ_l(θ) = Σ_{m=-l}^{l} e^{imθ} = 1 + 2 Σ_{m=1}^{l} cos(mθ), rotation by angle θ."""
    return 1 + 2 * sum((torch.cos(m * theta) for m in range(1, l + 1)), torch.zeros_like(theta))


def o3_character(irreps: o3.Irreps, theta: torch.Tensor, inversion: int) -> torch.Tensor:
    """χ_V(g) for g = (rotation by θ) · (inversion)^k: each irrep contributes p^k χ_l(θ)."""
    return sum(
        (mul * ir.p**inversion * so3_character(ir.l, theta) for mul, ir in irreps),
        torch.zeros_like(theta),
    )


def symmetric_power_multiplicity(irreps: str, irrep_out: str, order: int) -> int:
    """Multiplicity of L^p in Sym^ν V, from characters averaged over O(3).

    The character of Sym^ν V follows from the power sums p_j(g) = χ_V(g^j) by Newton's identity
    ν h_ν = Σ_{j=1}^{ν} p_j h_{ν-j}, h_0 = 1, with g^j = (rotation by jθ) · inversion^{jk}.
    For class functions the Haar average over SO(3) is (1/π) ∫_0^π f(θ) (1 - cos θ) dθ, which
    for even trigonometric polynomials equals the mean of f(θ)(1 - cos θ) over N equispaced
    θ ∈ [0, 2π) exactly when N exceeds the degree (≤ ν·lmax + L + 1). Parity is the average
    over k ∈ {0, 1}. All real irreps of O(3) are absolutely irreducible, so
    multiplicity = ⟨χ_{Sym^ν V}, χ_L⟩.
    """
    irreps_in, out = o3.Irreps(irreps), o3.Irrep(irrep_out)
    n_points = 4 * (order * irreps_in.lmax + out.l + 2)
    theta = 2 * math.pi * torch.arange(n_points, dtype=torch.float64) / n_points
    total = 0.0
    for inversion in (0, 1):
        power_sums = [None] + [
            o3_character(irreps_in, j * theta, (j * inversion) % 2) for j in range(1, order + 1)
        ]
        h = [torch.ones_like(theta)]
        for n in range(1, order + 1):
            h.append(sum(power_sums[j] * h[n - j] for j in range(1, n + 1)) / n)
        chi_out = out.p**inversion * so3_character(out.l, theta)
        total += 0.5 * float((h[order] * chi_out * (1 - torch.cos(theta))).mean())
    assert abs(total - round(total)) < 1e-9, total
    return round(total)


@pytest.mark.parametrize(
    ("irreps", "order", "expected"),
    [
        # derived by hand: Sym²(1o) = 0e + 2e, Sym³(1o) = 1o + 3o, Sym²(2e) = 0e + 2e + 4e
        ("1o", 2, {"0e": 1, "2e": 1, "1e": 0, "1o": 0}),
        ("1o", 3, {"1o": 1, "3o": 1, "0e": 0, "2e": 0, "1e": 0}),
        ("2e", 2, {"0e": 1, "2e": 1, "4e": 1, "1e": 0, "3e": 0}),
        # Sym²(0e + 1o) = Sym²(0e) + 0e⊗1o + Sym²(1o) = 0e + 1o + 0e + 2e
        ("0e+1o", 2, {"0e": 2, "1o": 1, "2e": 1, "1e": 0, "0o": 0}),
    ],
)
def test_character_count_on_known_decompositions(irreps, order, expected):
    for irrep_out, count in expected.items():
        assert symmetric_power_multiplicity(irreps, irrep_out, order) == count


# == helpers ==


def full_shape(u: torch.Tensor, irreps: str, irrep_out: str, order: int) -> torch.Tensor:
    """Restore the leading [2L+1] axis squeezed for scalars: ``[2L+1, D, …, D, K]``."""
    dim, out_dim = o3.Irreps(irreps).dim, o3.Irrep(irrep_out).dim
    return u.reshape(out_dim, *[dim] * order, u.shape[-1])


@contextlib.contextmanager
def default_float64() -> Iterator[None]:
    """Run e3nn's Wigner D in float64: it builds its so(3) generators in the default dtype, so
    under float32 D_from_matrix is only accurate to ~1e-7 even for float64 angles."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


# == properties of the basis ==


EQUIVARIANCE_CASES = (
    [
        (IRREPS, irrep_out, order)
        for order in (1, 2, 3)
        for irrep_out in ("0e", "1o", "2e", "3o", "1e", "0o")
    ]
    + [(BOTH_PARITIES, irrep_out, 2) for irrep_out in ("0e", "0o", "1o", "2e")]
    + [
        (BOTH_PARITIES, "1e", 3),
        ("2x0e+1o+1e", "1o", 3),  # two copies of one irrep are separate slots
    ]
)


@pytest.mark.parametrize(("irreps", "irrep_out", "order"), EQUIVARIANCE_CASES)
def test_equivariant_under_rotations_and_inversion(irreps, irrep_out, order):
    u = full_shape(symmetric_coupling_basis(irreps, irrep_out, order), irreps, irrep_out, order)
    rng = np.random.default_rng(order)
    for improper in (False, True):
        rotation = torch.from_numpy(random_rotation(rng, improper=improper))  # [3, 3] float64
        with default_float64():
            d_in = o3.Irreps(irreps).D_from_matrix(rotation)  # [D, D]
            d_out = o3.Irrep(irrep_out).D_from_matrix(rotation)  # [2L+1, 2L+1]
        # Σ_{i} U[m', i_1 … i_ν, k] Π_j D_in[i_j, j_j]: act on each input axis in turn
        lhs = u
        for axis in range(1, order + 1):
            lhs = torch.tensordot(lhs, d_in, dims=([axis], [0])).movedim(-1, axis)
        rhs = torch.tensordot(d_out, u, dims=([1], [0]))  # Σ_m D_L[m', m] U[m, …]
        torch.testing.assert_close(lhs, rhs, atol=ATOL, rtol=0)


@pytest.mark.parametrize("irrep_out", ["0e", "1o", "2e"])
def test_symmetric_in_input_indices(irrep_out):
    order = 3
    u = full_shape(symmetric_coupling_basis(IRREPS, irrep_out, order), IRREPS, irrep_out, order)
    for perm in itertools.permutations(range(order)):
        permuted = u.permute(0, *[1 + a for a in perm], order + 1)
        torch.testing.assert_close(permuted, u, atol=1e-14, rtol=0)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("irrep_out", ["0e", "1o", "2e", "1e", "0o"])
def test_number_of_columns_matches_character_count(irrep_out, order):
    u = symmetric_coupling_basis(IRREPS, irrep_out, order)
    assert u.shape[-1] == symmetric_power_multiplicity(IRREPS, irrep_out, order)


@pytest.mark.parametrize(
    ("irreps", "irrep_out", "order"),
    [(BOTH_PARITIES, "0o", 2), (BOTH_PARITIES, "1e", 3), ("2x0e+1o+1e", "1o", 3)],
)
def test_number_of_columns_other_irreps(irreps, irrep_out, order):
    u = symmetric_coupling_basis(irreps, irrep_out, order)
    assert u.shape[-1] == symmetric_power_multiplicity(irreps, irrep_out, order)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("irrep_out", ["0e", "1o", "2e", "1e"])
def test_columns_orthogonal_with_documented_norm(irrep_out, order):
    u = symmetric_coupling_basis(IRREPS, irrep_out, order)
    flat = u.reshape(math.prod(u.shape[:-1]), u.shape[-1])  # [(2L+1)·D^ν, K]
    expected = o3.Irrep(irrep_out).dim / math.factorial(order)
    gram = flat.T @ flat
    torch.testing.assert_close(gram, expected * torch.eye(u.shape[-1], dtype=u.dtype))


def test_deterministic_and_independent_of_default_dtype():
    first = symmetric_coupling_basis(IRREPS, "2e", 3)
    second = symmetric_coupling_basis(o3.Irreps(IRREPS), o3.Irrep("2e"), 3)
    assert torch.equal(first, second)
    with default_float64():
        third = symmetric_coupling_basis(IRREPS, "2e", 3)
    assert torch.equal(first, third)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("irrep_out", ["0e", "1o", "2e"])
def test_output_variance_of_order_one(irrep_out, order):
    """y_{m,k} = Σ U[m, i, k] x_{i_1} … x_{i_ν}, x ~ N(0, 1): Var y within a factor 10 of 1."""
    u = full_shape(symmetric_coupling_basis(IRREPS, irrep_out, order), IRREPS, irrep_out, order)
    out_dim, dim, k = u.shape[0], u.shape[1], u.shape[-1]
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(2000, dim, dtype=torch.float64, generator=generator)
    power = x
    for _ in range(order - 1):
        power = (power.unsqueeze(-1) * x.unsqueeze(1)).reshape(len(x), -1)  # [n, D^ν]
    weights = u.reshape(out_dim, dim**order, k).transpose(0, 1).reshape(dim**order, -1)
    y = (power @ weights).reshape(len(x), out_dim, k)
    variance = y.var(dim=0).mean(dim=0)  # [K], averaged over the 2L+1 components
    assert torch.all(variance > 0.1) and torch.all(variance < 10), variance
    if order <= 2:  # exact value 1 (see the docstring); sampling error ~ √(2/2000)·few
        torch.testing.assert_close(variance, torch.ones_like(variance), atol=0.25, rtol=0)


# == shapes, dtypes and errors ==


def test_shapes_scalar_squeezed_and_empty():
    assert symmetric_coupling_basis(IRREPS, "0e", 2).shape == (16, 16, 4)
    assert symmetric_coupling_basis(IRREPS, "2e", 2).shape == (5, 16, 16, 5)
    assert symmetric_coupling_basis(IRREPS, "0o", 2).shape == (16, 16, 0)
    assert symmetric_coupling_basis(IRREPS, "1e", 1).shape == (3, 16, 0)


def test_dtype_conversion():
    u64 = symmetric_coupling_basis(IRREPS, "1o", 2)
    u32 = symmetric_coupling_basis(IRREPS, "1o", 2, dtype=torch.float32)
    assert u32.dtype == torch.float32
    torch.testing.assert_close(u32, u64.float())


def test_invalid_arguments():
    with pytest.raises(ValueError, match="correlation"):
        symmetric_coupling_basis(IRREPS, "0e", 0)
    with pytest.raises(ValueError, match="irreps_in"):
        symmetric_coupling_basis("", "0e", 2)


def test_too_large_raises_naming_the_limit():
    with pytest.raises(NotImplementedError, match="MAX_ENTRIES") as info:
        symmetric_coupling_basis(BOTH_PARITIES, "0e", 6)  # 32^6 > MAX_ENTRIES: fails at once
    assert f"{MAX_ENTRIES:,}" in str(info.value)


@pytest.mark.slow
def test_correlation_four_lmax_three():
    for irrep_out in ("0e", "1o", "2e"):
        u = symmetric_coupling_basis(IRREPS, irrep_out, 4)
        assert u.shape[-1] == symmetric_power_multiplicity(IRREPS, irrep_out, 4)
