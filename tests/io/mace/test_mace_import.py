"""MACE .model files: our importer reproduces mace-torch 0.3.16's own numbers.

The reference numbers were computed by mace-torch itself (scripts/make_mace_reference.py, in a
separate virtual environment); nothing here imports mace. Tolerances are the issue's: float64
≤ 1e-8 eV/atom in energy and ≤ 1e-8 eV/Å in forces (stress ≤ 1e-8 eV/Å³ on bulk cells; the
issue asks 1e-9 eV/Å³, which ``test_reproduces_mace_torch`` checks as well),
float32 ≤ 1e-5 in the same units.

mace-torch replaces the cell vector of a non-periodic direction by a long one of its own before
computing the stress, so its slab stress is that of another box; slabs are compared on
energies and forces only.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase.calculators.fd import calculate_numerical_forces
from mace_data import (
    DATA,
    SINGLE_HEAD_NAMES,
    atoms_from_record,
    compare_with_reference,
    model_file,
    reference,
)

from ase_equi import EquivariantCalculator, load_model
from ase_equi.cli import main as cli_main
from ase_equi.errors import UnsupportedMaceFeature
from ase_equi.io.mace import load_mace_model

TOL = {"float64": 1e-8, "float32": 1e-5}
STRESS_TOL = {"float64": 1e-9, "float32": 1e-5}  # eV/Å³


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", SINGLE_HEAD_NAMES)
def test_reproduces_mace_torch(name, dtype):
    calc = EquivariantCalculator(str(model_file(name)), dtype=dtype)
    worst = compare_with_reference(calc, reference(name)["structures"], dtype)
    print(f"{name} {dtype} worst deviations: {worst}")
    for key, value in worst.items():
        limit = STRESS_TOL[dtype] if key == "stress" else TOL[dtype]
        assert value <= limit, (key, value)


@pytest.mark.parametrize("name", ["mace_nonresidual", "mpa0_medium"])
def test_converted_safe_file_gives_the_same_numbers(tmp_path, name):
    out = tmp_path / "converted"
    assert cli_main(["import-mace", str(model_file(name)), "-o", str(out)]) == 0
    direct = EquivariantCalculator(str(model_file(name)))
    converted = EquivariantCalculator(str(out) + ".json")
    for record in reference(name)["structures"].values():
        a, b = atoms_from_record(record["atoms"]), atoms_from_record(record["atoms"])
        a.calc, b.calc = direct, converted
        assert a.get_potential_energy() == b.get_potential_energy()
        np.testing.assert_array_equal(a.get_forces(), b.get_forces())
    header = json.loads((tmp_path / "converted.json").read_text())
    assert header["card"]["head"] == "Default"
    assert load_model(out).config.residual_first is False


def _fixture(tmp_path, name: str):
    import lzma

    path = tmp_path / f"{name}.model"
    path.write_bytes(lzma.decompress((DATA / f"{name}.model.xz").read_bytes()))
    return path


@pytest.mark.parametrize(
    ("name", "feature"),
    [
        # in mace-torch but in no released model
        ("unsupported_soft", "Soft distance transform"),
        # an edited file: ZBL envelope of order 6, radial cutoff of order 5
        ("unsupported_zbl_order", "ZBL envelope of order 6 different from the radial cutoff's 5"),
    ],
)
def test_unsupported_feature_is_refused_by_name(tmp_path, name, feature):
    with pytest.raises(UnsupportedMaceFeature, match=feature):
        EquivariantCalculator(str(_fixture(tmp_path, name)))


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        ("unsupported_zbl", "pair_repulsion", True),
        ("unsupported_agnesi", "distance_transform", "Agnesi"),
    ],
)
def test_zbl_and_agnesi_files_load(tmp_path, name, field, value):
    """Files that were refused before ZBL and Agnesi were implemented now load with them."""
    loaded = load_mace_model(_fixture(tmp_path, name))
    assert getattr(loaded.config, field) == value


def test_mpa0_short_contact_forces_equal_finite_differences():
    """MPA-0 architecture (density blocks, ZBL, Agnesi) at O-H 0.52 Å and H-H 0.47 Å, where the
    ZBL envelope and the Agnesi transform both act: forces are -dE/dr."""
    record = reference("mpa0_medium")["structures"]["short_contact"]
    atoms = atoms_from_record(record["atoms"])
    atoms.calc = EquivariantCalculator(str(model_file("mpa0_medium")))
    forces = atoms.get_forces()
    assert np.abs(forces).max() > 10.0  # the repulsion dominates at these contacts
    numerical = calculate_numerical_forces(atoms, eps=1e-4)
    np.testing.assert_allclose(forces, numerical, atol=1e-5 * np.abs(forces).max())


def test_multihead_model_each_head_matches_mace(tmp_path):
    import lzma

    ref = json.loads((DATA / "reference_multihead.json").read_text())
    path = tmp_path / "multihead.model"
    path.write_bytes(lzma.decompress((DATA / "multihead.model.xz").read_bytes()))
    for head in ("Default", "pbe"):
        loaded = load_mace_model(path, head=head)
        atoms = atoms_from_record(ref["atoms"])
        atoms.calc = EquivariantCalculator(loaded)
        n = len(atoms)
        stress = atoms.get_stress()
        assert abs(atoms.get_potential_energy() - ref[head]["energy"]) / n <= 1e-8
        assert np.abs(atoms.get_forces() - ref[head]["forces"]).max() <= 1e-8
        assert np.abs(stress - ref[head]["stress"]).max() <= 1e-8
    # MACE's default head is 'Default'; an unknown head lists the ones that exist
    assert load_mace_model(path).card["head"] == "Default"
    with pytest.raises(ValueError, match=r"no head 'xyz'.*\['Default', 'pbe'\]"):
        load_mace_model(path, head="xyz")


def test_loading_runs_no_pickled_code(monkeypatch):
    """The importer never calls torch.load (which would unpickle with code execution)."""

    def forbidden(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", forbidden)
    load_mace_model(model_file("mace_nonresidual"))
