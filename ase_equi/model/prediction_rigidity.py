"""Last-layer prediction rigidity (LLPR): uncertainties of one trained model, no retraining.

The energy of a MACE model is *linear* in its last-layer features. With the readout of every
layer but the last linear in the scalar (0e) channels :math:`x^{(t)}_i` of its input, and the
last readout :math:`w^{(T-1)} \\cdot \\phi_i` linear in its hidden SiLU activations
:math:`\\phi_i`, the per-atom energy of :mod:`ase_equi.model.mace` is

.. math::

    \\varepsilon_i = E0_{z_i} + \\mu + s\\,p_i + w \\cdot f_i, \\qquad
    f_i = s\\,[x^{(0)}_i, \\dots, x^{(T-2)}_i, \\phi_i] \\in \\mathbb{R}^d,

with the scale s, shift μ, pair repulsion :math:`p_i` (ZBL, when the model has it) and the
readout weights :math:`w = [w^{(0)}, \\dots, w^{(T-1)}]` (:func:`readout_weights`). For
``channels`` C and ``readout_hidden`` H, :math:`d = (T-1)\\,C + H`.

Treating w as the parameters of a linear model fitted on N training structures with feature
sums :math:`f_s = \\sum_{i \\in s} f_i`, the prediction rigidity formalism (F. Bigi, S. Chong,
M. Ceriotti, F. Grasselli, *A prediction rigidity formalism for low-cost uncertainties in
trained neural networks*, Mach. Learn.: Sci. Technol. 5, 045018 (2024)) gives the energy
uncertainty of a structure s

.. math::

    \\sigma_E(s)^2 = \\alpha_E^2\\, f_s^\\top C^{-1} f_s, \\qquad
    C = \\sum_{s' \\in \\mathrm{train}} f_{s'} f_{s'}^\\top + \\lambda I,

with a regulariser λ and a calibration factor α_E fitted on validation data.

**Forces: local rigidity.** The exact force analogue, the diagonal of :math:`J^\\top C^{-1} J`
with the Jacobian :math:`J = \\partial f_s / \\partial r` (d × 3n), needs d backward passes
(:func:`jacobian_forces_uncertainty`, kept for comparison; its ``rank`` r keeps the r largest
eigenvalues of :math:`C^{-1}`, r backward passes). The calculator uses the rigidity of
each atom's own environment instead,

.. math::

    u_i = \\alpha_F \\sqrt{f_i^\\top C_\\mathrm{loc}^{-1} f_i}, \\qquad
    C_\\mathrm{loc} = \\sum_{j \\in \\mathrm{train}} f_j f_j^\\top + \\lambda_\\mathrm{loc} I

(the sum over training atoms), in eV/Å per atom (``forces_uncertainty``, the convention of
:mod:`ase_equi.uncertainty`): an environment unlike every training environment has a
feature vector outside the span the training atoms constrain, and a large :math:`u_i`. It
costs the forward hooks and one d × d quadratic form per atom; no extra backward pass.

**Forces: neighbourhood rigidity** (``forces_estimate`` ``"neighbourhood"``). The force
:math:`F_i = -\\sum_j \\partial \\varepsilon_j / \\partial r_i` collects the local energies of
every atom whose environment holds atom i, not only its own. Adding their variances as if
independent, with the size of :math:`\\partial \\varepsilon_j / \\partial r_i` absorbed into
the calibration factor,

.. math::

    u_i = \\alpha_F \\sqrt{q_i + \\sum_{j \\in N(i)} w(r_{ij})\\, q_j}, \\qquad
    q_j = f_j^\\top C_\\mathrm{loc}^{-1} f_j,

with N(i) the atoms (periodic images included, one term per image) closer than the model's
``r_max`` to atom i (the pairs of the first interaction) and w = 1, or
w = (1 + cos(π r/r_max))/2 for ``"neighbourhood_smooth"`` (a neighbour's local energy moves
less with atom i the farther it is; the weight falls to 0 at the cutoff as the model's
messages do). Which estimate a model file carries is chosen on its validation data
(``scripts/uncertainty/zoo_rigidity.py``); a file without the choice is ``"local"``.

**Forces: the rank-4 Jacobian form** (``forces_estimate`` ``"jacobian_rank4"``, opt-in, never
chosen by the zoo script). The exact LLPR force variance is
:math:`\\mathrm{diag}(J^\\top C^{-1} J)` with :math:`J = \\partial f_s / \\partial r`;
keeping the 4 largest eigenvalues of :math:`C^{-1}` it costs 4 backward passes in one batched
call (:mod:`ase_equi.model.rigidity_jacobian`), about 2–3× a force call, and unlike the two
estimates above it grows with how hot a structure is (it sees how far the atoms moved along
the directions the training data constrain least). α_F is then the factor on this form.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from ..graph.tensors import Graph, edge_vectors
from .gradients import energy_forces_stress
from .mace import MaceModel
from .readout import LinearReadout, NonLinearReadout

__all__ = [
    "FORCES_ESTIMATES",
    "JACOBIAN_RANK4",
    "SECTION_FORCES_ESTIMATES",
    "LOCAL",
    "NEIGHBOURHOOD",
    "NEIGHBOURHOOD_SMOOTH",
    "Pairs",
    "FeatureCapture",
    "LastLayerRigidity",
    "RigidityStatistics",
    "capture_features",
    "feature_dim",
    "neighbour_pairs",
    "pair_weights",
    "readout_weights",
    "rigidity_pass",
    "structure_features",
]

LOCAL = "local"
NEIGHBOURHOOD = "neighbourhood"
NEIGHBOURHOOD_SMOOTH = "neighbourhood_smooth"
FORCES_ESTIMATES = (LOCAL, NEIGHBOURHOOD, NEIGHBOURHOOD_SMOOTH)
JACOBIAN_RANK4 = "jacobian_rank4"
JACOBIAN_RANK = 4
SECTION_FORCES_ESTIMATES = (*FORCES_ESTIMATES, JACOBIAN_RANK4)
Pairs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # centres, neighbours, r / r_max


def _scalar_slices(readout: Any) -> list[slice]:
    """Slices of the 0e channels in the input of a linear readout (``[n, irreps_in.dim]``)."""
    irreps = readout.linear.irreps_in
    slices = irreps.slices()
    return [slices[k] for k, (_, ir) in enumerate(irreps) if ir.l == 0 and ir.p == 1]


def _readouts(model: MaceModel) -> list[Any]:
    readouts = list(model.readouts_of(model.active_head))
    for t, readout in enumerate(readouts):
        last = t == len(readouts) - 1
        if not isinstance(readout, NonLinearReadout if last else LinearReadout):
            raise ValueError(f"readout {t} of the model is {type(readout).__name__}: no LLPR")
    return readouts


def _scale(model: MaceModel) -> torch.Tensor:
    scale = model.scale
    return scale[model.active_head] if scale.dim() == 1 else scale


def feature_dim(model: MaceModel) -> int:
    """d, the length of an atom's last-layer feature vector :math:`f_i`."""
    readouts = _readouts(model)
    linear = sum(s.stop - s.start for r in readouts[:-1] for s in _scalar_slices(r))
    return int(linear + readouts[-1].linear_2.irreps_in.dim)


