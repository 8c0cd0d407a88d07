"""Committees: M models evaluated together, their mean as the prediction, their spread as an
uncertainty.

Two kinds, one interface (``kind``, ``size``, ``config`` and a forward that returns the mean
and every member's energies):

* :class:`Committee` (``kind = "full"``): M complete :class:`~ase_equi.model.mace.MaceModel` of
  one architecture (same elements, cutoff, channels, layers; E0, scale and shift may differ).
  Their weights are stacked along a leading member axis and the M models run as ONE batched
  call (``torch.func.vmap`` of ``torch.func.functional_call``), not a Python loop.
* :class:`~ase_equi.model.shallow_ensemble.ShallowEnsemble` (``kind = "shallow"``): one trunk
  and M readouts of the last layer.

For member m with energy :math:`E_m`, the prediction is the mean
:math:`\\bar E = \\frac1M \\sum_m E_m` (forces and stress likewise, exact derivatives of
:math:`\\bar E`). The spread is the *sample* standard deviation (divisor M − 1),
:math:`s_E = \\sqrt{\\frac{1}{M-1}\\sum_m (E_m - \\bar E)^2}`: see
:func:`member_spread`. :func:`member_derivatives` gives every member's energy, forces and
stress in one forward and one backward pass.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch.func import functional_call, stack_module_state, vmap

from ..graph.tensors import Graph, edge_vectors
from .config import ModelConfig
from .mace import MaceModel

__all__ = [
    "Committee",
    "architecture_difference",
    "member_derivatives",
    "member_spread",
    "STD_DDOF",
]

STD_DDOF = 1  # divisor M − 1: the sample standard deviation of the members
# fields that may differ between the members of a full committee (head constants)
HEAD_FIELDS = ("reference_energies", "scale", "shift")


def architecture_difference(
    a: ModelConfig | dict[str, Any], b: ModelConfig | dict[str, Any]
) -> str | None:
    """The first field in which two configs (or their ``to_dict()``, e.g. from model headers)
    differ besides E0, scale and shift, as text; None when they describe the same architecture.

    Examples
    --------
    >>> cfg = ModelConfig(elements=(29,), reference_energies=(-1.0,), r_max=4.0)
    >>> import dataclasses
    >>> architecture_difference(cfg, dataclasses.replace(cfg, r_max=5.0))
    'r_max: 4.0 vs 5.0'
    >>> architecture_difference(cfg, dataclasses.replace(cfg, shift=0.5)) is None
    True
    """
    da = a if isinstance(a, dict) else a.to_dict()
    db = b if isinstance(b, dict) else b.to_dict()
    rest = sorted((set(da) | set(db)) - {"r_max", "elements", *HEAD_FIELDS})
    for key in ["r_max", "elements", *rest]:
        if da.get(key) != db.get(key):
            return f"{key}: {da.get(key)!r} vs {db.get(key)!r}"
    return None


class Committee(torch.nn.Module):
    """M full models of one architecture, evaluated in one batched (vmapped) call.

    Parameters
    ----------
    members:
        The M ≥ 2 models. They must share every architecture field of their configs (cutoff,
        elements, channels, layers, ...); E0, scale and shift may differ. A difference raises
        ``ValueError`` naming the member and the field.

    The members stay in ``members`` (state dict ``members.{m}.…``); their weights are stacked
    into ``[M, ...]`` tensors on first use and again after ``.to()`` or ``load_state_dict``
    (call :meth:`restack` after editing a member's weights in place).
    """

    kind = "full"

    def __init__(self, members: Sequence[MaceModel]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"a committee needs at least 2 members, got {len(members)}")
        if len(getattr(members[0].config, "heads", ())) > 1:
            raise ValueError("a committee of multi-head models is not supported: one head each")
        for m, member in enumerate(members[1:], start=1):
            diff = architecture_difference(members[0].config, member.config)
            if diff is not None:
                raise ValueError(
                    f"committee member {m} differs from member 0 in its architecture ({diff}): "
                    "a committee evaluated in one pass needs one architecture"
                )
        self.members = torch.nn.ModuleList(members)
        self._stacked: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] | None = None
        # a weightless copy of member 0 that functional_call fills with each member's tensors;
        # in a tuple, so that it is no submodule (not in the state dict, not moved by .to())
        self._template: tuple[torch.nn.Module, ...] = ()

    @property
    def size(self) -> int:
        """M, the number of members."""
        return len(self.members)

    @property
    def config(self) -> ModelConfig:
        """The architecture (member 0's config: its E0, scale and shift)."""
        return self.members[0].config  # type: ignore[return-value]

    def restack(self) -> None:
        """Forget the stacked weights: they are stacked again from the members on next use."""
        self._stacked = None

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> Committee:
        self._stacked = None  # .to(), .double(), ...: the stack is made again from the members
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._stacked = None
        super()._load_from_state_dict(*args, **kwargs)

    def stacked(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``(parameters, buffers)``: every member tensor stacked along a new leading axis."""
        if self._stacked is None:
            params, buffers = stack_module_state(list(self.members))
            grad = any(p.requires_grad for p in self.members.parameters())
            params = {k: v.detach().requires_grad_(grad) for k, v in params.items()}
            self._stacked = (params, buffers)
            if not self._template:
                self._template = (copy.deepcopy(self.members[0]).to("meta"),)
        return self._stacked

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

        ``edge_vectors`` is ``[n_edges, 3]`` (one geometry for all members) or
        ``[M, n_edges, 3]`` (one per member, to take each member's own derivatives).

        Returns
        -------
        dict with ``energy [G]`` and ``node_energies [n]`` (the mean over members, eV), and
        ``member_energy [M, G]``, ``member_node_energies [M, n]`` (eV).
        """
        from ..graph.layout import ElementGroups, NeighbourLayout

        # the index bookkeeping once, outside the batched call (it reads sizes from tensors)
        if options.get("layout") is None:
            options["layout"] = NeighbourLayout(senders, receivers, element_index.shape[0])
        if options.get("groups") is None:
            options["groups"] = ElementGroups(element_index)
        params, buffers = self.stacked()
        template = self._template[0]

        def one(p: dict, b: dict, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            args = (element_index, vectors, senders, receivers, batch, num_graphs)
            out = functional_call(template, (p, b), args, options)
            return out["energy"], out["node_energies"]

        shared = edge_vectors.dim() == 2
        energy, node_energies = vmap(one, in_dims=(0, 0, None if shared else 0))(
            params, buffers, edge_vectors
        )
        return {
            "energy": energy.mean(0),
            "node_energies": node_energies.mean(0),
            "member_energy": energy,
            "member_node_energies": node_energies,
        }


def member_derivatives(
    model: torch.nn.Module,
    graph: Graph,
    *,
    forces: bool = True,
    stress: bool = False,
    each: bool = True,
    training: bool = False,
) -> dict[str, torch.Tensor]:
    """Every member's energy, forces and stress in one forward and one backward pass.

    Parameters
    ----------
    model:
        A :class:`Committee` or a :class:`~ase_equi.model.shallow_ensemble.ShallowEnsemble`.
    graph:
        The structures (see :mod:`ase_equi.graph.tensors`); with ``stress`` every cell must
        have a nonzero volume.
    each:
        Every member's forces and stress (``member_forces``, ``member_stress``). False: only
        their mean (``forces``, ``stress``), which for a shallow ensemble is one plain backward
        pass instead of M (a full committee gets its members' derivatives in one pass anyway).
    training:
        Keep the graph of every output (``create_graph``), so that a loss on the member
        energies, forces and stress can be back-propagated to the weights.

    Returns
    -------
    dict with ``member_energy [M, G]``, ``member_node_energies [M, n]`` (eV), and when asked
    ``member_forces [M, n, 3]`` (eV/Å) and ``member_stress [M, G, 3, 3]`` (eV/Å³, ASE's sign),
    or with ``each=False`` their means ``forces [n, 3]`` and ``stress [G, 3, 3]``.
    The member forces and stress are the exact derivatives of each member's own energy
    (same strain construction as :func:`~ase_equi.model.gradients.energy_forces_stress`).

    A full committee gets one copy of the positions (and strain) per member, so the gradient of
    the summed member energies is every member's own gradient; a shallow ensemble shares its
    trunk, so its M gradients are one batched backward pass (``is_grads_batched``).
    """
    size = int(model.size)  # type: ignore[arg-type]
    per_member = model.kind == "full"
    with torch.enable_grad():
        positions, cell, inputs = _strained(graph, (size,) if per_member else (), forces, stress)
        edges = (graph.shifts, graph.senders, graph.receivers, graph.batch)
        if per_member:
            vectors = torch.stack(
                [edge_vectors(positions[m], cell[m], *edges) for m in range(size)]
            )
        else:
            vectors = edge_vectors(positions, cell, *edges)
        extra: dict[str, Any] = {"layout": graph.layout, "groups": graph.groups}
        extra = {k: v for k, v in extra.items() if v is not None}
        if graph.max_chunk_bytes is not None:
            extra["max_chunk_bytes"] = graph.max_chunk_bytes
        out = model(
            graph.element_index,
            vectors,
            graph.senders,
            graph.receivers,
            graph.batch,
            graph.num_graphs,
            **extra,
        )
        keep = (lambda t: t) if training else (lambda t: t.detach())
        result = {k: keep(out[k]) for k in ("member_energy", "member_node_energies")}
        if not inputs:
            return result
        if per_member or each:
            grads = _member_gradients(out["member_energy"], inputs, per_member, training)
        else:  # the mean's derivatives: one plain backward pass through the shared trunk
            grads = [g.unsqueeze(0) for g in _mean_gradients(out["energy"], inputs, training)]
    if forces:
        result["member_forces"] = -grads[0]
    if stress:
        volume = torch.linalg.det(graph.cell).abs()  # [G]
        result["member_stress"] = grads[-1] / volume.view(1, -1, 1, 1)
    if not each:
        for key in ("forces", "stress"):
            if f"member_{key}" in result:
                result[key] = result.pop(f"member_{key}").mean(0)
    return result


def _strained(
    graph: Graph, lead: tuple[int, ...], forces: bool, stress: bool
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """``(positions, cell, inputs)``: copies of the positions ``[*lead, n, 3]`` and cells
    ``[*lead, G, 3, 3]`` under a zero symmetric strain, and the leaves to differentiate by
    (positions for forces, the strain's displacement for stress)."""
    base = graph.positions.detach().expand(*lead, *graph.positions.shape).clone()
    base.requires_grad_(forces)
    cell = graph.cell.detach().expand(*lead, *graph.cell.shape).clone()
    inputs = [base] if forces else []
    positions = base
    if stress:
        if bool((torch.linalg.det(graph.cell).abs() <= 0).any()):
            raise ValueError("stress needs a cell of rank 3; a cell here has zero volume")
        displacement = torch.zeros_like(cell).requires_grad_(True)  # [*lead, G, 3, 3]
        strain = 0.5 * (displacement + displacement.transpose(-1, -2))
        positions = positions + torch.einsum(
            "...ni,...nij->...nj", positions, strain[..., graph.batch, :, :]
        )
        cell = cell + cell @ strain
        inputs.append(displacement)
    return positions, cell, inputs


def _mean_gradients(
    energy: torch.Tensor, inputs: list[torch.Tensor], create_graph: bool
) -> list[torch.Tensor]:
    """∂Ē/∂x of the mean energy ``[G]`` (zeros where it does not depend on x)."""
    if not energy.requires_grad:
        return [torch.zeros_like(x) for x in inputs]
    grads = torch.autograd.grad(energy.sum(), inputs, allow_unused=True, create_graph=create_graph)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs, strict=True)]


def _member_gradients(
    energy: torch.Tensor, inputs: list[torch.Tensor], per_member: bool, create_graph: bool
) -> list[torch.Tensor]:
    """∂E_m/∂x for each member m: ``[M, *x.shape]`` (zeros where E does not depend on x)."""
    if not energy.requires_grad:
        size = energy.shape[0]
        return [torch.zeros_like(x) if per_member else x.new_zeros(size, *x.shape) for x in inputs]
    if per_member:  # each member sees its own copy of x: one plain backward pass
        grads = torch.autograd.grad(
            energy.sum(), inputs, allow_unused=True, create_graph=create_graph
        )
    else:  # a shared x: M cotangents, one per member, in one batched backward pass
        size = energy.shape[0]
        eye = torch.eye(size, dtype=energy.dtype, device=energy.device)
        cotangents = eye.unsqueeze(-1).expand(size, size, energy.shape[1])  # [M, M, G]
        grads = torch.autograd.grad(
            energy,
            inputs,
            grad_outputs=cotangents,
            is_grads_batched=True,
            allow_unused=True,
            create_graph=create_graph,
        )
    out = []
    for g, x in zip(grads, inputs, strict=True):
        if g is None:
            g = torch.zeros_like(x) if per_member else x.new_zeros(energy.shape[0], *x.shape)
        out.append(g)
    return out


def member_spread(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, std)`` over the member axis 0, std with divisor M − 1 (:data:`STD_DDOF`).

    Examples
    --------
    >>> mean, std = member_spread(torch.tensor([1.0, 2.0, 3.0]))
    >>> float(mean), float(std)
    (2.0, 1.0)
    """
    return values.mean(0), values.std(0, correction=STD_DDOF)
