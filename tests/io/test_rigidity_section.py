"""The prediction-rigidity section of a model file: round trip, weights unchanged, and every
tampering or malformed section refused with an error naming it."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import emt_structures
from safetensors.torch import load_file

from ase_equi.errors import ModelFileError
from ase_equi.io.model_file import read_model_file
from ase_equi.io.model_header import header_digest
from ase_equi.io.rigidity_section import SECTION, TENSORS, rigidity_entry, write_rigidity
from ase_equi.model.prediction_rigidity import LastLayerRigidity, feature_dim


def _rigidity(d: int, seed: int = 0) -> LastLayerRigidity:
    a = torch.from_numpy(np.random.default_rng(seed).standard_normal((d, d)))
    info = {
        "method": "llpr",
        "head": "Default",
        "feature_dim": d,
        "features": "test",
        "forces_estimate": "local",
        "regulariser": 1e-6,
        "local_regulariser": 1e-4,
        "n_structures": 3,
        "n_atoms": 12,
        "data": "random",
        "calibration": {"data": "none"},
    }
    return LastLayerRigidity(a @ a.T, a.T @ a + torch.eye(d), 1.5, 0.25, info=info)


@pytest.fixture
def section_file(tmp_path, model_path):
    for suffix in (".json", ".safetensors", ".md"):
        shutil.copy(model_path.with_suffix(suffix), tmp_path / f"tiny{suffix}")
    return tmp_path / "tiny.json"


def _energies(loaded) -> list[float]:
    from ase_equi import EquivariantCalculator

    calc = EquivariantCalculator(loaded)
    return [calc.get_potential_energy(a) for a in emt_structures(3)]


def test_round_trip_keeps_weights_and_section(section_file):
    before = read_model_file(section_file)
    assert before.rigidity is None  # a file without the section is read as before
    assert SECTION not in json.loads(section_file.read_text())
    rigidity = _rigidity(feature_dim(before.model))
    write_rigidity(section_file, rigidity, card_entry={"estimate": "LLPR test entry"})
    after = read_model_file(section_file)
    assert after.card["uncertainty"] == {"estimate": "LLPR test entry"}
    header = json.loads(section_file.read_text())
    card = section_file.with_suffix(".md").read_text()  # rendered again, with the new hashes
    assert "LLPR test entry" in card and header["header_sha256"] in card
    assert torch.equal(after.rigidity.inverse_covariance, rigidity.inverse_covariance)
    assert torch.equal(after.rigidity.local_inverse_covariance, rigidity.local_inverse_covariance)
    assert (after.rigidity.energy_factor, after.rigidity.forces_factor) == (1.5, 0.25)
    assert after.rigidity.info["regulariser"] == 1e-6
    for key, value in before.model.state_dict().items():
        assert torch.equal(value, after.model.state_dict()[key]), key
    assert _energies(before) == _energies(after)
    write_rigidity(section_file, None)  # removed again: the file reads as one without it
    removed = read_model_file(section_file)
    assert removed.rigidity is None and "uncertainty" not in removed.card


def test_new_section_drops_the_old_card_entry(section_file, loaded_model):
    """The card's ``uncertainty`` entry describes one section: replacing the section without
    a new entry leaves none (not the old figures); an entry without a section is refused."""
    d = feature_dim(loaded_model.model)
    write_rigidity(section_file, _rigidity(d), card_entry={"estimate": "old factors 1.5, 0.25"})
    write_rigidity(section_file, _rigidity(d, seed=1))
    assert "uncertainty" not in read_model_file(section_file).card
    assert "old factors" not in section_file.with_suffix(".md").read_text()
    with pytest.raises(ValueError, match="card_entry without a rigidity"):
        write_rigidity(section_file, None, card_entry={"estimate": "none"})


def test_info_the_section_cannot_hold_is_refused(section_file, loaded_model):
    rigidity = _rigidity(feature_dim(loaded_model.model))
    rigidity.info["notes"] = "would be dropped"
    before = section_file.read_bytes()
    with pytest.raises(ValueError, match=r"has no field\(s\) \['notes'\]"):
        write_rigidity(section_file, rigidity)
    assert section_file.read_bytes() == before


def _edit(path, change) -> None:
    header = json.loads(path.read_text())
    change(header)
    header["header_sha256"] = header_digest(header)
    path.write_text(json.dumps(header))


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda h: h[SECTION].update(forces_factor=-1.0), "'forces_factor' must be finite"),
        (lambda h: h[SECTION].pop("head"), "exactly the fields"),
        (lambda h: h[SECTION].update(feature_dim="8"), "'feature_dim' must be a int"),
        (lambda h: h[SECTION].update(feature_dim=7), "must be float64 \\[7, 7\\]"),
        (lambda h: h.pop(SECTION), "without the field"),
        (lambda h: h[SECTION].update(method="mc-dropout"), "method 'llpr'"),
        (lambda h: h[SECTION].update(head="Defualt"), "names head 'Defualt', not one of"),
    ],
)
def test_malformed_section_is_refused(section_file, loaded_model, change, match):
    write_rigidity(section_file, _rigidity(feature_dim(loaded_model.model)))
    _edit(section_file, change)
    with pytest.raises(ModelFileError, match=match) as err:
        read_model_file(section_file)
    assert SECTION in str(err.value)


def test_tampered_section_fails_the_hashes(section_file, loaded_model):
    write_rigidity(section_file, _rigidity(feature_dim(loaded_model.model)))
    original = section_file.read_text()
    header = json.loads(original)
    header[SECTION]["forces_factor"] = 0.5  # edited without rehashing
    section_file.write_text(json.dumps(header))
    with pytest.raises(ModelFileError, match="header SHA-256"):
        read_model_file(section_file)
    section_file.write_text(original)
    weights = section_file.with_suffix(".safetensors")
    blob = bytearray(weights.read_bytes())
    blob[-3] ^= 0xFF  # one byte of the tensor data
    weights.write_bytes(bytes(blob))
    with pytest.raises(ModelFileError, match="SHA-256"):
        read_model_file(section_file)


def test_section_must_fit_the_model(section_file, loaded_model):
    """A feature size other than the model's is refused by name (a section for another model)."""
    d = feature_dim(loaded_model.model)
    write_rigidity(section_file, _rigidity(d + 2))
    with pytest.raises(ModelFileError, match="prediction_rigidity' has feature_dim"):
        read_model_file(section_file)
    assert set(TENSORS.values()) <= set(load_file(section_file.with_suffix(".safetensors")))


@pytest.mark.filterwarnings("ignore:.*not covered by a hash")  # format 1's own warning
def test_section_in_a_format_1_file_is_refused(tmp_path):
    """Format 1 checks no such field and has no header hash: a section there (here with a
    negative force factor) is refused by name, not read."""
    from conftest import tiny_config
    from safetensors.torch import save
    from test_model_file_hostile import write_v1

    from ase_equi import MaceModel

    path = tmp_path / "old.json"
    model = MaceModel(tiny_config()).double()
    write_v1(model, path)
    rigidity = _rigidity(feature_dim(model))
    rigidity.forces_factor = -0.25
    tensors = load_file(path.with_suffix(".safetensors"))
    for key, name in TENSORS.items():
        value = getattr(rigidity, key)
        tensors[name] = 0.5 * (value + value.T)
    blob = save(tensors)
    path.with_suffix(".safetensors").write_bytes(blob)
    header = json.loads(path.read_text())
    header[SECTION] = rigidity_entry(rigidity)
    header["weights_sha256"], header["weights_bytes"] = hashlib.sha256(blob).hexdigest(), len(blob)
    path.write_text(json.dumps(header))
    with pytest.raises(ModelFileError, match="'prediction_rigidity' needs format version 2"):
        read_model_file(path)
