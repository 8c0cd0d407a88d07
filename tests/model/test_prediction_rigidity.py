"""Last-layer prediction rigidity: the features reproduce the model's energy exactly, C is the
explicit sum over structures, and σ_E, u_i are the formulas computed by hand (numpy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import ELEMENTS, R_MAX, emt_structures, tiny_config

from ase_equi import MaceModel
from ase_equi.graph import atoms_to_graph
from ase_equi.graph.build import batch_graphs
from ase_equi.model.gradients import energy_forces_stress
from ase_equi.model.prediction_rigidity import (
    LastLayerRigidity,
    RigidityStatistics,
    capture_features,
    feature_dim,
    readout_weights,
    regularised_inverse,
)


@pytest.fixture(scope="module")
def model() -> MaceModel:
    torch.manual_seed(7)
    cfg = tiny_config(scale=1.7, shift=0.3, readout_hidden=6)
    return MaceModel(cfg).double().eval()


def features_of(model: MaceModel, atoms) -> tuple[np.ndarray, dict]:
    graph = atoms_to_graph(atoms, ELEMENTS, R_MAX, dtype=torch.float64)
    with capture_features(model) as capture:
        out = energy_forces_stress(model, graph, forces=True)
    return capture.node_features().detach().numpy(), out


def test_energy_is_linear_in_the_features(model):
    """ε_i = E0 + μ + w·f_i to 1e-10 (float64): the hooks see exactly what the readouts use."""
    w = readout_weights(model).numpy()
    assert w.shape == (feature_dim(model),) == (8 + 6,)  # (T-1) channels + readout_hidden
    for atoms in emt_structures(3):
        f_i, out = features_of(model, atoms)
        e0 = np.array([-0.3, -0.5])[[ELEMENTS.index(z) for z in atoms.numbers]]
        expected = e0 + 0.3 + f_i @ w
        assert np.abs(expected - out["node_energies"].detach().numpy()).max() < 1e-10
        assert abs(expected.sum() - float(out["energy"][0].detach())) < 1e-10


def test_hooks_are_removed_after_the_block(model):
    with capture_features(model) as capture:
        pass
    readouts = list(model.readouts)
    assert not readouts[0]._forward_pre_hooks and not readouts[-1].non_linearity._forward_hooks
    atoms = emt_structures(1)[0]
    energy_forces_stress(model, atoms_to_graph(atoms, ELEMENTS, R_MAX, dtype=torch.float64))
    assert capture.calls == 0 and not capture.blocks


def test_covariances_are_the_explicit_sums(model):
    """C = Σ_s f_s f_sᵀ and C_loc = Σ_i f_i f_iᵀ from batched passes equal the sums of
    features of the structures evaluated one by one."""
    frames = emt_structures(5, seed=3)
    stats = RigidityStatistics(feature_dim(model))
    for part in (frames[:2], frames[2:]):
        graph = batch_graphs(
            [atoms_to_graph(a, ELEMENTS, R_MAX, dtype=torch.float64) for a in part]
        )
        with capture_features(model) as capture:
            energy_forces_stress(model, graph, forces=False)
        stats.add(capture.node_features(), graph.batch, graph.num_graphs)
    singles = [features_of(model, a)[0] for a in frames]
    c = sum(np.outer(f.sum(0), f.sum(0)) for f in singles)
    c_loc = sum(f.T @ f for f in singles)
    assert np.allclose(stats.covariance.numpy(), c, rtol=1e-12, atol=1e-12)
    assert np.allclose(stats.local_covariance.numpy(), c_loc, rtol=1e-12, atol=1e-12)
    assert (stats.structures, stats.atoms) == (5, 20)


def test_uncertainties_are_the_formulas(model):
    frames = emt_structures(6, seed=5)
    singles = [features_of(model, a)[0] for a in frames]
    c = sum(np.outer(f.sum(0), f.sum(0)) for f in singles[:4])
    c_loc = sum(f.T @ f for f in singles[:4])
    d = c.shape[0]
    lam, lam_loc = 1e-3 * np.trace(c) / d, 1e-2 * np.trace(c_loc) / d
    inverse = regularised_inverse(torch.from_numpy(c), 1e-3)
    local = regularised_inverse(torch.from_numpy(c_loc), 1e-2)
    rigidity = LastLayerRigidity(inverse, local, energy_factor=2.5, forces_factor=0.7)
    for f in singles[4:]:
        f_s = f.sum(0)
        sigma = 2.5 * np.sqrt(f_s @ np.linalg.solve(c + lam * np.eye(d), f_s))
        u = 0.7 * np.sqrt(
            np.einsum("nd,nd->n", f, np.linalg.solve(c_loc + lam_loc * np.eye(d), f.T).T)
        )
        f_t = torch.from_numpy(f)
        got = rigidity.energy_uncertainty(f_t, torch.zeros(len(f), dtype=torch.long), 1)
        assert abs(float(got[0]) - sigma) < 1e-8 * sigma
        assert np.allclose(rigidity.forces_uncertainty(f_t).numpy(), u, rtol=1e-8, atol=0)


def test_jacobian_uncertainty_is_the_diagonal_of_j_c_j(model):
    """u_i = α √(Σ_β (Jᵀ C⁻¹ J)_{iβ,iβ}) with J = ∂f_s/∂r from torch's own Jacobian of the
    structure features (a finite-difference-free reference), for a random SPD C⁻¹."""
    from ase_equi.graph.tensors import edge_vectors
    from ase_equi.model.rigidity_jacobian import feature_jacobian, jacobian_forces_uncertainty

    atoms = emt_structures(1, seed=11)[0]
    graph = atoms_to_graph(atoms, ELEMENTS, R_MAX, dtype=torch.float64)
    d = feature_dim(model)
    a = torch.from_numpy(np.random.default_rng(2).standard_normal((d, d)))
    inverse = a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)

    def f_s(positions):
        vectors = edge_vectors(
            positions, graph.cell, graph.shifts, graph.senders, graph.receivers, graph.batch
        )
        with capture_features(model) as capture:
            model(graph.element_index, vectors, graph.senders, graph.receivers, graph.batch, 1)
        return capture.node_features().sum(0)

    jac = torch.autograd.functional.jacobian(f_s, graph.positions.clone())  # [d, n, 3]
    torch.testing.assert_close(feature_jacobian(model, graph), jac, rtol=1e-10, atol=1e-12)
    expected = 0.6 * torch.einsum("dnb,de,enb->n", jac, inverse, jac).sqrt()
    got = jacobian_forces_uncertainty(model, graph, inverse, factor=0.6)
    torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-12)
    # rank r: only the r largest eigenvalues of C⁻¹, Σ_k λ_k (v_k · J)² summed over k ≤ r
    lam, vec = torch.linalg.eigh(inverse)
    top = vec[:, -3:]  # eigh sorts ascending: the 3 largest
    truncated = torch.einsum("dk,dnb->knb", top, jac) ** 2
    expected_3 = 0.6 * torch.einsum("k,knb->n", lam[-3:], truncated).sqrt()
    got_3 = jacobian_forces_uncertainty(model, graph, inverse, factor=0.6, rank=3)
    torch.testing.assert_close(got_3, expected_3, rtol=1e-8, atol=1e-12)
    assert bool((got_3 < got).all())
    full = jacobian_forces_uncertainty(model, graph, inverse, factor=0.6, rank=d)
    torch.testing.assert_close(full, expected, rtol=1e-8, atol=1e-12)
    for bad in (0, d + 1):
        with pytest.raises(ValueError, match=f"rank must be 1..{d}"):
            jacobian_forces_uncertainty(model, graph, inverse, rank=bad)
    two = batch_graphs([graph, graph])
    with pytest.raises(ValueError, match="one structure"):
        jacobian_forces_uncertainty(model, two, inverse)
