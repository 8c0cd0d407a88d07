"""Model files (JSON header + safetensors weights + markdown card): round trip and refusals.

Every damaged or foreign file must be refused with ``ModelFileError`` and a message that names
what is wrong, never loaded into a model that silently gives other numbers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

from ase_equi import EquivariantCalculator, MaceModel, load_model, save_model
from ase_equi.cli import main
from ase_equi.io.model_file import LoadedModel, ModelFileError, model_paths


@pytest.fixture
def model_copy(model_path: Path, tmp_path: Path) -> Path:
    """A private copy of the session model (JSON, weights, card) that a test may damage."""
    for source in model_paths(model_path):
        shutil.copy(source, tmp_path / source.name)
    return tmp_path / model_path.name


def energies_of(calc: EquivariantCalculator, structure) -> list[np.ndarray]:
    """Per-atom energies and forces of two structures, for bit-for-bit comparisons."""
    out = []
    for name in ("bulk", "slab"):
        atoms = structure(name)
        atoms.calc = calc
        out += [atoms.get_potential_energies(), atoms.get_forces()]
    return out


@pytest.mark.parametrize("name", ["roundtrip", "cu_r3.5_v0.2"], ids=["plain", "dotted-name"])
def test_round_trip_bit_for_bit(name, tmp_path, structure):
    """save → load reproduces the model exactly: same energies and forces, bit for bit, as the
    in-memory model it was saved from, whichever of the three paths (or the stem) is given.
    A name may contain dots (versions, cutoffs): the files are NAME.json, NAME.safetensors and
    NAME.md, and the path save_model returns loads."""
    torch.manual_seed(7)
    model = MaceModel(tiny_config())
    written = save_model(model, tmp_path / name)
    assert written == tmp_path / f"{name}.json" and written.exists()
    in_memory = LoadedModel(model=model, config=model.config, source="in-memory")
    expected = energies_of(EquivariantCalculator(in_memory, dtype="float64"), structure)
    _, weights_path, card_path = model_paths(written)
    assert weights_path.exists() and card_path.exists()
    for path in (written, weights_path, tmp_path / name):
        got = energies_of(EquivariantCalculator(path, dtype="float64"), structure)
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_array_equal(a, b)


def test_load_then_save_is_lossless(model_path, tmp_path, structure):
    """Loading a model file (at its default dtype) and saving it again must not change it: the
    float64 energies of the re-saved file equal those of the original, bit for bit."""
    resaved = save_model(load_model(model_path).model, tmp_path / "again")
    original = energies_of(EquivariantCalculator(model_path, dtype="float64"), structure)
    again = energies_of(EquivariantCalculator(resaved, dtype="float64"), structure)
    for a, b in zip(again, original, strict=True):
        np.testing.assert_array_equal(a, b)


def test_newer_format_version_is_refused(model_copy):
    header = json.loads(model_copy.read_text())
    header["format_version"] += 1
    model_copy.write_text(json.dumps(header))
    with pytest.raises(ModelFileError, match=r"format version 3, newer .* upgrade"):
        load_model(model_copy)


def test_truncated_weights_are_refused(model_copy):
    weights = model_paths(model_copy)[1]
    blob = weights.read_bytes()
    weights.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ModelFileError, match=rf"truncated.*expected {len(blob)} bytes"):
        load_model(model_copy)


def test_tampered_weights_are_refused(model_copy):
    """One flipped bit deep in the tensor data, same size: only the SHA-256 can tell."""
    weights = model_paths(model_copy)[1]
    blob = bytearray(weights.read_bytes())
    blob[len(blob) - 100] ^= 0x01
    weights.write_bytes(bytes(blob))
    with pytest.raises(ModelFileError, match="SHA-256"):
        load_model(model_copy)


def test_missing_config_is_refused(model_copy):
    model_copy.unlink()
    with pytest.raises(ModelFileError, match=r"config .*tiny\.json is missing"):
        load_model(model_paths(model_copy)[1])  # asking for the weights, which are there


def test_missing_weights_are_refused(model_copy):
    model_paths(model_copy)[1].unlink()
    with pytest.raises(ModelFileError, match=r"weights .*tiny\.safetensors are missing"):
        load_model(model_copy)


def test_invalid_json_is_refused(model_copy):
    model_copy.write_text(model_copy.read_text()[:-20])
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load_model(model_copy)


def test_calculator_refuses_damaged_file(model_copy):
    """The calculator loads through the same checks (no way around the hash)."""
    weights = model_paths(model_copy)[1]
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(ModelFileError, match="SHA-256"):
        EquivariantCalculator(model_copy)


def test_card_names_the_elements(model_path):
    card = model_paths(model_path)[2]
    assert card.exists()
    text = card.read_text()
    assert "Al, Cu" in text
    assert "3.5 Å" in text  # the cutoff


def test_cli_info_prints_the_card(model_path, capsys):
    assert main(["info", str(model_path)]) == 0
    printed = capsys.readouterr().out
    assert printed == model_paths(model_path)[2].read_text()
    assert "Al, Cu" in printed


def test_cli_info_reports_a_bad_file(model_copy, capsys):
    header = json.loads(model_copy.read_text())
    header["format_version"] = 99
    model_copy.write_text(json.dumps(header))
    assert main(["info", str(model_copy)]) == 2
    assert "format version 99" in capsys.readouterr().err


def test_cli_info_and_upgrade_name_damaged_weights(model_copy, capsys):
    """``info`` and ``upgrade`` check the weights' hash too: one flipped byte is named (exit 2),
    not described as a sound model or reported as upgraded; a sound format-2 file is said to
    need no upgrade."""
    assert main(["upgrade", str(model_copy)]) == 0
    assert "already format version 2 (weights hash checked)" in capsys.readouterr().out
    weights = model_paths(model_copy)[1]
    blob = bytearray(weights.read_bytes())
    blob[-5] ^= 1
    weights.write_bytes(bytes(blob))
    for command in ("info", "upgrade"):
        assert main([command, str(model_copy)]) == 2
        assert "SHA-256" in capsys.readouterr().err


def test_one_load_model_and_io_modules_import_no_private_names():
    """Issue 13: ``ase_equi.load_model`` is the only ``load_model`` (io's reader of our files is
    ``read_model_file``), no io/ module imports another's ``_private`` name, and every io/
    module stays under 400 lines."""
    import ast

    import ase_equi.io.model_file as model_file

    assert not hasattr(model_file, "load_model")
    assert "read_model_file" in model_file.__all__
    offenders, long_modules = [], []
    for path in sorted(Path(model_file.__file__).parent.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") >= 400:
            long_modules.append(path.name)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                offenders += [f"{path.name}: {a.name}" for a in node.names if a.name[0] == "_"]
    assert offenders == []
    assert long_modules == []
