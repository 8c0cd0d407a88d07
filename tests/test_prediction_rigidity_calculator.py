"""A single model with a prediction-rigidity section in the calculator: the uncertainties are
the formulas of its stored covariances, nothing is computed unless asked, thresholds act, and
a model without the section (or stress) is refused by name."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import torch
from ase.calculators.calculator import PropertyNotImplementedError
from conftest import ELEMENTS, R_MAX, emt_structures

import ase_equi.model.prediction_rigidity as llpr
from ase_equi import EquivariantCalculator
from ase_equi.graph import atoms_to_graph
from ase_equi.io.model_file import read_model_file
from ase_equi.io.rigidity_section import write_rigidity
from ase_equi.model.gradients import energy_forces_stress
from ase_equi.uncertainty import UncertainStructureError, UncertaintyWarning


def _features(model, atoms) -> np.ndarray:
    graph = atoms_to_graph(atoms, ELEMENTS, R_MAX, dtype=torch.float64)
    with llpr.capture_features(model) as capture:
        energy_forces_stress(model, graph, forces=False)
    return capture.node_features().detach().numpy()


@pytest.fixture(scope="module")
def rigid_path(tmp_path_factory, model_path, loaded_model):
    """The tiny model with a section fitted on four EMT cells (factors 3 and 0.5)."""
    directory = tmp_path_factory.mktemp("rigid")
    for suffix in (".json", ".safetensors", ".md"):
        shutil.copy(model_path.with_suffix(suffix), directory / f"tiny{suffix}")
    feats = [_features(loaded_model.model, a) for a in emt_structures(4, seed=9)]
    c = torch.from_numpy(sum(np.outer(f.sum(0), f.sum(0)) for f in feats))
    c_loc = torch.from_numpy(sum(f.T @ f for f in feats))
    info = {
        "method": "llpr",
        "head": "Default",
        "feature_dim": c.shape[0],
        "features": "test",
        "forces_estimate": "local",
        "regulariser": 1e-3,
        "local_regulariser": 1e-3,
        "n_structures": 4,
        "n_atoms": 16,
        "data": "emt_structures(4, seed=9)",
        "calibration": {},
    }
    inverse, local = llpr.regularised_inverse(c, 1e-3), llpr.regularised_inverse(c_loc, 1e-3)
    rigidity = llpr.LastLayerRigidity(inverse, local, 3.0, 0.5, info=info)
    return write_rigidity(directory / "tiny", rigidity)


@pytest.fixture(scope="module")
def rigid(rigid_path):
    """The model with its section, loaded once (calculators share it)."""
    return read_model_file(rigid_path)


def test_uncertainties_are_the_stored_formulas(rigid):
    loaded = rigid
    inverse = loaded.rigidity.inverse_covariance.numpy()
    local = loaded.rigidity.local_inverse_covariance.numpy()
    calc, plain = EquivariantCalculator(rigid), EquivariantCalculator(rigid)
    extra = set(calc.implemented_properties) - set(EquivariantCalculator.implemented_properties)
    assert extra == {"energy_uncertainty", "forces_uncertainty"}
    for atoms in emt_structures(2, seed=4):
        f = _features(loaded.model, atoms)
        sigma = 3.0 * np.sqrt(f.sum(0) @ inverse @ f.sum(0))
        u = 0.5 * np.sqrt(np.einsum("nd,de,ne->n", f, local, f))
        assert abs(calc.get_property("energy_uncertainty", atoms) - sigma) < 1e-9 * sigma
        assert np.allclose(calc.get_property("forces_uncertainty", atoms), u, rtol=1e-9)
        # the energy and forces are the model's, with or without the uncertainty
        assert calc.get_potential_energy(atoms) == plain.get_potential_energy(atoms)
        assert np.array_equal(calc.get_forces(atoms), plain.get_forces(atoms))
    with pytest.raises(PropertyNotImplementedError, match="stress_uncertainty needs a committee"):
        calc.get_property("stress_uncertainty", emt_structures(1)[0])


def test_plain_model_refuses_uncertainty(loaded_model):
    calc = EquivariantCalculator(loaded_model)
    assert calc.implemented_properties == EquivariantCalculator.implemented_properties
    for name in ("energy_uncertainty", "forces_uncertainty"):
        with pytest.raises(PropertyNotImplementedError, match="or a prediction-rigidity section"):
            calc.get_property(name, emt_structures(1)[0])
    with pytest.raises(ValueError, match="uncertainty_threshold needs a committee or a predic"):
        EquivariantCalculator(loaded_model, uncertainty_threshold=0.1)


def test_nothing_is_computed_unless_asked(rigid, monkeypatch):
    """The feature hooks run only once an uncertainty was asked (then in every pass)."""
    calls = []
    real = llpr.capture_features

    def counting(model):
        calls.append(1)
        return real(model)

    monkeypatch.setattr(llpr, "capture_features", counting)
    calc = EquivariantCalculator(rigid)
    atoms = emt_structures(1)[0]
    atoms.calc = calc
    atoms.get_forces()
    atoms.get_stress()
    atoms.positions[0, 0] += 0.01
    atoms.get_forces()
    assert calls == [] and "forces_uncertainty" not in calc.results
    calc.get_property("forces_uncertainty", atoms)
    atoms.positions[0, 0] += 0.01
    atoms.get_forces()
    assert len(calls) == 2 and "forces_uncertainty" in calc.results


def test_threshold_actions(rigid):
    atoms = emt_structures(1, seed=2)[0]
    seen = []
    calc = EquivariantCalculator(
        rigid, uncertainty_threshold=1e-9, on_uncertain=lambda *a: seen.append(a[1])
    )
    atoms.calc = calc
    atoms.get_potential_energy()  # the threshold alone makes every pass compute u
    assert len(seen) == 1 and seen[0] == calc.results["forces_uncertainty"].max() > 1e-9
    atoms.calc = EquivariantCalculator(rigid, uncertainty_threshold=1e-9)
    with pytest.warns(UncertaintyWarning, match="passes uncertainty_threshold=1e-09 eV/Å"):
        atoms.get_forces()
    atoms.calc = EquivariantCalculator(rigid, uncertainty_threshold=1e-9, on_uncertain="raise")
    with pytest.raises(UncertainStructureError, match="atom"):
        atoms.get_forces()
    atoms.calc = EquivariantCalculator(rigid, uncertainty_threshold=1e9, on_uncertain="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        atoms.get_forces()
