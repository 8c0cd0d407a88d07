"""Committee uncertainty in the calculator: means and spreads against single-model calculators
of the members, committee files, calibration, thresholds and the MD observer."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from ase.calculators.calculator import PropertyNotImplementedError
from ase.io import read
from ase.md.verlet import VelocityVerlet
from conftest import ELEMENTS, R_MAX, emt_structures, make_structure, tiny_config

from ase_equi import EquivariantCalculator, MaceModel, load_model, save_model
from ase_equi.errors import ModelFileError
from ase_equi.graph import atoms_to_graph
from ase_equi.io.model_committee import (
    committee_from_models,
    join_committee_files,
    read_committee_file,
    save_committee,
    write_calibration,
)
from ase_equi.io.model_file import LoadedModel, read_model_file
from ase_equi.io.model_header import read_header
from ase_equi.model.committee import member_derivatives
from ase_equi.model.shallow_ensemble import ShallowEnsemble
from ase_equi.uncertainty import UncertainStructureError, UncertaintyWarning
from ase_equi.uncertainty_calibration import (
    calibrate_committee,
    fit_calibration,
    miscalibration_area,
)
from ase_equi.uncertainty_log import UncertaintyLog
from ase_equi.uncertainty_training import shallow_loss, train_shallow_ensemble

TOL = 1e-10


@pytest.fixture(scope="module")
def member_pairs(tmp_path_factory) -> list[tuple[str, LoadedModel]]:
    """Three tiny models of one architecture (other seeds, E0 and shifts): file and model."""
    directory = tmp_path_factory.mktemp("committee")
    out = []
    for seed in range(3):
        torch.manual_seed(10 + seed)
        cfg = tiny_config(reference_energies=(-0.3, -0.5 + 0.01 * seed), shift=0.01 * seed)
        model = MaceModel(cfg).double()
        path = str(save_model(model, directory / f"seed{seed}"))
        out.append((path, LoadedModel(model=model, config=cfg, source=path)))
    return out


@pytest.fixture(scope="module")
def member_files(member_pairs) -> list[str]:
    return [path for path, _ in member_pairs]


@pytest.fixture(scope="module")
def committee_file(member_files, tmp_path_factory) -> str:
    return str(join_committee_files(member_files, tmp_path_factory.mktemp("c") / "committee"))


@pytest.fixture(scope="module")
def members(member_pairs) -> list[LoadedModel]:
    """The members as built (building the e3nn modules is the slow part: done once)."""
    return [loaded for _, loaded in member_pairs]


@pytest.fixture(scope="module")
def committee(members):
    """The members as one committee, shared by calculators that do not test loading."""
    return committee_from_models(members)


def copy_model_file(path: str, directory) -> str:
    """A copy of a model file (header, weights, card) in ``directory``; the JSON path."""
    for suffix in (".json", ".safetensors", ".md"):
        source = path.replace(".json", suffix)
        shutil.copy(source, directory / source.rsplit("/", 1)[-1])
    return str(directory / path.rsplit("/", 1)[-1])


def member_predictions(members, atoms):
    """Energy, forces and Voigt stress of every member, each by its own plain calculator."""
    energies, forces, stresses = [], [], []
    for member in members:
        a = atoms.copy()
        a.calc = EquivariantCalculator(member)
        energies.append(a.get_potential_energy())
        forces.append(a.get_forces())
        stresses.append(a.get_stress())
    return np.array(energies), np.array(forces), np.array(stresses)


@pytest.mark.parametrize("source", ["list", "file"])
def test_committee_mean_and_spread_equal_the_members(members, member_files, committee_file, source):
    atoms = make_structure("bulk")
    atoms.calc = EquivariantCalculator(member_files if source == "list" else committee_file)
    energies, forces, stresses = member_predictions(members, atoms)
    assert abs(atoms.get_potential_energy() - energies.mean()) < TOL
    np.testing.assert_allclose(atoms.get_forces(), forces.mean(0), atol=TOL, rtol=0)
    np.testing.assert_allclose(atoms.get_stress(), stresses.mean(0), atol=TOL, rtol=0)
    calc = atoms.calc
    # sample standard deviations (divisor M - 1)
    expected_energy = np.std(energies, ddof=1)
    assert abs(calc.get_property("energy_uncertainty", atoms) - expected_energy) < TOL
    per_atom = np.sqrt((np.std(forces, axis=0, ddof=1) ** 2).sum(axis=1))
    got = calc.get_property("forces_uncertainty", atoms)
    assert got.shape == (len(atoms),)
    np.testing.assert_allclose(got, per_atom, atol=TOL, rtol=0)
    stress_std = np.std(stresses, axis=0, ddof=1)
    np.testing.assert_allclose(
        calc.get_property("stress_uncertainty", atoms), stress_std, atol=TOL, rtol=0
    )
    assert abs(np.std(energies, ddof=0) - expected_energy) > 1e-3 * expected_energy


def test_spread_is_computed_only_once_asked(committee):
    atoms = make_structure("bulk")
    atoms.calc = EquivariantCalculator(committee)
    atoms.get_forces()
    assert "forces_uncertainty" not in atoms.calc.results
    atoms.calc.get_property("forces_uncertainty", atoms)
    atoms.positions[0, 0] += 0.01
    atoms.get_forces()  # a later pass, asked for forces only: the spread comes along
    assert "forces_uncertainty" in atoms.calc.results


def test_stress_uncertainty_needs_a_cell_of_rank_3(committee):
    atoms = make_structure("molecule")
    atoms.calc = EquivariantCalculator(committee)
    with pytest.raises(PropertyNotImplementedError, match="rank 3"):
        atoms.calc.get_property("stress_uncertainty", atoms)
    assert atoms.calc.get_property("energy_uncertainty", atoms) > 0


def test_one_model_refuses_uncertainty_by_name(model_path):
    atoms = make_structure("bulk")
    atoms.calc = EquivariantCalculator(model_path)
    for name in ("energy_uncertainty", "forces_uncertainty"):
        with pytest.raises(PropertyNotImplementedError, match=f"{name} needs a committee"):
            atoms.calc.get_property(name, atoms)
    with pytest.raises(ValueError, match="uncertainty_threshold needs a committee"):
        EquivariantCalculator(model_path, uncertainty_threshold=0.1)


def test_members_with_other_cutoffs_are_refused(members, member_files, tmp_path):
    torch.manual_seed(3)
    other = str(save_model(MaceModel(tiny_config(r_max=4.0)), tmp_path / "wide"))
    with pytest.raises(ValueError, match=r"seed0.* and .*wide.* differ in r_max: 3.5 vs 4.0"):
        EquivariantCalculator([member_files[0], other])
    torch.manual_seed(3)
    cfg = tiny_config(elements=(29,), reference_energies=(-0.5,))
    cu = LoadedModel(model=MaceModel(cfg), config=cfg, source="cu.json")
    with pytest.raises(
        ValueError, match=r"a.json and cu.json differ in elements: \[13, 29\] vs \[29\]"
    ):
        committee_from_models([members[0], cu], sources=["a.json", "cu.json"])


def test_committee_file_is_one_hashed_file(committee_file):
    header = json.loads(open(committee_file).read())
    assert header["committee"]["kind"] == "full" and header["committee"]["size"] == 3
    assert header["committee"]["std_ddof"] == 1
    with pytest.raises(ModelFileError, match="committee"):
        load_model(committee_file)  # one-model loaders refuse it by name
    with pytest.raises(ModelFileError, match="is a committee"):
        read_model_file(committee_file)
    header["committee"]["members"][1]["shift"] = 0.5  # edited: the header hash fails
    tampered = committee_file.replace("committee.json", "tampered.json")
    with open(tampered, "w") as fh:
        json.dump(header, fh)
    with pytest.raises(ModelFileError, match="SHA-256"):
        read_committee_file(tampered)


def test_shallow_ensemble_file_round_trip(tmp_path):
    torch.manual_seed(4)
    ensemble = ShallowEnsemble(MaceModel(tiny_config()).double(), 3)
    path = save_committee(ensemble, tmp_path / "shallow")
    atoms = make_structure("small_cell")
    loaded = read_committee_file(path)
    assert loaded.model.kind == "shallow" and loaded.model.size == 3
    before = EquivariantCalculator(read_committee_file(path))
    after = EquivariantCalculator(path)
    for calc in (before, after):
        calc.get_property("forces_uncertainty", atoms.copy())
    np.testing.assert_array_equal(before.results["forces"], after.results["forces"])
    assert before.results["energy_uncertainty"] > 0


def test_calibration_round_trips_through_the_file(committee, committee_file, tmp_path):
    path = copy_model_file(committee_file, tmp_path)
    atoms = make_structure("bulk")
    raw = EquivariantCalculator(committee)
    raw_u = raw.get_property("forces_uncertainty", atoms.copy())
    write_calibration(path, {"factor": 2.5, "quantity": "forces"})
    assert read_header(path)["uncertainty_calibration"]["factor"] == 2.5
    calc = EquivariantCalculator(path)
    a = atoms.copy()
    a.calc = calc
    np.testing.assert_allclose(calc.get_property("forces_uncertainty", a), 2.5 * raw_u, rtol=1e-12)
    assert (
        abs(
            calc.get_property("energy_uncertainty", a)
            - 2.5 * raw.get_property("energy_uncertainty", atoms.copy())
        )
        < TOL
    )
    with pytest.raises(ModelFileError, match="factor"):
        write_calibration(path, {"factor": -1.0})


def test_fitted_calibration_makes_errors_and_uncertainty_agree(committee_file, tmp_path):
    """Fitted on EMT-labelled frames: the normalised force errors then have unit RMS (the
    definition of the factor), the stored factor is the fitted one, and the area shrinks."""
    path = copy_model_file(committee_file, tmp_path)
    frames = emt_structures(4, seed=3)
    report = calibrate_committee(path, frames, plot=tmp_path / "calibration.png")
    factor = report["factor"]
    assert read_header(path)["uncertainty_calibration"]["factor"] == factor
    calc = EquivariantCalculator(path)
    errors, sigmas = [], []
    for frame in frames:
        atoms = frame.copy()
        atoms.calc = calc
        errors.append(atoms.get_forces() - frame.get_forces())
        sigmas.append(calc.get_property("forces_uncertainty", atoms))
    e, s = np.concatenate(errors), np.concatenate(sigmas)
    assert abs(np.mean((e**2).sum(1) / s**2) - 1.0) < 1e-8
    assert report["miscalibration_area"] <= report["area_before"]
    assert (tmp_path / "calibration.png").stat().st_size > 1000


def test_fit_and_area_on_gaussian_errors():
    rng = np.random.default_rng(1)
    sigma = rng.uniform(0.05, 0.5, 30000)
    errors = 3.0 * sigma[:, None] / np.sqrt(3.0) * rng.standard_normal((30000, 3))
    assert abs(fit_calibration(errors, sigma) - 3.0) < 0.03
    assert miscalibration_area(errors, sigma, 3.0) < 0.01
    assert miscalibration_area(errors, sigma, 1.0) > 0.2  # overconfident by 3x


def test_threshold_actions(committee):
    atoms = make_structure("bulk")
    atoms.calc = EquivariantCalculator(committee, uncertainty_threshold=1e-6)
    with pytest.warns(UncertaintyWarning, match="passes uncertainty_threshold=1e-06 eV/Å"):
        atoms.get_potential_energy()
    atoms.calc.set(on_uncertain="raise")
    with pytest.raises(UncertainStructureError, match="atom"):
        atoms.get_potential_energy()
    for getter in (atoms.get_potential_energy, atoms.get_forces):  # refused again, not cached
        with pytest.raises(UncertainStructureError, match="atom"):
            getter()
    assert atoms.calc.results == {}
    seen = []
    atoms.calc.set(on_uncertain=lambda a, value, results: seen.append(value))
    atoms.get_forces()
    assert seen == [pytest.approx(atoms.calc.results["forces_uncertainty"].max(), abs=0)]
    atoms.calc.set(uncertainty_threshold=1e6)  # far above: nothing happens
    atoms.positions[1, 2] += 0.02
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        atoms.get_forces()
    assert len(seen) == 1


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"uncertainty_threshold": -0.1}, "uncertainty_threshold must be"),
        ({"uncertainty_threshold": True}, "uncertainty_threshold must be"),
        ({"on_uncertain": "ignore"}, "on_uncertain must be"),
    ],
)
def test_uncertainty_options_are_checked(committee_file, options, match):
    with pytest.raises(ValueError, match=match):
        EquivariantCalculator(committee_file, **options)


def test_md_observer_writes_the_flagged_frames(committee, tmp_path):
    atoms = make_structure("bulk")
    atoms.calc = EquivariantCalculator(committee)
    atoms.calc.get_property("forces_uncertainty", atoms)
    threshold = float(np.median(atoms.calc.results["forces_uncertainty"]))  # some flagged
    log = UncertaintyLog(atoms, tmp_path / "flagged.xyz", threshold)
    dyn = VelocityVerlet(atoms, timestep=1.0)
    seen = []
    dyn.attach(log, interval=1)
    dyn.attach(lambda: seen.append(atoms.calc.results["forces_uncertainty"].max()), interval=1)
    dyn.run(4)
    expected = [k for k, u in enumerate(seen) if u > threshold]
    assert log.flagged == expected and expected
    frames = read(tmp_path / "flagged.xyz", ":")
    assert len(frames) == len(expected)
    assert [f.info["step"] for f in frames] == expected
    assert frames[0].calc is None  # no model energy or forces posing as labels
    np.testing.assert_allclose(
        frames[0].info["max_forces_uncertainty"], seen[expected[0]], rtol=1e-12
    )


def test_train_shallow_ensemble_fits_only_the_new_readouts(members):
    """The trunk (and so member 0) stays the model; the new readouts move and lower the loss."""
    model = members[0].model
    data = emt_structures(2, seed=5)
    start = train_shallow_ensemble(model, data, 3, epochs=0, seed=1)
    trained = train_shallow_ensemble(model, data, 3, epochs=3, lr=0.02, seed=1)
    for name, value in model.state_dict().items():
        assert torch.equal(trained.trunk.state_dict()[name], value.double()), name
    graphs = [atoms_to_graph(a, ELEMENTS, R_MAX) for a in data]

    def loss(ensemble):
        return sum(
            float(
                shallow_loss(
                    ensemble,
                    g,
                    torch.tensor(a.get_potential_energy()),
                    torch.as_tensor(a.get_forces()),
                    torch.ones(2),
                    10.0,
                ).detach()
            )
            for g, a in zip(graphs, data, strict=True)
        )

    assert loss(trained) < loss(start)
    before = member_derivatives(start, graphs[0])["member_forces"]
    after = member_derivatives(trained, graphs[0])["member_forces"]
    torch.testing.assert_close(after[0], before[0], rtol=0, atol=1e-12)  # member 0: the model
    assert not torch.allclose(after[1:], before[1:])
