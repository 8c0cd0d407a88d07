"""The neighbourhood force estimates of a prediction-rigidity section: u_i = α sqrt(q_i + the
w(r_ij) q_j of every atom within r_max of atom i, w = 1 or (1 + cos πr/r_max)/2), checked
against sums written out by hand and an independent neighbour list (ASE's); they round-trip
through the file, a file that says ``local`` reads as before, and an unknown estimate is
refused by name."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list
from conftest import ELEMENTS, R_MAX, emt_structures

import ase_equi.model.prediction_rigidity as llpr
from ase_equi import EquivariantCalculator
from ase_equi.errors import ModelFileError
from ase_equi.graph import atoms_to_graph
from ase_equi.io.model_file import read_model_file
from ase_equi.io.rigidity_section import write_rigidity
from ase_equi.model.gradients import energy_forces_stress


def features_of(model, atoms) -> np.ndarray:
    graph = atoms_to_graph(atoms, ELEMENTS, R_MAX, dtype=torch.float64)
    with llpr.capture_features(model) as capture:
        energy_forces_stress(model, graph, forces=False)
    return capture.node_features().detach().numpy()


def section(loaded_model, estimate: str) -> llpr.LastLayerRigidity:
    """A section fitted on three EMT cells, forces factor 0.7."""
    feats = [features_of(loaded_model.model, a) for a in emt_structures(3, seed=5)]
    c = torch.from_numpy(sum(np.outer(f.sum(0), f.sum(0)) for f in feats))
    c_loc = torch.from_numpy(sum(f.T @ f for f in feats))
    info = {
        "method": "llpr",
        "head": "Default",
        "feature_dim": c.shape[0],
        "features": "test",
        "forces_estimate": estimate,
        "regulariser": 1e-3,
        "local_regulariser": 1e-3,
        "n_structures": 3,
        "n_atoms": 12,
        "data": "emt_structures(3, seed=5)",
        "calibration": {},
    }
    inverse, local = llpr.regularised_inverse(c, 1e-3), llpr.regularised_inverse(c_loc, 1e-3)
    return llpr.LastLayerRigidity(inverse, local, 2.0, 0.7, info=info)


@pytest.fixture(scope="module")
def written(tmp_path_factory, model_path, loaded_model):
    """``{estimate: JSON path}``: the tiny model with a local and a neighbourhood section."""
    out = {}
    for estimate in ("local", "neighbourhood", "neighbourhood_smooth"):
        directory = tmp_path_factory.mktemp(estimate)
        for suffix in (".json", ".safetensors", ".md"):
            shutil.copy(model_path.with_suffix(suffix), directory / f"tiny{suffix}")
        out[estimate] = write_rigidity(directory / "tiny", section(loaded_model, estimate))
    return out


def test_formula_by_hand():
    """Three atoms in a chain 0-1-2 (pairs both ways), C_loc⁻¹ = I: q_i = |f_i|²."""
    f = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]], dtype=torch.float64)
    eye = torch.eye(2, dtype=torch.float64)
    info = {"forces_estimate": "neighbourhood"}
    rigidity = llpr.LastLayerRigidity(eye, eye, 1.0, 0.5, info=info)
    x = torch.tensor([0.5, 0.5, 1 / 3, 1 / 3], dtype=torch.float64)  # r / r_max
    pairs = (torch.tensor([0, 1, 1, 2]), torch.tensor([1, 0, 2, 1]), x)
    want = 0.5 * np.sqrt([1 + 4, 4 + 1 + 9, 9 + 4])
    assert np.allclose(rigidity.forces_uncertainty(f, pairs).numpy(), want, rtol=1e-14)
    with pytest.raises(ValueError, match="needs the atom pairs"):
        rigidity.forces_uncertainty(f)
    # smooth weights: (1 + cos(π/2))/2 = 1/2 for the 0-1 pair, (1 + cos(π/3))/2 = 3/4 for 1-2
    rigidity.info["forces_estimate"] = "neighbourhood_smooth"
    want = 0.5 * np.sqrt([1 + 4 / 2, 4 + 1 / 2 + 9 * 3 / 4, 9 + 4 * 3 / 4])
    assert np.allclose(rigidity.forces_uncertainty(f, pairs).numpy(), want, rtol=1e-14)
    local = llpr.LastLayerRigidity(eye, eye, 1.0, 0.5, info={"forces_estimate": "local"})
    assert np.allclose(local.forces_uncertainty(f, pairs).numpy(), 0.5 * np.array([1, 2, 3]))
    assert llpr.LastLayerRigidity(eye, eye).forces_estimate == "local"  # no info: as before


def hand_u(rigidity, features: np.ndarray, atoms, smooth: bool) -> np.ndarray:
    """α sqrt(q_i + Σ_j w q_j) over ASE's neighbour list within R_MAX (images included)."""
    local = rigidity.local_inverse_covariance.numpy()
    q = np.einsum("nd,de,ne->n", features, local, features)
    i, j, d = neighbor_list("ijd", atoms, R_MAX)
    total = q.copy()
    for a, b, r in zip(i, j, d, strict=True):
        total[a] += (0.5 * (1 + np.cos(np.pi * r / R_MAX)) if smooth else 1.0) * q[b]
    return rigidity.forces_factor * np.sqrt(total)


