"""The bundled zoo: every model loads, matches its SHA-256 and predicts its card's samples."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from ase import Atoms

from ase_equi import EquivariantCalculator
from ase_equi.cli import main
from ase_equi.zoo import ZOO_DIR, zoo_names, zoo_path

EXPECTED = ("metals", "molecules-pbe", "silicon-xtb")


def test_the_zoo_has_its_three_models():
    assert set(EXPECTED) <= set(zoo_names())


@pytest.mark.parametrize("name", EXPECTED)
def test_zoo_file_hash_and_card(name):
    header = json.loads(zoo_path(name).read_text())
    blob = (ZOO_DIR / header["weights"]).read_bytes()
    assert hashlib.sha256(blob).hexdigest() == header["weights_sha256"]
    assert len(blob) == header["weights_bytes"] < 5 * 2**20  # a few MB at most
    card = header["card"]
    for field in ("level_of_theory", "training_data", "test_errors", "intended_use", "limits",
                  "physics_checks", "sample_energies"):
        assert card.get(field), f"{name}: card lacks {field}"
    assert (ZOO_DIR / f"{name}.md").exists()


@pytest.mark.parametrize("name", EXPECTED)
def test_zoo_model_predicts_its_card_samples(name):
    header = json.loads(zoo_path(name).read_text())
    calc = EquivariantCalculator(name)  # by zoo name
    for sample in header["card"]["sample_energies"]:
        atoms = Atoms(numbers=sample["numbers"], positions=sample["positions"],
                      cell=sample["cell"], pbc=sample["pbc"])
        atoms.calc = calc
        energy = atoms.get_potential_energy()
        assert energy == pytest.approx(sample["energy_eV"], abs=1e-6 * len(atoms)), (
            name, sample["formula"])
        assert np.isfinite(atoms.get_forces()).all()


def test_unknown_zoo_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="the zoo has: metals, molecules-pbe, silicon-xtb"):
        EquivariantCalculator("metal")


def test_cli_zoo_and_info(capsys):
    assert main(["zoo"]) == 0
    table = capsys.readouterr().out
    for name in EXPECTED:
        assert f"| {name} |" in table
    assert main(["info", "metals"]) == 0
    card = capsys.readouterr().out
    assert "EMT" in card and "weights SHA-256" in card
    assert main(["info", "no-such-zoo-model"]) == 2
    assert "unknown zoo model 'no-such-zoo-model'; the zoo has: metals" in capsys.readouterr().err
