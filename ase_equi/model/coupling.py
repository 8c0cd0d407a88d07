"""Symmetric equivariant coupling tensors: generalised Clebsch–Gordan bases of the product block.

Let V = ``irreps_in`` (e.g. ``"0e + 1o + 2e + 3o"``, dimension D = 16, e3nn's real basis and
component order) and L^p = ``irrep_out``. This module builds a basis of the real tensors

.. math::

    U_{m, i_1 \\dots i_\\nu}, \\qquad m = 1 \\dots 2L+1,\\quad i_j = 1 \\dots D,

that are

* **equivariant**: :math:`\\sum_{i} U_{m', i_1 \\dots i_\\nu} D^V_{i_1 j_1}(g) \\cdots
  D^V_{i_\\nu j_\\nu}(g) = \\sum_m D^L_{m' m}(g)\\, U_{m, j_1 \\dots j_\\nu}` for every rotation
  and inversion g, i.e. :math:`x \\mapsto \\sum_i U_{\\cdot, i}\\, x_{i_1} \\cdots x_{i_\\nu}`
  maps V equivariantly to L^p;
* **symmetric** under every permutation of :math:`i_1 \\dots i_\\nu`.

These tensors form the space :math:`\\mathrm{Hom}_{O(3)}(\\mathrm{Sym}^\\nu V, L^p)`, whose
dimension K is the multiplicity of L^p in the symmetric power :math:`\\mathrm{Sym}^\\nu V`.

Construction
------------
V is a direct sum of irreps ("summands" a = 1 … n, each occupying a contiguous slice of the D
components). U splits into blocks :math:`U[:, a_1, \\dots, a_\\nu]`, one per ordered summand tuple.
Symmetry ties the block of a permuted tuple to the permuted block, so a symmetric U is fixed by
its blocks on the *sorted* tuples :math:`a_1 \\le \\dots \\le a_\\nu` (multisets), each of which
only has to be symmetric under the permutations that leave the tuple unchanged (its stabiliser,
the permutations among equal summands). Blocks of different multisets never overlap, so the bases
of the multisets are mutually orthogonal and are simply stacked.

For one multiset, the iterated Clebsch–Gordan couplings
:math:`((a_1 \\otimes a_2)_{l_2} \\otimes a_3)_{l_3} \\cdots \\to L` over all intermediate
:math:`l_2, l_3, \\dots` (from ``e3nn.o3.wigner_3j``) form an orthogonal basis of all equivariant
maps :math:`a_1 \\otimes \\dots \\otimes a_\\nu \\to L`; the parity is equivariant exactly when
:math:`p_{a_1} \\cdots p_{a_\\nu} = p`. Averaging each over the stabiliser projects it onto the
symmetric ones, and a Gram–Schmidt pass over the projected couplings, in their fixed enumeration
order, keeps an orthonormal basis of their span. Since the couplings are orthonormal and the
averaging is an orthogonal projection, the rank equals the trace of their Gram matrix, which
serves as an internal check.

All arithmetic is in float64 on the CPU; the result is converted to ``dtype`` at the end.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import torch
from e3nn import o3

__all__ = ["symmetric_coupling_basis", "MAX_ENTRIES"]

MAX_ENTRIES = 2**27
"""Largest dense coupling tensor built, in entries ((2L+1)·D^ν·K; 2**27 is 1 GiB in float64)."""

_RESIDUAL_TOLERANCE = 1e-8  # Gram–Schmidt: relative residual below which a coupling is dependent


def symmetric_coupling_basis(
    irreps_in: str | o3.Irreps,
    irrep_out: str | o3.Irrep,
    correlation: int,
    *,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Orthogonal basis of the symmetric equivariant maps :math:`\\mathrm{Sym}^\\nu V \\to L^p`.

    Parameters
    ----------
    irreps_in:
        V, e.g. ``"0e + 1o + 2e + 3o"`` or, with odd scalars, ``"0e+0o+1o+1e+2e+2o+3o+3e"``.
        Multiplicities are allowed: each copy of an irrep is a separate summand.
    irrep_out:
        The output irrep L^p, e.g. ``"0e"``, ``"1o"``, ``"2e"``.
    correlation:
        The order ν ≥ 1 of the product (number of input indices).
    dtype:
        dtype of the returned tensor (computed in float64 regardless).

    Returns
    -------
    torch.Tensor
        U of shape ``[2L+1, D, …, D, K]`` (ν times D), with the leading axis dropped when L = 0:
        ``[D, …, D, K]``. Column k is equivariant and symmetric in the ν input axes (see the
        module docstring). The columns are orthogonal in the Frobenius inner product with

        .. math::

            \\sum_{m, i} U_{m, i, k}\\, U_{m, i, k'} = \\frac{2L+1}{\\nu!}\\, \\delta_{kk'},

        which makes every row :math:`U_{m, \\cdot, k}` have squared norm :math:`1/\\nu!` (Schur's
        lemma forces equal row norms). For x with i.i.d. standard normal components the output
        :math:`y_{m,k} = \\sum_i U_{m,i,k} x_{i_1} \\cdots x_{i_\\nu}` then has variance
        exactly 1 for ν = 1, 2 and for every column whose partial traces
        :math:`\\sum_j U_{m, j, j, \\dots}` vanish (Isserlis' theorem: ν! full pairings each give
        the squared row norm); partial traces add a contribution of order 1 for ν ≥ 3 (we
        measure up to about 5.5 for ``"0e+1o+2e+3o"``, ν = 3).

        K is the multiplicity of L^p in :math:`\\mathrm{Sym}^\\nu V`; when it is zero the result
        has K = 0 columns (shape ``[…, 0]``) and the caller must skip that order.

        The result is deterministic: it depends only on the arguments (Gram–Schmidt over the
        couplings in a fixed order, no random numbers, no choice of basis inside a degenerate
        singular subspace), so it can differ between machines only by float64 rounding.

    Raises
    ------
    ValueError
        If ``correlation`` < 1 or ``irreps_in`` is empty.
    NotImplementedError
        If the dense tensor ``(2L+1)·D^ν·K`` would exceed :data:`MAX_ENTRIES` entries; checked
        first with K = 1 (before any work), then with the actual K. With ``"0e+1o+2e+3o"``
        every L ≤ 3 fits up to ν = 4; with both parities per l (D = 32), ν = 4 does not.

    Examples
    --------
    Sym²(0e + 1o) contains two scalars, x₀² and |x₁|²:

    >>> u = symmetric_coupling_basis("0e + 1o", "0e", 2)
    >>> u.shape
    torch.Size([4, 4, 2])
    >>> bool(torch.allclose(u, u.transpose(0, 1)))
    True

    One vector is linear in V, none is quadratic in a single 1o:

    >>> symmetric_coupling_basis("0e + 1o + 2e + 3o", "1o", 1).shape
    torch.Size([3, 16, 1])
    >>> symmetric_coupling_basis("1o", "1o", 2).shape
    torch.Size([3, 3, 3, 0])
    """
    irreps_in = o3.Irreps(irreps_in)
    irrep_out = o3.Irrep(irrep_out)
    if not isinstance(correlation, int) or correlation < 1:
        raise ValueError(f"correlation must be an integer >= 1, got {correlation!r}")
    if irreps_in.dim == 0:
        raise ValueError(f"irreps_in must contain at least one irrep, got {str(irreps_in)!r}")

    summands = [ir for mul, ir in irreps_in for _ in range(mul)]  # one entry per copy
    starts = [0]
    for ir in summands:
        starts.append(starts[-1] + ir.dim)
    dim, out_dim = irreps_in.dim, irrep_out.dim
    _check_size(irreps_in, irrep_out, correlation, 1)  # before any work: one column must fit

    # 1. an orthonormal basis [2L+1, d_1, …, d_ν, k] for every multiset of summands
    blocks: list[tuple[tuple[int, ...], torch.Tensor]] = []
    for multiset in itertools.combinations_with_replacement(range(len(summands)), correlation):
        basis = _multiset_basis(multiset, [summands[a] for a in multiset], irrep_out)
        if basis.shape[-1] > 0:
            blocks.append((multiset, basis))
    num_columns = sum(basis.shape[-1] for _, basis in blocks)

    _check_size(irreps_in, irrep_out, correlation, num_columns)

    # 2. place every multiset's basis in all its orderings, scaled to the documented norm
    u = torch.zeros(out_dim, *[dim] * correlation, num_columns, dtype=torch.float64)
    norm = math.sqrt(out_dim / math.factorial(correlation))
    column = 0
    for multiset, basis in blocks:
        k = basis.shape[-1]
        orderings = sorted(set(itertools.permutations(multiset)))
        # each ordering holds a copy of the block: Σ over copies of |block|² = norm²
        scaled = basis * (norm / math.sqrt(len(orderings)))
        for ordering in orderings:
            axes = _matching_axes(ordering, multiset)
            block = scaled.permute(0, *[1 + a for a in axes], correlation + 1)
            index = tuple(slice(starts[a], starts[a + 1]) for a in ordering)
            u[(slice(None),) + index + (slice(column, column + k),)] = block
        column += k

    if out_dim == 1:
        u = u.squeeze(0)  # [D, …, D, K], the MACE buffer layout for scalars
    return u.to(dtype)