@pytest.mark.parametrize("estimate", ["neighbourhood", "neighbourhood_smooth"])
def test_calculator_gives_the_neighbourhood_sum(written, estimate):
    loaded = read_model_file(written[estimate])
    assert loaded.rigidity.forces_estimate == estimate
    calc = EquivariantCalculator(loaded)
    cluster = Atoms("Al3Cu", positions=[[0, 0, 0], [2.6, 0, 0], [0, 2.9, 0], [9.0, 0, 0]])
    for atoms in [*emt_structures(2, seed=11), cluster]:
        feats = features_of(loaded.model, atoms)
        want = hand_u(loaded.rigidity, feats, atoms, estimate.endswith("smooth"))
        assert np.allclose(calc.get_property("forces_uncertainty", atoms), want, rtol=1e-9)
    # the isolated Cu atom has no neighbours: its own rigidity alone, as the local estimate
    f_cu = features_of(loaded.model, cluster)[3]
    q_cu = f_cu @ loaded.rigidity.local_inverse_covariance.numpy() @ f_cu
    got = calc.get_property("forces_uncertainty", cluster)[3]
    assert got == pytest.approx(0.7 * np.sqrt(q_cu), rel=1e-12)


def test_pairs_ignore_the_skin():
    """A graph built with a Verlet skin has longer edges; the pairs are those within r_max."""
    atoms = emt_structures(1, seed=3)[0]
    plain = atoms_to_graph(atoms, ELEMENTS, R_MAX, dtype=torch.float64)
    skinned = atoms_to_graph(atoms, ELEMENTS, R_MAX + 1.0, dtype=torch.float64)
    assert skinned.senders.numel() > plain.senders.numel()
    centres, neighbours, x = llpr.neighbour_pairs(skinned, R_MAX)
    got = sorted(zip(centres.tolist(), neighbours.tolist(), (R_MAX * x).tolist(), strict=True))
    i, j, d = neighbor_list("ijd", atoms, R_MAX)
    want = sorted(zip(i.tolist(), j.tolist(), d.tolist(), strict=True))
    assert [g[:2] for g in got] == [w[:2] for w in want]
    assert np.allclose([g[2] for g in got], [w[2] for w in want], rtol=0, atol=1e-12)


def test_round_trip_and_local_files_unchanged(written, loaded_model):
    for estimate, path in written.items():
        loaded = read_model_file(path)
        assert json.loads(path.read_text())["prediction_rigidity"]["forces_estimate"] == estimate
        assert loaded.rigidity.info["forces_estimate"] == estimate
        assert loaded.rigidity.forces_factor == 0.7
    # a "local" file (what every file written before the neighbourhood estimate says):
    # the atom's own rigidity, as before
    loaded = read_model_file(written["local"])
    atoms = emt_structures(1, seed=11)[0]
    feats = features_of(loaded.model, atoms)
    local = loaded.rigidity.local_inverse_covariance.numpy()
    want = 0.7 * np.sqrt(np.einsum("nd,de,ne->n", feats, local, feats))
    got = EquivariantCalculator(loaded).get_property("forces_uncertainty", atoms)
    assert np.allclose(got, want, rtol=1e-9)


def test_unknown_estimate_refused(tmp_path, model_path, loaded_model):
    for suffix in (".json", ".safetensors", ".md"):
        shutil.copy(model_path.with_suffix(suffix), tmp_path / f"tiny{suffix}")
    with pytest.raises(ModelFileError, match="prediction_rigidity.*forces_estimate one of"):
        write_rigidity(tmp_path / "tiny", section(loaded_model, "jacobian"))


def test_calculator_gives_the_rank4_jacobian_form(tmp_path, model_path, loaded_model):
    """``jacobian_rank4``: u_i = α √(Σ_{k≤4} λ_k |v_k · ∂f_s/∂r_i|²) over the 4 largest
    eigenpairs of the stored C⁻¹, with J from torch's own Jacobian of the structure features
    (not the batched backward pass the calculator uses); energy and forces unchanged."""
    from ase_equi.graph.tensors import edge_vectors

    for suffix in (".json", ".safetensors", ".md"):
        shutil.copy(model_path.with_suffix(suffix), tmp_path / f"tiny{suffix}")
    path = write_rigidity(tmp_path / "tiny", section(loaded_model, "jacobian_rank4"))
    loaded = read_model_file(path)
    assert loaded.rigidity.forces_estimate == "jacobian_rank4"
    calc, plain = EquivariantCalculator(loaded), EquivariantCalculator(loaded)
    lam, vec = torch.linalg.eigh(loaded.rigidity.inverse_covariance)
    for atoms in emt_structures(2, seed=13):
        graph = atoms_to_graph(atoms, ELEMENTS, R_MAX, dtype=torch.float64)

        def f_s(positions, graph=graph):
            vectors = edge_vectors(
                positions, graph.cell, graph.shifts, graph.senders, graph.receivers, graph.batch
            )
            with llpr.capture_features(loaded.model) as capture:
                loaded.model(
                    graph.element_index, vectors, graph.senders, graph.receivers, graph.batch, 1
                )
            return capture.node_features().sum(0)

        jac = torch.autograd.functional.jacobian(f_s, graph.positions.clone())  # [d, n, 3]
        projected = torch.einsum("dk,dnb->knb", vec[:, -4:], jac) ** 2  # 4 largest λ
        want = 0.7 * torch.einsum("k,knb->n", lam[-4:], projected).sqrt()
        got = calc.get_property("forces_uncertainty", atoms)
        assert np.allclose(got, want.numpy(), rtol=1e-8, atol=0)
        assert np.array_equal(calc.get_forces(atoms), plain.get_forces(atoms))
