"""The bundled zoo: every model loads, matches its SHA-256 and predicts its card's samples."""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

import ase_equi
from ase_equi import EquivariantCalculator, load_model
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
    for field in (
        "level_of_theory",
        "training_data",
        "test_errors",
        "intended_use",
        "limits",
        "physics_checks",
        "sample_energies",
    ):
        assert card.get(field), f"{name}: card lacks {field}"
    assert (ZOO_DIR / f"{name}.md").exists()


@pytest.mark.parametrize("name", EXPECTED)
def test_zoo_model_predicts_its_card_samples(name):
    header = json.loads(zoo_path(name).read_text())
    calc = EquivariantCalculator(name)  # by zoo name
    for sample in header["card"]["sample_energies"]:
        atoms = Atoms(
            numbers=sample["numbers"],
            positions=sample["positions"],
            cell=sample["cell"],
            pbc=sample["pbc"],
        )
        atoms.calc = calc
        energy = atoms.get_potential_energy()
        assert energy == pytest.approx(sample["energy_eV"], abs=1e-6 * len(atoms)), (
            name,
            sample["formula"],
        )
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


def test_every_zoo_model_is_format_2_and_pinned():
    from ase_equi.io.model_header import header_digest
    from ase_equi.zoo import ZOO_PINS

    for name in EXPECTED:
        header = json.loads(zoo_path(name).read_text())
        assert header["format_version"] == 2
        assert header_digest(header) == header["header_sha256"] == ZOO_PINS[name]


def test_a_replaced_zoo_file_is_refused(tmp_path, monkeypatch):
    """Someone re-saves a zoo model with another card (a valid, self-consistent file): by name
    it is refused, since its hash is not the pinned one; by path it still loads."""
    import ase_equi.zoo as zoo
    from ase_equi import load_model, save_model
    from ase_equi.io.model_file import ModelFileError

    for source in ZOO_DIR.glob("silicon-xtb.*"):
        (tmp_path / source.name).write_bytes(source.read_bytes())
    loaded = load_model(tmp_path / "silicon-xtb.json", dtype=None)
    save_model(
        loaded.model.float(),
        tmp_path / "silicon-xtb",
        card={**loaded.card, "level_of_theory": "DFT (not really)"},
    )
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path)
    with pytest.raises(ModelFileError, match="zoo model 'silicon-xtb' .* was replaced"):
        EquivariantCalculator("silicon-xtb")
    assert load_model(tmp_path / "silicon-xtb.json").card["level_of_theory"].startswith("DFT")


def test_cli_info_prints_the_physical_checks_as_a_table(capsys):
    assert main(["info", "metals"]) == 0
    out = capsys.readouterr().out
    assert "| quantity | model | reference | deviation |" in out
    cu_a0 = load_model("metals").card["physics_checks"]["equation_of_state"]["Cu"]["a0"]
    shown = f"{cu_a0['deviation_percent']} %"
    assert (
        f"| equation of state / Cu / a0 | {cu_a0['model']} | {cu_a0['reference']} | {shown} |"
        in out
    )
    assert '{"equation_of_state"' not in out and '[{"check"' not in out  # not one line of JSON
    assert "| check | subject | property | model | reference | deviation | target | result |" in out


def test_the_zoo_lives_in_top_level_models_shipped_as_its_own_package():
    """Issue 13: the zoo is the project's top-level ``models/``, installed as the package-data
    package ``ase_equi_zoo`` (a name no one confuses with ``ase_equi.model``)."""
    assert not (Path(ase_equi.__file__).parent / "models").exists()
    assert ZOO_DIR == Path(str(importlib.resources.files("ase_equi_zoo")))
    assert {f"{name}.json" for name in EXPECTED} <= {p.name for p in ZOO_DIR.glob("*.json")}


def test_every_package_folder_is_listed_in_pyproject():
    """pyproject lists the packages (the zoo needs a package-dir mapping, so they are not
    found automatically): a new subpackage missing from the list would be left out of the
    wheel."""
    tomllib = pytest.importorskip("tomllib")
    root = Path(ase_equi.__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        pytest.skip("installed from a wheel: no pyproject.toml beside the package")
    settings = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {
        ".".join(p.parent.relative_to(root).parts) for p in (root / "ase_equi").rglob("__init__.py")
    }
    assert folders - set(settings["packages"]) == set()
    assert settings["package-dir"] == {"ase_equi_zoo": "models"}
    assert "ase_equi_zoo" in settings["packages"]


def test_the_installed_package_finds_the_zoo_from_any_directory(tmp_path):
    """Run from a directory outside the checkout, the installed package (editable or not)
    still finds the three zoo models."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = "import ase_equi.zoo as z; print(' '.join(z.zoo_names()))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert set(EXPECTED) <= set(result.stdout.split())