def _check_size(irreps_in: o3.Irreps, irrep_out: o3.Irrep, correlation: int, columns: int) -> None:
    """Raise NotImplementedError if ``[2L+1, D, …, D, columns]`` exceeds :data:`MAX_ENTRIES`."""
    entries = irrep_out.dim * irreps_in.dim**correlation * columns
    if entries > MAX_ENTRIES:
        raise NotImplementedError(
            f"the coupling basis for {irreps_in} -> {irrep_out} at correlation {correlation} "
            f"would be a dense tensor of at least {entries:,} entries ({irrep_out.dim} x "
            f"{irreps_in.dim}^{correlation} x {columns} columns), above the limit "
            f"MAX_ENTRIES = {MAX_ENTRIES:,}; use fewer irreps, a smaller max_ell or a lower "
            "correlation"
        )


def _matching_axes(ordering: tuple[int, ...], multiset: tuple[int, ...]) -> list[int]:
    """π with ``ordering[i] == multiset[π[i]]``: axis i of the placed block is axis π[i]."""
    unused = list(range(len(multiset)))
    axes = []
    for summand in ordering:
        position = next(r for r in unused if multiset[r] == summand)
        unused.remove(position)
        axes.append(position)
    return axes


def _coupling_paths(irreps: list[o3.Irrep], l_out: int) -> Iterator[torch.Tensor]:
    """Iterated Clebsch–Gordan couplings ``[d_1, …, d_ν, 2L+1]`` of ``irreps`` to ``l_out``.

    Yields :math:`T_{m_1 \\dots m_\\nu M} = \\sum C^{l_1 a_2 l_2}_{m_1 m_2 n_2}
    C^{l_2 a_3 l_3}_{n_2 m_3 n_3} \\cdots C^{l_{\\nu-1} a_\\nu L}_{n_{\\nu-1} m_\\nu M}` for every
    sequence of intermediate l (l_1 = a_1, l_ν = L), in lexicographic order of that sequence.
    """
    wigner: dict[tuple[int, int, int], torch.Tensor] = {}

    def cg(l1: int, l2: int, l3: int) -> torch.Tensor:
        if (l1, l2, l3) not in wigner:
            wigner[l1, l2, l3] = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
        return wigner[l1, l2, l3]

    def extend(prefix: torch.Tensor, l_prev: int, depth: int) -> Iterator[torch.Tensor]:
        if depth == len(irreps):
            if l_prev == l_out:
                yield prefix
            return
        l_next = irreps[depth].l
        remaining = sum(ir.l for ir in irreps[depth + 1 :])
        for l_new in range(abs(l_prev - l_next), l_prev + l_next + 1):
            if abs(l_new - l_out) > remaining:
                continue  # the remaining factors cannot reach l_out
            # [..., n] x [n, m, M] -> [..., m, M]
            grown = torch.tensordot(prefix, cg(l_prev, l_next, l_new), dims=([-1], [0]))
            yield from extend(grown, l_new, depth + 1)

    first = torch.eye(irreps[0].dim, dtype=torch.float64)  # [d_1, 2 l_1 + 1]
    yield from extend(first, irreps[0].l, 1)