def readout_weights(model: MaceModel) -> torch.Tensor:
    """``[d]`` float64: w with :math:`\\varepsilon_i = E0 + \\mu + s p_i + w \\cdot f_i`.

    Each block is read off its readout applied to unit vectors (the readouts have no bias),
    so it holds whatever normalisation the readout applies.
    """
    readouts = _readouts(model)
    blocks = []
    param = next(model.parameters())
    for t, readout in enumerate(readouts):
        if t < len(readouts) - 1:
            dim = readout.linear.irreps_in.dim
            columns = [k for s in _scalar_slices(readout) for k in range(s.start, s.stop)]
            unit = torch.zeros(len(columns), dim, dtype=param.dtype, device=param.device)
            unit[range(len(columns)), columns] = 1.0
            blocks.append(readout(unit))
        else:
            hidden = readout.linear_2.irreps_in.dim
            eye = torch.eye(hidden, dtype=param.dtype, device=param.device)
            blocks.append(readout.linear_2(eye).squeeze(-1))
    return torch.cat(blocks).detach().double()


class FeatureCapture:
    """The per-layer readout inputs seen by the hooks of :func:`capture_features`."""

    def __init__(self, model: MaceModel) -> None:
        self.model = model
        self.blocks: list[torch.Tensor] = []
        self.calls = 0  # model passes seen (counted by the first readout's hook)

    def node_features(self) -> torch.Tensor:
        """``[n_atoms, d]``: :math:`f_i` of the last pass (in the model's dtype; still in the
        autograd graph of that pass)."""
        if not self.blocks:
            raise RuntimeError("no model pass ran inside capture_features")
        return _scale(self.model).to(self.blocks[0].dtype) * torch.cat(self.blocks, dim=1)


