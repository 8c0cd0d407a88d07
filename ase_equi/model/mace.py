"""The MACE architecture: element embedding → interactions and products → readouts → energy.

The total energy of a structure is a sum of per-atom energies

.. math::

    E = \\sum_i \\Big( E0_{z_i} + s \\sum_t E_i^{(t)} + \\mu \\Big),

with the per-element reference energies E0, the readout energies of every layer t, and the
scale s and shift μ of the interaction energy (Batatia et al., NeurIPS 2022, arXiv:2206.07697).

The module tree (``node_embedding``, ``interactions[t]``, ``products[t]``, ``readouts[t]``)
mirrors mace-torch's ``ScaleShiftMACE`` with ``RealAgnostic(Residual)InteractionBlock`` layers so
that a MACE file maps onto it one parameter to one parameter (see ``io/mace_import.py``).
"""

from __future__ import annotations

from typing import cast

import torch
from e3nn import o3

from ..graph.layout import ElementGroups, NeighbourLayout
from .config import ModelConfig
from .density_interaction import DensityInteractionBlock
from .distance_transform import AgnesiTransform
from .interaction import InteractionBlock, channelwise_instructions
from .nonlinear_interaction import NonLinearInteractionBlock
from .product import ProductBasis
from .radial import RadialEmbedding
from .readout import make_readout, make_readouts
from .spherical import edge_spherical_harmonics
from .tensor_product import ChannelwiseTensorProduct
from .zbl import ZBLRepulsion


class ElementEmbedding(torch.nn.Module):
    """One-hot element vector → scalar channels, ``[n_nodes, n_elements] -> [n_nodes, C]``."""

    def __init__(self, num_elements: int, channels: int) -> None:
        super().__init__()
        self.linear = o3.Linear(o3.Irreps(f"{num_elements}x0e"), o3.Irreps(f"{channels}x0e"))

    def forward(self, node_onehot: torch.Tensor) -> torch.Tensor:
        return self.linear(node_onehot)


def interaction_block(
    config: ModelConfig,
    t: int,
    node_irreps: o3.Irreps,
    out_irreps: o3.Irreps,
    sh_irreps: o3.Irreps,
    message_irreps: o3.Irreps,
) -> torch.nn.Module:
    """Layer ``t``'s interaction block, of the family the config names."""
    block = _block(config, t, node_irreps, out_irreps, sh_irreps, message_irreps)
    if config.wigner_float32:  # the same tensor product with the file's rounded symbols
        tp = cast("ChannelwiseTensorProduct", block.conv_tp)
        mid, instructions = channelwise_instructions(tp.irreps_nodes, sh_irreps, message_irreps)
        block.conv_tp = ChannelwiseTensorProduct(
            tp.irreps_nodes, sh_irreps, mid, instructions, wigner_float32=True
        )
    return block


def _block(
    config: ModelConfig,
    t: int,
    node_irreps: o3.Irreps,
    out_irreps: o3.Irreps,
    sh_irreps: o3.Irreps,
    message_irreps: o3.Irreps,
) -> torch.nn.Module:
    num_elements = len(config.elements)
    if config.nonlinear_interaction:
        edge_irreps = node_irreps  # MACE's default: the tensor product sees h itself
        if config.edge_channels is not None and (t > 0 or config.edge_irreps_first):
            ells = range(config.max_L + 1) if t > 0 else range(1)
            edge_irreps = o3.Irreps([(config.edge_channels, (l, (-1) ** l)) for l in ells])
        return NonLinearInteractionBlock(
            node_irreps,
            edge_irreps,
            sh_irreps,
            config.num_bessel,
            message_irreps,
            out_irreps,
            num_elements,
            config.radial_mlp,
            apply_cutoff=config.apply_cutoff,
        )
    block = DensityInteractionBlock if config.density_normalisation else InteractionBlock
    return block(
        node_irreps,
        sh_irreps,
        config.num_bessel,
        message_irreps,
        out_irreps,
        num_elements,
        config.avg_num_neighbors,
        config.radial_mlp,
        residual=config.residual_first or t > 0,
    )