def _multiset_basis(
    multiset: tuple[int, ...], irreps: list[o3.Irrep], irrep_out: o3.Irrep
) -> torch.Tensor:
    """Orthonormal basis ``[2L+1, d_1, …, d_ν, k]`` of the equivariant block tensors on the
    sorted summand tuple ``multiset`` (with irreps ``irreps``) that are symmetric under its
    stabiliser, the permutations among equal summands. Two copies of the same irrep are different
    summands and are not exchanged.
    """
    shape = [irrep_out.dim] + [ir.dim for ir in irreps]
    if math.prod(ir.p for ir in irreps) != irrep_out.p:
        return torch.zeros(*shape, 0, dtype=torch.float64)

    paths = [path.movedim(-1, 0) / path.norm() for path in _coupling_paths(irreps, irrep_out.l)]
    if not paths:
        return torch.zeros(*shape, 0, dtype=torch.float64)
    symmetric = _symmetrise(torch.stack(paths), multiset)  # [n_paths, 2L+1, d_1, …, d_ν]
    stacked = symmetric.reshape(len(paths), -1)  # [n_paths, (2L+1)·Π d]
    # the couplings are orthonormal and the averaging an orthogonal projection P, so the
    # Gram matrix CᵀPC is a projection: its trace Σ|P c|² is the dimension of the span
    expected_rank = round(float((stacked * stacked).sum()))
    basis = _gram_schmidt(stacked)
    if basis.shape[0] != expected_rank:
        raise RuntimeError(
            f"coupling basis for {irreps} -> {irrep_out}: Gram–Schmidt kept {basis.shape[0]} "
            f"columns but the projected couplings span {expected_rank}; the rank tolerance "
            f"{_RESIDUAL_TOLERANCE} does not separate them"
        )
    return basis.T.reshape(*shape, basis.shape[0])


