r"""Product basis: symmetric contraction of node features up to body order ν + 1.

For every node b with element z_b, channel c and output irrep L (component m), the
contraction of the node's messages :math:`A_{bc,i}` (i runs over the D components of the
message irreps, e.g. D = 16 for ``0e + 1o + 2e + 3o``) is

.. math::

    B_{bc,m} = \\sum_{\\nu=1}^{N} \\sum_{k} w^{(\\nu)}_{z_b k c}
               \\sum_{i_1 \\dots i_\\nu} U^{(\\nu)}_{m, i_1 \\dots i_\\nu, k}\\,
               A_{bc,i_1} \\cdots A_{bc,i_\\nu},

where N is the ``correlation`` order, the columns k of :math:`U^{(\\nu)}` are equivariant
coupling tensors (generalised Clebsch–Gordan coefficients) and :math:`w^{(\\nu)}` are learnable,
element-dependent weights. Since :math:`A^{\\otimes \\nu}` is symmetric, only the symmetric part
of U contributes; we store it *folded* onto the sorted multi-indices
:math:`i_1 \\le \\dots \\le i_\\nu` (monomials), ``coupling_ν [n_monomials, 2L+1, K]``, so a
file stores each coupling once.

Evaluation (Horner scheme, per element). For the elements present, the weights are first
contracted with the symmetric couplings, :math:`T^{(\nu)}_{z, c, m, i_1 \dots i_\nu} =
\sum_k U^{(\nu)}_{m, i_1 \dots i_\nu, k} w^{(\nu)}_{z k c}`; then, for the nodes of each
element, the features are contracted one index at a time from the highest order down,
:math:`B = ((T^{(N)} A + T^{(N-1)}) A + \dots + T^{(1)}) A`, with batched matrix products and no
gathers over tensor components.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from typing import cast

import torch
from e3nn import o3

from ..graph.layout import ElementGroups
from .chunking import node_ranges, run_chunk
from .coupling import symmetric_coupling_basis

CONTRACTED_CACHE_ELEMENTS = 16
"""Elements whose precontracted product weights a contraction keeps between calls (least
recently used first out; a structure with more elements keeps all of its own)."""


FEW_NODES = 32
"""Up to this many nodes of one element, a contraction puts the nodes before the tensor
components (:meth:`SymmetricContraction._contract_few`): the faster layout for small
molecules; more nodes keep the layout with the nodes last."""


def monomial_indices(dim: int, order: int) -> torch.Tensor:
    """Sorted multi-indices ``i_1 ≤ … ≤ i_ν`` in lexicographic order, ``[n_monomials, ν]``.

    Examples
    --------
    >>> monomial_indices(3, 2).tolist()
    [[0, 0], [0, 1], [0, 2], [1, 1], [1, 2], [2, 2]]
    """
    rows = list(itertools.combinations_with_replacement(range(dim), order))
    return torch.tensor(rows, dtype=torch.long).reshape(len(rows), order)


def monomial_map(dim: int, order: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Monomial and 1/multiplicity of every index tuple ``(i_1 … i_ν)``, each ``[D^ν]``.

    The tuples run in row-major order. ``U_sym[i] = Ũ[monomial(i)] / multiplicity`` is the
    symmetric tensor whose fold is Ũ.
    """
    grids = torch.cartesian_prod(*[torch.arange(dim)] * order).reshape(-1, order)
    keys = torch.sort(grids, dim=1).values
    weights = dim ** torch.arange(order - 1, -1, -1)
    mono_codes = (monomial_indices(dim, order) * weights).sum(1)
    target = torch.searchsorted(mono_codes, (keys * weights).sum(1))
    counts = torch.zeros(mono_codes.numel(), dtype=torch.float64).index_add_(
        0, target, torch.ones(target.numel(), dtype=torch.float64)
    )
    return target, 1.0 / counts[target]


def fold_symmetric(coupling: torch.Tensor, dim: int, order: int) -> torch.Tensor:
    """Fold a coupling tensor onto monomials: ``[M, D, …, D, K] -> [n_monomials, M, K]``.

    Entry p of the result is the sum of ``coupling[:, i_1, …, i_ν, :]`` over all index tuples
    that are permutations of monomial p, so that Σ_i U_i x_{i_1}…x_{i_ν} = Σ_p Ũ_p x^p.
    """
    m, k = coupling.shape[0], coupling.shape[-1]
    flat = coupling.reshape(m, dim**order, k)
    target, _ = monomial_map(dim, order)
    folded = torch.zeros(math.comb(dim + order - 1, order), m, k, dtype=coupling.dtype)
    return folded.index_add_(0, target, flat.transpose(0, 1))


