"""Exact second derivatives of the energy with respect to the positions (automatic differentiation).

.. math::

    H_{ia,jb} = \\frac{\\partial^2 E}{\\partial r_{ia}\\, \\partial r_{jb}}
    \\quad \\text{(eV/Å²)}, \\qquad \\text{row } 3i + a,\\ \\text{column } 3j + b.

One forward pass and one backward pass with ``create_graph=True`` give the gradient
``g = ∂E/∂r [3N]`` as a differentiable function of the positions; each row of H is then the
vector–Jacobian product ``e_k · ∂g/∂r`` of a unit vector. Rows are computed in chunks: a chunk of
``c`` rows is one batched backward pass (``is_grads_batched``, vmap over the unit vectors), so
the memory of a chunk is about ``c`` times the saved tensors of one backward pass, and a caller
bounds it with ``max_bytes``. ``rows_per_chunk=1`` is a plain backward pass per row (no vmap):
on a CPU the vmapped pass is slower for these models (measured in ``benchmarks/results/``), so
that is the default there; on other devices the chunks are sized to ``max_bytes``.

A periodic cell gives the Γ-point force constants of that cell: the energy is a function of the
positions of the atoms of the cell, every periodic image moving with its atom, so H sums the
couplings of an atom to all images of another (what phonopy takes from a supercell). The
translation invariance of E gives the acoustic sum rule ``Σ_j H_{ia,jb} = 0`` for every graph.

The model's own checkpointed chunks (``Graph.max_chunk_bytes``) are not used here: the graph's
bound is dropped, because the memory of the second derivative is bounded by the row chunks
instead, and recomputation inside a double backward would only add time.
"""

from __future__ import annotations

import contextlib
import math

import torch

from ..graph.tensors import Graph, edge_vectors

__all__ = ["hessian_rows", "memory_rows", "rows_of_atoms"]


def rows_of_atoms(indices: torch.Tensor) -> torch.Tensor:
    """Rows ``3i + a`` (a = x, y, z) of the atoms ``indices [k]``, as ``[3k]``, atom by atom."""
    return (3 * indices.reshape(-1, 1) + torch.arange(3, device=indices.device)).reshape(-1)


def hessian_rows(
    model: torch.nn.Module,
    graph: Graph,
    *,
    indices: torch.Tensor | None = None,
    rows_per_chunk: int | None = None,
    max_bytes: int = 2**30,
) -> torch.Tensor:
    """Rows of the Hessian ∂²E/∂r∂r of the atoms ``indices``, in the graph's dtype and device.

    Parameters
    ----------
    model:
        Maps a graph's tensors to ``energy [G]`` (:class:`~ase_equi.model.mace.MaceModel`);
        its parameters need not require gradients.
    graph:
        One structure or a batch (a batch gives the block-diagonal Hessian of the union).
    indices:
        ``[k]`` atom indices whose rows are wanted; ``None``: all atoms. Only those rows are
        computed (cost ∝ 3k backward passes).
    rows_per_chunk:
        Rows per backward pass; ``None``: 1 on a CPU, else as many as ``max_bytes`` allows.
    max_bytes:
        Memory bound (bytes) on one chunk, estimated as ``rows × saved bytes of one backward``.

    Returns
    -------
    ``[3k, 3N]`` tensor (eV/Å²): row ``3m + a`` is ∂(∂E/∂r_{indices[m], a})/∂r.

    Raises
    ------
    ValueError
        An index outside ``[0, N)``, or ``rows_per_chunk < 1``.
    """
    n = graph.num_atoms
    if indices is None:
        indices = torch.arange(n, device=graph.positions.device)
    indices = torch.as_tensor(indices, dtype=torch.long, device=graph.positions.device)
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= n):
        raise ValueError(f"Hessian indices must lie in [0, {n}) (the structure's atoms)")
    if rows_per_chunk is not None and rows_per_chunk < 1:
        raise ValueError(f"rows_per_chunk must be at least 1, got {rows_per_chunk}")
    rows = rows_of_atoms(indices)
    positions = graph.positions.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        on_cpu = positions.device.type == "cpu"
        measure = rows_per_chunk is None and not on_cpu  # saved bytes size the chunks
        gradient, saved = _differentiable_gradient(model, graph, positions, measure=measure)
        if rows_per_chunk is None:
            rows_per_chunk = 1 if on_cpu else memory_rows(saved, max_bytes)
        out = positions.new_zeros((rows.numel(), 3 * n))
        if not gradient.requires_grad:  # energy independent of positions: H = 0
            return out
        for start in range(0, rows.numel(), rows_per_chunk):
            chunk = rows[start : start + rows_per_chunk]
            out[start : start + chunk.numel()] = _chunk_rows(gradient, positions, chunk)
    return out


def _differentiable_gradient(
    model: torch.nn.Module, graph: Graph, positions: torch.Tensor, *, measure: bool
) -> tuple[torch.Tensor, int]:
    """``∂E/∂r [3N]`` with its graph kept, and (when ``measure``; else 0) the bytes saved for
    its backward pass. The counting hooks stay on the saved tensors (one Python call each per
    later backward pass), so they are installed only when the count is used."""
    saved = [0]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    hooks = (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor)
        if measure
        else contextlib.nullcontext()
    )
    with hooks:
        vectors = edge_vectors(
            positions, graph.cell, graph.shifts, graph.senders, graph.receivers, graph.batch
        )
        # no max_chunk_bytes: the model's checkpointed chunks are not used under the Hessian
        extra = {"layout": graph.layout, "groups": graph.groups}
        out = model(
            graph.element_index,
            vectors,
            graph.senders,
            graph.receivers,
            graph.batch,
            graph.num_graphs,
            **{k: v for k, v in extra.items() if v is not None},
        )
        energy = out["energy"].sum()
        if not energy.requires_grad:
            return positions.new_zeros(positions.numel()), 0
        (gradient,) = torch.autograd.grad(energy, positions, create_graph=True)
    return gradient.reshape(-1), saved[0]


def _chunk_rows(
    gradient: torch.Tensor, positions: torch.Tensor, rows: torch.Tensor
) -> torch.Tensor:
    """Rows ``rows [c]`` of ∂gradient/∂positions as ``[c, 3N]``: one (batched) backward pass."""
    size = gradient.numel()
    if rows.numel() == 1:
        (row,) = torch.autograd.grad(
            gradient[int(rows[0])], positions, retain_graph=True, allow_unused=True
        )
        return gradient.new_zeros((1, size)) if row is None else row.reshape(1, -1)
    unit = gradient.new_zeros((rows.numel(), size))
    unit[torch.arange(rows.numel(), device=unit.device), rows] = 1.0
    (block,) = torch.autograd.grad(
        gradient, positions, unit, retain_graph=True, is_grads_batched=True, allow_unused=True
    )
    if block is None:
        return unit.zero_()
    return block.reshape(rows.numel(), -1)


def memory_rows(saved_bytes: int, max_bytes: int) -> int:
    """Rows per chunk that keep ``rows × saved_bytes`` under ``max_bytes`` (at least 1)."""
    return max(1, math.floor(max_bytes / max(saved_bytes, 1)))