@contextlib.contextmanager
def capture_features(model: MaceModel) -> Iterator[FeatureCapture]:
    """Hooks on the readouts of ``model`` that record :math:`f_i` (without the scale) during
    the passes inside the ``with`` block; removed on exit, so a model outside it pays nothing.
    """
    capture = FeatureCapture(model)
    readouts = _readouts(model)
    handles = []

    def linear_hook(module: Any, inputs: tuple[torch.Tensor, ...]) -> None:
        if module is readouts[0]:
            capture.blocks.clear()
            capture.calls += 1
        x = inputs[0]
        capture.blocks.append(torch.cat([x[:, s] for s in _scalar_slices(module)], dim=1))

    def hidden_hook(module: Any, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if len(readouts) == 1:
            capture.blocks.clear()
            capture.calls += 1
        capture.blocks.append(output)

    try:
        for readout in readouts[:-1]:
            handles.append(readout.register_forward_pre_hook(linear_hook))
        handles.append(readouts[-1].non_linearity.register_forward_hook(hidden_hook))
        yield capture
    finally:
        for handle in handles:
            handle.remove()


def structure_features(
    node_features: torch.Tensor, batch: torch.Tensor, num_graphs: int
) -> torch.Tensor:
    """``[G, d]`` float64: :math:`f_s = \\sum_{i \\in s} f_i` per graph of the batch."""
    out = torch.zeros(num_graphs, node_features.shape[1], dtype=torch.float64)
    return out.to(node_features.device).index_add(0, batch, node_features.double())


@dataclass
class RigidityStatistics:
    """Running sums over training structures: ``covariance`` :math:`\\sum_s f_s f_s^\\top` and
    ``local_covariance`` :math:`\\sum_i f_i f_i^\\top` (``[d, d]`` float64, no regulariser)."""

    dim: int
    covariance: torch.Tensor = field(init=False)
    local_covariance: torch.Tensor = field(init=False)
    structures: int = 0
    atoms: int = 0

    def __post_init__(self) -> None:
        self.covariance = torch.zeros(self.dim, self.dim, dtype=torch.float64)
        self.local_covariance = torch.zeros(self.dim, self.dim, dtype=torch.float64)

    def add(self, node_features: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> None:
        """Add a batch: ``node_features [n, d]``, ``batch [n]`` graph index of each atom."""
        f_i = node_features.detach().double().cpu()
        f_s = structure_features(f_i, batch.cpu(), num_graphs)
        self.covariance += f_s.T @ f_s
        self.local_covariance += f_i.T @ f_i
        self.structures += num_graphs
        self.atoms += f_i.shape[0]


def regularised_inverse(covariance: torch.Tensor, relative: float) -> torch.Tensor:
    """:math:`(C + \\lambda I)^{-1}` with :math:`\\lambda = \\mathrm{relative}\\cdot
    \\mathrm{tr}(C)/d` (symmetrised, float64)."""
    d = covariance.shape[0]
    lam = relative * float(torch.trace(covariance)) / d
    inverse = torch.linalg.inv(covariance + lam * torch.eye(d, dtype=covariance.dtype))
    return 0.5 * (inverse + inverse.T)


@dataclass
class LastLayerRigidity:
    """What a model needs for LLPR uncertainties (see the module docstring).

    ``inverse_covariance`` :math:`C^{-1}` and ``local_inverse_covariance``
    :math:`C_\\mathrm{loc}^{-1}` (``[d, d]`` float64), the calibration factors ``energy_factor``
    α_E and ``forces_factor`` α_F (dimensionless), and ``info``: the rest of the file section
    (regularisers, data, calibration figures).
    """

    inverse_covariance: torch.Tensor
    local_inverse_covariance: torch.Tensor
    energy_factor: float = 1.0
    forces_factor: float = 1.0
    info: dict[str, Any] = field(default_factory=dict)

    def energy_uncertainty(
        self, node_features: torch.Tensor, batch: torch.Tensor, num_graphs: int
    ) -> torch.Tensor:
        """``[G]`` (eV): :math:`\\alpha_E \\sqrt{f_s^\\top C^{-1} f_s}` per graph."""
        f_s = structure_features(node_features.detach(), batch, num_graphs)
        inverse = self.inverse_covariance.to(f_s.device)
        quad = torch.einsum("gd,de,ge->g", f_s, inverse, f_s).clamp(min=0)
        return self.energy_factor * quad.sqrt()

    @property
    def forces_estimate(self) -> str:
        """One of :data:`FORCES_ESTIMATES`; ``"local"`` for a section without the choice."""
        return str(self.info.get("forces_estimate", LOCAL))

    def forces_uncertainty(
        self, node_features: torch.Tensor, pairs: Pairs | None = None
    ) -> torch.Tensor:
        """``[n]`` (eV/Å) per atom: :math:`\\alpha_F \\sqrt{q_i}` with
        :math:`q_i = f_i^\\top C_\\mathrm{loc}^{-1} f_i` (``"local"``), or with
        :math:`q_i + \\sum_{(i, j) \\in \\mathrm{pairs}} w(r_{ij}) q_j` (the neighbourhood
        estimates; ``pairs``: ``(centres, neighbours, r / r_max)`` of every ordered pair
        closer than r_max, :func:`neighbour_pairs`; ``w``: :func:`pair_weights`)."""
        f_i = node_features.detach().double()
        inverse = self.local_inverse_covariance.to(f_i.device)
        quad = torch.einsum("nd,de,ne->n", f_i, inverse, f_i).clamp(min=0)
        if self.forces_estimate != LOCAL:
            if pairs is None:
                raise ValueError("a neighbourhood force estimate needs the atom pairs")
            centres, neighbours, x = (t.to(f_i.device) for t in pairs)
            weights = pair_weights(self.forces_estimate, x.double())
            quad = quad.index_add(0, centres, weights * quad[neighbours])
        return self.forces_factor * quad.sqrt()


def pair_weights(estimate: str, x: torch.Tensor) -> torch.Tensor:
    """w of each pair at relative distance ``x`` = r/r_max: 1 (``"neighbourhood"``) or
    (1 + cos πx)/2 (``"neighbourhood_smooth"``: 1 at contact, 0 at r_max)."""
    if estimate == NEIGHBOURHOOD:
        return torch.ones_like(x)
    if estimate == NEIGHBOURHOOD_SMOOTH:
        return 0.5 * (1.0 + torch.cos(torch.pi * x))
    raise ValueError(f"no pair weights for the force estimate {estimate!r}")


def neighbour_pairs(graph: Graph, r_max: float) -> Pairs:
    """``(centres, neighbours, r / r_max)``: the edges of ``graph`` shorter than ``r_max`` (Å),
    as sender and receiver indices and relative length (a graph built with a Verlet skin holds
    longer ones too)."""
    vectors = edge_vectors(
        graph.positions.detach(),
        graph.cell,
        graph.shifts,
        graph.senders,
        graph.receivers,
        graph.batch,
    )
    x = torch.linalg.vector_norm(vectors, dim=1) / r_max
    keep = x < 1.0
    return graph.senders[keep], graph.receivers[keep], x[keep]


def rigidity_pass(
    model: MaceModel, graph: Graph, rigidity: LastLayerRigidity, forces: bool, stress: bool
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """One model pass with the features recorded: ``(out, extra)``, ``out`` as from
    :func:`~ase_equi.model.gradients.energy_forces_stress`, ``extra`` the calibrated
    ``energy_uncertainty`` (eV, float, the first graph's) and ``forces_uncertainty``
    (eV/Å, numpy ``[n]``)."""
    with capture_features(model) as capture:
        out = energy_forces_stress(model, graph, forces=forces, stress=stress)
    f_i = capture.node_features()
    if rigidity.forces_estimate == JACOBIAN_RANK4:
        from .rigidity_jacobian import jacobian_forces_uncertainty  # it imports this module

        inverse = rigidity.inverse_covariance.to(f_i.device)
        sigma = jacobian_forces_uncertainty(
            model, graph, inverse, rigidity.forces_factor, rank=JACOBIAN_RANK
        )
    else:
        pairs = None
        if rigidity.forces_estimate != LOCAL:
            pairs = neighbour_pairs(graph, float(model.config.r_max))
        sigma = rigidity.forces_uncertainty(f_i, pairs)
    extra = {
        "energy_uncertainty": float(rigidity.energy_uncertainty(f_i, graph.batch, 1)[0]),
        "forces_uncertainty": sigma.detach().cpu().numpy(),
    }
    return out, extra
