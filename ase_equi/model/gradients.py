"""Forces and stress from one autograd pass through a symmetric strain.

A homogeneous strain ε (symmetric 3×3) maps positions and cell as r → r (1 + ε) and
cell → cell (1 + ε) (row vectors). Then

.. math::

    F_i = -\\frac{\\partial E}{\\partial r_i}, \\qquad
    \\sigma = \\frac{1}{V} \\frac{\\partial E}{\\partial \\varepsilon}\\Big|_{\\varepsilon = 0},
    \\qquad V = |\\det \\mathrm{cell}|.

σ follows ASE's sign (positive = tensile: the cell wants to shrink) in eV/Å³. ε is built as
the symmetric part of a free 3×3 displacement, so its antisymmetric part (a rotation, which
leaves E unchanged) drops out (Knuth et al., Comput. Phys. Commun. 190, 33 (2015)).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..graph.tensors import Graph, edge_vectors


def energy_forces_stress(
    model: torch.nn.Module,
    graph: Graph,
    *,
    forces: bool = True,
    stress: bool = False,
    training: bool = False,
    flat_cells: str = "raise",
) -> dict[str, torch.Tensor]:
    """Energies, and on request forces and stress, of a graph batch.

    Parameters
    ----------
    model:
        Maps ``(element_index, edge_vectors, senders, receivers, batch, num_graphs)`` to a dict with
        ``energy [G]`` and ``node_energies [n]``; it also gets the graph's ``layout``,
        ``groups`` and ``max_chunk_bytes`` as keywords where the graph has them
        (:class:`~ase_equi.model.mace.MaceModel` builds the first two itself otherwise).
    graph:
        Positions, cells and neighbour list (see :mod:`ase_equi.graph.tensors`). With its
        ``layout``, ``groups`` and ``volumes`` given (a graph kept on the device), the whole
        pass reads nothing back from the device.
    forces, stress:
        What to differentiate. Stress needs every graph's cell to have a nonzero volume
        (checked on ``graph.volumes``, or on ``cell`` when they are not known).
    training:
        Keep the graph of the derivatives (``create_graph``) so a loss on forces or stress can be
        back-propagated to the weights.
    flat_cells:
        With stress, what a graph whose cell has zero volume gets: ``"raise"`` (``ValueError``)
        or ``"nan"`` (its stress is NaN, the other graphs' are exact: a batch mixing molecules
        and bulk cells).

    Returns
    -------
    dict with ``energy [G]``, ``node_energies [n]`` (eV), and ``forces [n, 3]`` (eV/Å),
    ``stress [G, 3, 3]`` (eV/Å³) when asked.

    Raises
    ------
    ValueError
        Stress asked for a cell of zero volume.
    """
    base = graph.positions.detach()  # [n, 3]
    if forces:
        base = base.requires_grad_(True)
    grad_inputs = [base] if forces else []
    with torch.set_grad_enabled(bool(forces or stress or training)):
        positions, cell = base, graph.cell
        if stress:
            volume = torch.linalg.det(cell).abs()  # [G]
            if flat_cells == "raise":
                _check_volumes(graph, volume)
            elif flat_cells != "nan":
                raise ValueError(f"flat_cells must be 'raise' or 'nan', not {flat_cells!r}")
            displacement = torch.zeros_like(cell).requires_grad_(True)  # [G, 3, 3]
            strain = 0.5 * (displacement + displacement.transpose(1, 2))
            positions = positions + torch.einsum("ni,nij->nj", positions, strain[graph.batch])
            cell = cell + torch.bmm(cell, strain)
            grad_inputs.append(displacement)
        vectors = edge_vectors(
            positions, cell, graph.shifts, graph.senders, graph.receivers, graph.batch
        )
        names = ("layout", "groups", "max_chunk_bytes")  # passed where the graph has them
        extra = {k: getattr(graph, k) for k in names if getattr(graph, k) is not None}
        out = model(
            graph.element_index,
            vectors,
            graph.senders,
            graph.receivers,
            graph.batch,
            graph.num_graphs,
            **extra,
        )
        result = {"energy": out["energy"], "node_energies": out["node_energies"]}
        if not grad_inputs:
            return result
        grads: Sequence[torch.Tensor | None]
        if not out["energy"].requires_grad:  # energy independent of positions (e.g. no edges)
            grads = [None] * len(grad_inputs)
        else:
            grads = torch.autograd.grad(
                out["energy"].sum(),
                grad_inputs,
                create_graph=training,
                retain_graph=training,
                allow_unused=True,
            )
    derivatives = [
        g if g is not None else torch.zeros_like(x) for g, x in zip(grads, grad_inputs, strict=True)
    ]
    if forces:
        result["forces"] = -derivatives[0]
    if stress:
        result["stress"] = _stress(derivatives[-1], volume)
    return result


def _stress(derivative: torch.Tensor, volume: torch.Tensor) -> torch.Tensor:
    """``∂E/∂ε [G, 3, 3]`` / ``volume [G]``, NaN where the volume is 0 (stress undefined).

    The division uses a safe volume (1 where it is 0), so that a loss which leaves the NaN
    entries out (a training batch mixing molecules and cells in one pass) keeps finite
    gradients.
    """
    defined = (volume > 0).view(-1, 1, 1)
    ratio = derivative / torch.where(defined, volume.view(-1, 1, 1), 1.0)
    return torch.where(defined, ratio, torch.nan)


def _check_volumes(graph: Graph, volume: torch.Tensor) -> None:
    """``ValueError`` if a cell has zero volume: on the host volumes where the graph has them
    (no read from the device), else on ``volume [G]`` (one read)."""
    if graph.volumes is not None:
        flat = min(graph.volumes, default=1.0) <= 0
    else:
        flat = bool((volume <= 0).any())
    if flat:
        raise ValueError("stress needs a cell of rank 3; this cell has zero volume")