def _symmetrise(tensors: torch.Tensor, multiset: tuple[int, ...]) -> torch.Tensor:
    """Average ``tensors [n, 2L+1, d_1, …, d_ν]`` over the stabiliser of the summand tuple.

    The stabiliser of a sorted tuple is the product of the symmetric groups of its runs of
    equal summands. Each is averaged with the factorisation
    :math:`P_k = \\frac{1}{k}\\big(1 + \\sum_{i<k} \\tau_{ik}\\big) P_{k-1}` (τ a transposition of
    axes, from the coset decomposition :math:`S_k = \\bigsqcup_i \\tau_{ik} S_{k-1}`), which
    costs ν(ν-1)/2 transpositions instead of ν! permutations.
    """
    run_start = 0
    for k in range(1, len(multiset) + 1):
        if k < len(multiset) and multiset[k] == multiset[run_start]:
            continue
        for top in range(run_start + 1, k):  # the run is axes run_start … k-1
            total = tensors.clone()
            for i in range(run_start, top):
                total = total + tensors.transpose(2 + i, 2 + top)
            tensors = total / (top - run_start + 1)
        run_start = k
    return tensors


def _gram_schmidt(vectors: torch.Tensor) -> torch.Tensor:
    """Orthonormalise rows in order, dropping those within the span of the earlier ones.

    ``vectors [n, N]`` with rows of norm ≤ 1 → ``[r, N]``; twice-repeated classical
    Gram–Schmidt keeps rows orthogonal to float64 precision. A row is dropped when its residual
    norm is below ``_RESIDUAL_TOLERANCE``.
    """
    basis = vectors.new_zeros(vectors.shape)  # rows 0 … rank-1 filled in order
    rank = 0
    for v in vectors:
        q = basis[:rank]  # [r, N]
        residual = v - q.T @ (q @ v)
        residual = residual - q.T @ (q @ residual)
        size = residual.norm()
        if size > _RESIDUAL_TOLERANCE:
            basis[rank] = residual / size
            rank += 1
    return basis[:rank]