def _product_basis(
    config: ModelConfig, t: int, layer: tuple[o3.Irreps, ...], init_coupling: bool
) -> ProductBasis:
    """Layer ``t``'s symmetric contraction; ``layer`` = the irreps (nodes in, nodes out,
    spherical harmonics, messages) of the layer's interaction block."""
    _, out_irreps, _, message_irreps = layer
    return ProductBasis(
        message_irreps,
        out_irreps,
        cast("tuple[int, ...]", config.correlation)[t],  # a tuple once validated
        1 if config.agnostic_product else len(config.elements),
        use_sc=config.residual_first or t > 0,
        init_coupling=init_coupling,
    )


class MaceModel(torch.nn.Module):
    """Per-atom and total energies of a batch of graphs.

    Parameters
    ----------
    config:
        Architecture and constants.
    init_coupling:
        Compute the symmetric-contraction coupling bases (True for a new model); False when the
        buffers will come from a file through ``load_state_dict``.

    Examples
    --------
    >>> cfg = ModelConfig(elements=(1, 8), reference_energies=(-13.6, -2041.0), channels=4,
    ...                   max_ell=1, correlation=2, radial_mlp=(8,), r_max=3.0)
    >>> model = MaceModel(cfg).double()
    >>> vec = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]], dtype=torch.float64)
    >>> out = model(torch.tensor([0, 1]), vec, torch.tensor([0, 1]), torch.tensor([1, 0]),
    ...             torch.tensor([0, 0]), 1)
    >>> out["node_energies"].shape, out["energy"].shape
    (torch.Size([2]), torch.Size([1]))
    """

    # one head: [n_elements], [], []; H >= 2 heads (config.heads): [H, n_elements], [H], [H]
    reference_energies: torch.Tensor  # E0, eV (float64)
    scale: torch.Tensor  # (float64)
    shift: torch.Tensor  # eV (float64)
    element_numbers: torch.Tensor  # [n_elements] atomic numbers (int64, not saved)

    def __init__(self, config: ModelConfig, *, init_coupling: bool = True) -> None:
        super().__init__()
        if config.reference_energies is None:
            raise ValueError(
                "ModelConfig.reference_energies is None (not yet fitted): give one E0 (eV) per "
                "element, or let train() fit them from the data before the model is built"
            )
        self.config = config
        num_elements = len(config.elements)
        c = config.channels
        hidden = o3.Irreps(config.hidden_irreps)
        scalars = o3.Irreps(f"{c}x0e")
        sh_irreps = o3.Irreps.spherical_harmonics(config.max_ell)
        message_irreps = (sh_irreps * c).sort()[0].simplify()
        n_heads = self._add_head_constants(config)
        self.node_embedding = ElementEmbedding(num_elements, c)
        self.radial_embedding = RadialEmbedding(config.r_max, config.num_bessel, config.envelope_p)
        self.spherical_harmonics = edge_spherical_harmonics(config.max_ell)
        self._add_pair_terms(config)

        self.interactions = torch.nn.ModuleList()
        self.products = torch.nn.ModuleList()
        self.readouts = torch.nn.ModuleList()
        layer_irreps = []
        node_irreps = scalars
        for t in range(config.num_interactions):
            last = t == config.num_interactions - 1
            out_irreps = scalars if last else hidden
            layer = (node_irreps, out_irreps, sh_irreps, message_irreps)
            self.interactions.append(interaction_block(config, t, *layer))
            self.products.append(_product_basis(config, t, layer, init_coupling))
            # built layer by layer, in the order of the random draws of a model without heads
            self.readouts.append(make_readout(out_irreps, config.readout_hidden, last=last))
            layer_irreps.append(layer)
            node_irreps = out_irreps
        # heads 1.. of a multi-head model: their own readouts (head 0 uses ``readouts``) and
        # their own copies of the last ``config.head_layers`` interactions and products
        self.head_readouts = torch.nn.ModuleList(
            torch.nn.ModuleList(
                make_readouts([out for _, out, _, _ in layer_irreps], config.readout_hidden)
            )
            for _ in range(1, n_heads)
        )
        own = range(config.num_interactions - config.head_layers, config.num_interactions)
        self.head_interactions = torch.nn.ModuleList(
            torch.nn.ModuleList(interaction_block(config, t, *layer_irreps[t]) for t in own)
            for _ in range(1, n_heads)
        )
        self.head_products = torch.nn.ModuleList(
            torch.nn.ModuleList(
                _product_basis(config, t, layer_irreps[t], init_coupling) for t in own
            )
            for _ in range(1, n_heads)
        )

    def _add_head_constants(self, config: ModelConfig) -> int:
        """E0, scale and shift buffers (one set per head with two or more heads, each starting
        from the config's) and the active head; returns the number of heads (0: one head)."""
        #: index of the head that forward() evaluates (in ``config.heads``; 0 with one head)
        self.active_head = 0
        n_heads = len(config.heads) if len(config.heads) > 1 else 0
        for name, value in (
            ("reference_energies", config.reference_energies),
            ("scale", config.scale),
            ("shift", config.shift),
        ):
            tensor = torch.tensor(value, dtype=torch.float64)
            if n_heads:
                tensor = tensor.expand(n_heads, *tensor.shape).clone()
            self.register_buffer(name, tensor)
        return n_heads

    def readouts_of(self, head: int) -> torch.nn.ModuleList:
        """The per-layer readouts of head ``head`` (index in ``config.heads``)."""
        return cast("torch.nn.ModuleList", self.head_readouts[head - 1] if head else self.readouts)

    def layers_of(self, head: int) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
        """(interaction, product) of every layer as head ``head`` evaluates them: the shared
        ones, with the head's own copies of the last ``config.head_layers`` for head ≥ 1."""
        layers = list(zip(self.interactions, self.products, strict=True))
        k = self.config.head_layers
        if head and k:
            own_interactions = cast("torch.nn.ModuleList", self.head_interactions[head - 1])
            own_products = cast("torch.nn.ModuleList", self.head_products[head - 1])
            layers[len(layers) - k :] = list(zip(own_interactions, own_products, strict=True))
        return layers

    def _add_pair_terms(self, config: ModelConfig) -> None:
        """The element-pair terms: Agnesi transform and ZBL repulsion (None when not used)."""
        # atomic number of each element, for the pair terms (not saved: the config holds them)
        self.register_buffer("element_numbers", torch.tensor(config.elements), persistent=False)
        self.distance_transform = (
            AgnesiTransform() if config.distance_transform == "Agnesi" else None
        )
        self.pair_repulsion = ZBLRepulsion(config.envelope_p) if config.pair_repulsion else None

    def chunk_nodes(
        self,
        num_nodes: int,
        max_neighbours: int,
        max_chunk_bytes: int | None,
        dtype: torch.dtype,
    ) -> int | None:
        """Receivers per chunk, or None for no chunking.

        None when ``max_chunk_bytes`` is None or the intermediates of all ``num_nodes`` fit in
        it. Otherwise chunks of a quarter of that size (at least one receiver): once the
        recomputation is paid for, smaller chunks add little time and lower the peak memory
        (measured in the README's Performance section, "Large structures", and
        ``benchmarks/results/``).
        """
        if max_chunk_bytes is None:
            return None
        itemsize = torch.empty((), dtype=dtype).element_size()
        interactions = cast("list[InteractionBlock]", list(self.interactions))
        products = cast("list[ProductBasis]", list(self.products))
        per_node = max(
            max(i.conv_tp.bytes_per_receiver(max_neighbours, itemsize) for i in interactions),
            max(p.bytes_per_node(itemsize) for p in products),
        )
        if num_nodes * per_node <= max_chunk_bytes:
            return None
        return max(1, int(max_chunk_bytes) // 4 // max(per_node, 1))

    def forward(
        self,
        element_index: torch.Tensor,
        edge_vectors: torch.Tensor,
        senders: torch.Tensor,
        receivers: torch.Tensor,
        batch: torch.Tensor,
        num_graphs: int,
        *,
        layout: NeighbourLayout | None = None,
        groups: ElementGroups | None = None,
        max_chunk_bytes: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Energies of a batch.

        Parameters
        ----------
        element_index:
            ``[n_nodes]`` index of each atom's element in ``config.elements``.
        edge_vectors:
            ``[n_edges, 3]`` r_receiver − r_sender (+ lattice shift), Å.
        senders, receivers:
            ``[n_edges]`` node indices; messages flow sender → receiver.
        batch:
            ``[n_nodes]`` graph index of each node.
        num_graphs:
            Number of graphs G in the batch.
        layout, groups:
            The edges arranged per receiver and the nodes grouped by element, when the caller
            keeps them between calls on the same graph (a graph resident on the device);
            built here otherwise. With both given, the call reads nothing back to the host.
        max_chunk_bytes:
            Bound on the largest intermediates (the per-receiver products of the messages and
            of the symmetric contraction): a graph whose intermediates would be larger is
            evaluated in chunks of receivers, a quarter of this size each, that are recomputed
            in the backward pass (:meth:`chunk_nodes`). None: no bound, no recomputation.

        Returns
        -------
        dict with ``node_energies [n_nodes]`` and ``energy [G]`` (eV).
        """
        num_elements = len(self.config.elements)
        onehot = torch.nn.functional.one_hot(element_index, num_elements).to(edge_vectors.dtype)
        edge_lengths = torch.linalg.norm(edge_vectors, dim=-1, keepdim=True)  # [n_edges, 1]
        edge_sh = self.spherical_harmonics(edge_vectors)
        numbers = self.element_numbers[element_index]  # [n_nodes] atomic numbers
        basis_lengths = None
        if self.distance_transform is not None:
            basis_lengths = self.distance_transform(
                edge_lengths, numbers[senders], numbers[receivers]
            )
        if self.config.apply_cutoff:
            edge_radial = self.radial_embedding(edge_lengths, basis_lengths)  # [n_edges, B]
        else:  # the envelope multiplies the non-linear blocks' outputs instead
            edge_radial = self.radial_embedding.bessel(
                edge_lengths if basis_lengths is None else basis_lengths
            )

        h = self.node_embedding(onehot)
        # per receiver, in padded slots: shared by all layers, and the small edge features are
        # padded once here (not the large per-layer tensor-product weights)
        if layout is None:
            layout = NeighbourLayout(senders, receivers, element_index.shape[0])
        if groups is None:
            groups = ElementGroups(element_index)
        edge_sh, edge_radial = layout.pad(edge_sh), layout.pad(edge_radial)
        extra = {}
        if self.config.nonlinear_interaction:  # envelope (or 1) per slot, 0 in empty slots
            cutoff = self.radial_embedding.envelope(edge_lengths)
            extra["edge_cutoff"] = layout.pad(
                torch.ones_like(cutoff) if self.config.apply_cutoff else cutoff
            )
        product_groups = groups
        if self.config.agnostic_product:  # one weight set: every node in one group
            product_groups = ElementGroups(element_index.new_zeros(1))
        chunk = self.chunk_nodes(
            element_index.shape[0], layout.max_neighbours, max_chunk_bytes, edge_vectors.dtype
        )
        readout_energy = edge_vectors.new_zeros(element_index.shape[0])
        if self.pair_repulsion is not None:  # before scale and shift, as in MACE
            readout_energy = readout_energy + self.pair_repulsion(
                edge_lengths, numbers[senders], numbers[receivers], receivers, len(numbers)
            )
        head = self.active_head
        readouts = self.readouts_of(head)
        for (interaction, product), readout in zip(self.layers_of(head), readouts, strict=True):
            messages, sc = interaction(
                onehot, h, edge_sh, edge_radial, layout, chunk_nodes=chunk, **extra
            )
            h = product(messages, sc, product_groups, chunk_nodes=chunk)
            readout_energy = readout_energy + readout(h)

        e0, scale, shift = self.reference_energies, self.scale, self.shift
        if e0.dim() == 2:  # several heads: the active head's constants
            e0, scale, shift = e0[head], scale[head], shift[head]
        node_energies = e0.to(edge_vectors.dtype)[element_index] + (scale * readout_energy + shift)
        energy = torch.zeros(num_graphs, dtype=node_energies.dtype, device=node_energies.device)
        energy = energy.index_add(0, batch, node_energies)
        return {"node_energies": node_energies, "energy": energy}
