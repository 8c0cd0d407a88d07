"""The exact last-layer prediction-rigidity (LLPR) force uncertainty: the Jacobian of a
structure's summed last-layer features with respect to the positions, and
:math:`\\mathrm{diag}(J^\\top C^{-1} J)` from it, in full (d backward passes: a benchmark) or
kept to the r largest eigenvalues of :math:`C^{-1}` (r backward passes in one batched call;
rank 4 is the ``"jacobian_rank4"`` force estimate of a model file,
:mod:`ase_equi.model.prediction_rigidity`)."""

from __future__ import annotations

import torch

from ..graph.tensors import Graph, edge_vectors
from .mace import MaceModel
from .prediction_rigidity import capture_features, feature_dim

__all__ = ["feature_jacobian", "jacobian_forces_uncertainty"]


def feature_jacobian(model: MaceModel, graph: Graph) -> torch.Tensor:
    """``[d, n, 3]`` float64: :math:`J = \\partial f_s / \\partial r` of one structure (d backward
    passes, batched; ``ValueError`` for several graphs)."""
    return _projected_jacobian(model, graph, torch.eye(feature_dim(model), dtype=torch.float64))


def _projected_jacobian(model: MaceModel, graph: Graph, directions: torch.Tensor) -> torch.Tensor:
    """``[r, n, 3]`` float64: :math:`u_k \\cdot \\partial f_s / \\partial r` for the rows u_k of
    ``directions [r, d]``, one batched backward pass of r vectors (one graph)."""
    if graph.num_graphs != 1:
        raise ValueError(f"the feature Jacobian takes one structure, not {graph.num_graphs}")
    positions = graph.positions.detach().requires_grad_(True)
    with torch.enable_grad(), capture_features(model) as capture:
        vectors = edge_vectors(
            positions, graph.cell, graph.shifts, graph.senders, graph.receivers, graph.batch
        )
        model(graph.element_index, vectors, graph.senders, graph.receivers, graph.batch, 1)
        f_s = capture.node_features().sum(0)  # [d]
        grad_outputs = directions.to(device=f_s.device, dtype=f_s.dtype)
        (projected,) = torch.autograd.grad(
            f_s, positions, grad_outputs=grad_outputs, is_grads_batched=True
        )
    return projected.double()


def jacobian_forces_uncertainty(
    model: MaceModel,
    graph: Graph,
    inverse_covariance: torch.Tensor,
    factor: float = 1.0,
    rank: int | None = None,
) -> torch.Tensor:
    """``[n]`` (eV/Å): :math:`\\alpha\\sqrt{\\sum_\\beta (J^\\top C^{-1} J)_{i\\beta,i\\beta}}`,
    the exact LLPR uncertainty of atom i's force (root of its variance), with
    :math:`J = \\partial f_s/\\partial r` (one graph).
    With :math:`C^{-1} = \\sum_k \\lambda_k v_k v_k^\\top` it is
    :math:`\\sum_k \\lambda_k |v_k \\cdot \\partial f_s/\\partial r_i|^2` (negative rounding
    in the λ_k clipped). ``rank`` r keeps the r largest λ_k only (None: all d), at r
    backward passes (batched; d for the exact form: a benchmark, not for MD).
    ``ValueError`` for several graphs or a rank outside 1..d."""
    values, vectors_k = torch.linalg.eigh(inverse_covariance.double())
    d = values.shape[0]
    keep = d if rank is None else rank
    if not 1 <= keep <= d:
        raise ValueError(f"rank must be 1..{d} (the feature dimension), not {rank}")
    order = torch.argsort(values, descending=True)[:keep]
    directions = vectors_k[:, order].T * values[order].clamp(min=0).sqrt()[:, None]  # [r, d]
    projected = _projected_jacobian(model, graph, directions)  # √λ_k v_k · ∂f_s/∂r
    return factor * (projected**2).sum(dim=(0, 2)).sqrt()