class SymmetricContraction(torch.nn.Module):
    """Contraction for one output irrep L: ``A [n, C, D] -> B [n, C·(2L+1)]`` (e3nn layout).

    Parameters
    ----------
    coupling_irreps:
        One copy of each message irrep, e.g. ``"0e+1o+2e+3o"`` (D = its dimension).
    irrep_out:
        Output irrep L.
    correlation:
        Highest order N of the product.
    num_elements, channels:
        Shape of the element-dependent weights ``weights[ν-1] [n_elements, K_ν, channels]``.
    init_coupling:
        Compute the coupling basis now (True) or leave empty buffers to be filled, with their
        shapes, by ``load_state_dict`` (model files and imported MACE files carry them).
    """

    def __init__(
        self,
        coupling_irreps: o3.Irreps,
        irrep_out: o3.Irrep,
        correlation: int,
        num_elements: int,
        channels: int,
        *,
        init_coupling: bool = True,
    ) -> None:
        super().__init__()
        self.coupling_irreps = o3.Irreps(coupling_irreps)
        self.irrep_out = o3.Irrep(irrep_out)
        self.correlation = correlation
        self.dim = self.coupling_irreps.dim
        self.weights = torch.nn.ParameterList()
        for order in range(1, correlation + 1):
            n_mono = math.comb(self.dim + order - 1, order)
            if init_coupling:
                u = symmetric_coupling_basis(self.coupling_irreps, self.irrep_out, order)
                u = u.reshape(self.irrep_out.dim, *[self.dim] * order, u.shape[-1])
                folded = fold_symmetric(u, self.dim, order)
            else:
                folded = torch.zeros(n_mono, self.irrep_out.dim, 0, dtype=torch.float64)
            k = folded.shape[-1]
            self.register_buffer(f"coupling_{order}", folded)
            target, inverse_multiplicity = monomial_map(self.dim, order)
            self.register_buffer(f"unfold_index_{order}", target, persistent=False)
            self.register_buffer(f"unfold_scale_{order}", inverse_multiplicity, persistent=False)
            self.weights.append(
                torch.nn.Parameter(torch.randn(num_elements, k, channels) / max(k, 1))
            )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Coupling bases from files may have another number K of columns than ours (MACE keeps
        # linearly dependent coupling paths): adopt the stored shapes before copying.
        for order in range(1, self.correlation + 1):
            key = f"{prefix}coupling_{order}"
            if key in state_dict:
                setattr(self, f"coupling_{order}", torch.empty_like(state_dict[key]))
            wkey = f"{prefix}weights.{order - 1}"
            if wkey in state_dict and state_dict[wkey].shape != self.weights[order - 1].shape:
                old = self.weights[order - 1]
                self.weights[order - 1] = torch.nn.Parameter(
                    torch.empty(state_dict[wkey].shape, dtype=old.dtype, device=old.device)
                )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def symmetric_couplings(self, order: int) -> torch.Tensor:
        """Unfolded symmetric coupling ``[M, D^ν, K]`` of one order."""
        folded = getattr(self, f"coupling_{order}")  # [n_mono, M, K]
        index = getattr(self, f"unfold_index_{order}")
        scale = getattr(self, f"unfold_scale_{order}").to(folded.dtype)
        return (folded[index] * scale[:, None, None]).transpose(0, 1)  # [M, D^ν, K]

    def contracted_weights(
        self, dtype: torch.dtype, elements: list[int]
    ) -> list[list[torch.Tensor | None]]:
        """``T_ν[z] = Σ_k U_ν[.., k] w_ν[z, k, c]`` of the listed element indices only: for each
        element of ``elements``, one ``[C, M·D^ν]`` tensor per order ν (None for an order
        without coupling paths).

        Only the elements asked for are contracted: a structure of two elements costs two
        elements' contractions, whatever the model's number of elements (an 89-element model
        would otherwise hold 89 elements' tensors). With weights that need no gradient (a
        calculator), each element's tensors are computed once and kept until a weight changes
        (in place or replaced), at most :data:`CONTRACTED_CACHE_ELEMENTS` elements (or the
        elements of the current structure, if more) per contraction, least recently used
        first out; with trainable weights they are recomputed at every call, so that gradients
        reach the weights.
        """
        frozen = not any(w.requires_grad for w in self.weights)
        tensors = [
            *self.weights,
            *(getattr(self, f"coupling_{o}") for o in range(1, self.correlation + 1)),
        ]
        key = (dtype, *((id(t), t._version, t.device) for t in tensors))
        cache = self.__dict__.get("_contracted_cache")
        if not frozen or cache is None or cache[0] != key:
            cache = (key, OrderedDict())
            if frozen:
                self.__dict__["_contracted_cache"] = cache
            else:
                self.__dict__.pop("_contracted_cache", None)
        per_element: OrderedDict[int, list[torch.Tensor | None]] = cache[1]
        missing = [z for z in elements if z not in per_element]
        if missing:
            for z, contracted in zip(missing, self._contract_weights(dtype, missing), strict=True):
                per_element[z] = contracted
        for z in elements:
            per_element.move_to_end(z)
        while len(per_element) > max(CONTRACTED_CACHE_ELEMENTS, len(elements)):
            per_element.popitem(last=False)
        return [per_element[z] for z in elements]

    def _contract_weights(
        self, dtype: torch.dtype, elements: list[int]
    ) -> list[list[torch.Tensor | None]]:
        """The contractions of :meth:`contracted_weights` for ``elements``, computed now."""
        index = torch.tensor(elements, dtype=torch.long, device=self.weights[0].device)
        orders: list[torch.Tensor | None] = []
        for order in range(1, self.correlation + 1):
            u = self.symmetric_couplings(order).to(dtype)
            if u.shape[-1] == 0:
                orders.append(None)
                continue
            w = self.weights[order - 1].index_select(0, index)  # [Z_present, K, C]
            t = torch.matmul(u.reshape(-1, u.shape[-1]), w)  # [Z_present, M·D^ν, C]
            # contiguous: bmm would otherwise copy every channel's matrix, at every call
            orders.append(t.transpose(1, 2).contiguous())  # [Z_present, C, M·D^ν]
        return [[None if t is None else t[k] for t in orders] for k in range(len(elements))]

    def bytes_per_node(self, itemsize: int) -> int:
        """Size of the largest intermediate per node, bytes: ``C · M · D^(N-1)``."""
        return (
            self.weights[0].shape[-1]
            * self.irrep_out.dim
            * self.dim ** (self.correlation - 1)
            * itemsize
        )

    def forward(
        self, features: torch.Tensor, groups: ElementGroups, *, chunk_nodes: int | None = None
    ) -> torch.Tensor:
        """``features [n, C, D]``, nodes grouped by element → ``[n, C·(2L+1)]``.

        ``chunk_nodes``: contract at most that many nodes at a time, recomputing them in the
        backward pass (see :func:`~ase_equi.model.chunking.run_chunk`); None: all at once.
        """
        n, channels, _ = features.shape
        m = self.irrep_out.dim
        out = features.new_zeros(n, channels, m)
        contracted = self.contracted_weights(features.dtype, groups.present)
        for position, nodes in enumerate(groups.nodes):  # position in groups.present
            if nodes is not None:
                x = features.index_select(0, nodes)  # [n_z, C, D]
            else:
                x = features  # all nodes of one element
            tensors = contracted[position]
            if all(t is None for t in tensors):
                continue
            if chunk_nodes is None or x.shape[0] <= chunk_nodes:
                b = self._contract(x, *tensors)
            else:
                b = torch.cat(
                    [
                        run_chunk(self._contract, x[i:j], *tensors)
                        for i, j in node_ranges(x.shape[0], chunk_nodes)
                    ]
                )
            out = b if nodes is None else out.index_copy(0, nodes, b)
        return out.reshape(n, channels * m)

    def _contract(self, x: torch.Tensor, *tensors: torch.Tensor | None) -> torch.Tensor:
        """Horner evaluation for nodes of one element: ``x [n_z, C, D]``, ``tensors[ν-1]
        [C, M·D^ν]`` (or None) → ``B [n_z, C, M]``."""
        n_z, channels, dim = x.shape
        if n_z <= FEW_NODES:
            return self._contract_few(x, *tensors)
        xt = x.permute(1, 2, 0).contiguous()  # [C, D, n_z]
        acc = None  # [C, M·D^(ν-1), n_z] once order ν is contracted
        for order in range(self.correlation, 0, -1):
            t = tensors[order - 1]
            if acc is None:
                if t is None:
                    continue
                # [C, M·D^(ν-1), D] @ [C, D, n_z]: a batched matrix product over channels
                acc = torch.bmm(t.reshape(channels, -1, dim), xt)
                continue
            if t is not None:
                acc = acc + t.unsqueeze(-1)  # [C, M·D^ν, n_z]
            acc = (acc.reshape(channels, -1, dim, n_z) * xt.unsqueeze(1)).sum(2)
        assert acc is not None
        return acc.reshape(channels, self.irrep_out.dim, n_z).permute(2, 0, 1)  # [n_z, C, M]

    def _contract_few(self, x: torch.Tensor, *tensors: torch.Tensor | None) -> torch.Tensor:
        """:meth:`_contract` with the nodes before the tensor components: ``acc [C, n_z,
        M·D^(ν-1)]``. The first product, ``x [C, n_z, D] @ T [C, D, M·D^(ν-1)]``, then has the
        long axis as the matrix product's output columns rather than n_z, which for a few nodes
        is the faster order, forward and backward (``benchmarks/small_molecules.py``)."""
        n_z, channels, dim = x.shape
        xc = x.transpose(0, 1).contiguous()  # [C, n_z, D]
        acc = None  # [C, n_z, M·D^(ν-1)] once order ν is contracted
        for order in range(self.correlation, 0, -1):
            t = tensors[order - 1]
            if acc is None:
                if t is None:
                    continue
                acc = torch.bmm(xc, t.reshape(channels, -1, dim).transpose(1, 2))
                continue
            if t is not None:
                acc = acc + t.unsqueeze(1)  # [C, n_z, M·D^ν]
            acc = (acc.reshape(channels, n_z, -1, dim) * xc.unsqueeze(2)).sum(-1)
        assert acc is not None
        return acc.reshape(channels, n_z, self.irrep_out.dim).transpose(0, 1)  # [n_z, C, M]


class ProductBasis(torch.nn.Module):
    """Symmetric contractions for every irrep of ``hidden_irreps``, a linear map, and the
    element-dependent self-connection (residual) added back.

    ``forward(messages [n, C, D], sc [n, hidden.dim] | None, groups)`` →
    node features ``[n, hidden_irreps.dim]``, with the nodes grouped by element
    (:class:`ElementGroups`).
    """

    def __init__(
        self,
        message_irreps: o3.Irreps,
        hidden_irreps: o3.Irreps,
        correlation: int,
        num_elements: int,
        *,
        use_sc: bool = True,
        init_coupling: bool = True,
    ) -> None:
        super().__init__()
        message_irreps, hidden_irreps = o3.Irreps(message_irreps), o3.Irreps(hidden_irreps)
        coupling_irreps = o3.Irreps([ir for _, ir in message_irreps])
        channels = message_irreps[0].mul
        self.use_sc = use_sc
        self.contractions = torch.nn.ModuleList(
            SymmetricContraction(
                coupling_irreps,
                ir,
                correlation,
                num_elements,
                channels,
                init_coupling=init_coupling,
            )
            for _, ir in hidden_irreps
        )
        self.linear = o3.Linear(hidden_irreps, hidden_irreps)

    def bytes_per_node(self, itemsize: int) -> int:
        """The largest per-node intermediate of the contractions, bytes."""
        contractions = cast("list[SymmetricContraction]", list(self.contractions))
        return max(c.bytes_per_node(itemsize) for c in contractions)

    def forward(
        self,
        messages: torch.Tensor,
        sc: torch.Tensor | None,
        groups: ElementGroups,
        *,
        chunk_nodes: int | None = None,
    ) -> torch.Tensor:
        b = torch.cat(
            [c(messages, groups, chunk_nodes=chunk_nodes) for c in self.contractions], dim=-1
        )
        out = self.linear(b)
        if self.use_sc and sc is not None:
            out = out + sc
        return out
