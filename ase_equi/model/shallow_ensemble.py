"""A shallow ensemble: one trunk, M readouts of the last layer.

Member m shares everything with member 0 (embedding, interactions, products, the readouts of
the earlier layers, E0, scale and shift) except the readout of the last layer. With
:math:`h_i` the last layer's node features, :math:`R_m` member m's last readout and s the
scale, member m's per-atom energy is

.. math::

    \\varepsilon_{m,i} = \\varepsilon_{0,i} + s\\,\\big(R_m(h_i) - R_0(h_i)\\big),

where :math:`\\varepsilon_{0,i}` is the trunk model's own per-atom energy (member 0 is exactly
the trunk). The trunk runs once; the extra cost is M − 1 small readouts forward, and for the
member forces a batched backward pass (see :func:`~ase_equi.model.committee.member_derivatives`).
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from .config import ModelConfig
from .mace import MaceModel

__all__ = ["ShallowEnsemble"]


class ShallowEnsemble(torch.nn.Module):
    """A model with M readouts of its last layer; the interface of
    :class:`~ase_equi.model.committee.Committee`.

    Parameters
    ----------
    trunk:
        The model; its last readout is member 0's.
    size:
        M ≥ 2, the number of members.
    member_readouts:
        The readouts of members 1 … M − 1 (modules of the same kind and shapes as the trunk's
        last readout); None: copies of it with weights drawn afresh from a standard normal
        (e3nn's initialisation), to be trained.
    """

    kind = "shallow"

    def __init__(
        self,
        trunk: MaceModel,
        size: int,
        member_readouts: list[torch.nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if size < 2:
            raise ValueError(f"a shallow ensemble needs at least 2 members, got {size}")
        last = trunk.readouts[-1]
        if member_readouts is None:
            member_readouts = []
            for _ in range(size - 1):
                readout = copy.deepcopy(last)
                with torch.no_grad():
                    for parameter in readout.parameters():
                        parameter.normal_()
                member_readouts.append(readout)
        if len(member_readouts) != size - 1:
            raise ValueError(
                f"a shallow ensemble of {size} members needs {size - 1} extra readouts, "
                f"got {len(member_readouts)}"
            )
        self.trunk = trunk
        self.member_readouts = torch.nn.ModuleList(member_readouts)

    @property
    def size(self) -> int:
        """M, the number of members."""
        return len(self.member_readouts) + 1

    @property
    def config(self) -> ModelConfig:
        """The trunk's config."""
        return self.trunk.config

    def forward(
        self,
        element_index: torch.Tensor,
        edge_vectors: torch.Tensor,
        senders: torch.Tensor,
        receivers: torch.Tensor,
        batch: torch.Tensor,
        num_graphs: int,
        **options: Any,
    ) -> dict[str, torch.Tensor]:
        """Mean and member energies; arguments as :meth:`MaceModel.forward`.

        Returns
        -------
        dict with ``energy [G]``, ``node_energies [n]`` (the mean over members, eV), and
        ``member_energy [M, G]``, ``member_node_energies [M, n]`` (eV).
        """
        captured: dict[str, torch.Tensor] = {}

        def keep(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            captured["features"], captured["readout"] = inputs[0], output

        hook = self.trunk.readouts[-1].register_forward_hook(keep)
        try:
            out = self.trunk(
                element_index, edge_vectors, senders, receivers, batch, num_graphs, **options
            )
        finally:
            hook.remove()
        base = out["node_energies"]  # [n], member 0
        features, readout_0 = captured["features"], captured["readout"]
        scale = self.trunk.scale.to(base.dtype)
        others = [base + scale * (r(features) - readout_0) for r in self.member_readouts]
        node_energies = torch.stack([base, *others])  # [M, n]
        energy = node_energies.new_zeros(self.size, num_graphs).index_add(1, batch, node_energies)
        return {
            "energy": energy.mean(0),
            "node_energies": node_energies.mean(0),
            "member_energy": energy,
            "member_node_energies": node_energies,
        }
