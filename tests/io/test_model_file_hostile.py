"""Hostile and edited model files (format 2): every one is refused, fast, naming the problem.

The files are written by the tests themselves (small on disk). Edited headers are re-hashed
where the test is about a later check (a consistent hostile file, not an accidental edit).
Cases that could exhaust memory or time before the fix run in a child process with a 2 GiB
address-space limit and a timeout, so a regression fails instead of taking the machine down.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from ase_equi import EquivariantCalculator, MaceModel, load_model, save_model
from ase_equi.io.model_file import ModelFileError, model_paths
from ase_equi.io.model_header import header_digest


@pytest.fixture
def model_copy(model_path: Path, tmp_path: Path) -> Path:
    """A private copy of the session model, one folder down (so ``..`` has somewhere to go)."""
    folder = tmp_path / "models"
    folder.mkdir()
    for source in model_paths(model_path):
        shutil.copy(source, folder / source.name)
    return folder / model_path.name


def edit(json_path: Path, change, *, rehash: bool = True) -> None:
    """Apply ``change(header)`` to a header file, re-hashing it unless told not to."""
    header = json.loads(json_path.read_text())
    change(header)
    if rehash:
        try:
            header["header_sha256"] = header_digest(header)
        except ValueError:  # NaN: no canonical form; the reader refuses it before the hash
            pass
    json_path.write_text(json.dumps(header))


CHILD = textwrap.dedent(
    """
    import resource, sys, time
    resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))
    import torch
    from ase_equi import load_model
    torch.set_num_threads(1)
    for path in sys.argv[1:]:
        start = time.perf_counter()
        try:
            load_model(path)
            result = "LOADED"
        except Exception as err:
            result = f"{type(err).__name__} {err}"
        print(path, "->", result.replace("\\n", " "), round(time.perf_counter() - start, 2))
    """
)


def load_in_child(*json_paths: Path, timeout: float = 90.0) -> dict[str, str]:
    """Load each file in one memory- and time-limited child: path -> printed error or LOADED.

    One child for all (importing torch costs seconds); a file that exhausts the 2 GiB or the
    time kills the child, so the cases after it are missing and the test fails.
    """
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, *map(str, json_paths)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    results = dict(line.split(" -> ", 1) for line in out.stdout.splitlines() if " -> " in line)
    return {
        str(p): results.get(str(p), f"NO RESULT; stderr: {out.stderr[-1000:]}") for p in json_paths
    }


# --- issue 3: the header is covered by a hash --------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"), [("r_max", 3.0), ("avg_num_neighbors", 3.0), ("envelope_p", 2)]
)
def test_edited_config_is_refused_by_the_header_hash(model_copy, field, value):
    """Editing the physics in the header (weights untouched) used to load another model."""
    edit(model_copy, lambda h: h["config"].update({field: value}), rehash=False)
    with pytest.raises(ModelFileError, match="header SHA-256 check.*edited"):
        load_model(model_copy)


@pytest.mark.parametrize(
    "change",
    [
        lambda h: h["heads"]["Default"].update(scale=2.0),
        lambda h: h["heads"]["Default"]["reference_energies"].__setitem__(0, 1.0),
        lambda h: h["card"].update(level_of_theory="CCSD(T)"),
        lambda h: h.update(weights_sha256="0" * 64),
    ],
    ids=["scale", "E0", "card", "weights-hash"],
)
def test_edited_heads_card_or_weights_hash_are_refused(model_copy, change):
    edit(model_copy, change, rehash=False)
    with pytest.raises(ModelFileError, match="header SHA-256"):
        load_model(model_copy)


def test_e0_scale_shift_live_only_in_the_heads(model_copy):
    """The weights carry no E0/scale/shift; a format-2 weights file that does is refused."""
    header = json.loads(model_copy.read_text())
    assert set(header["heads"]["Default"]) >= {"reference_energies", "scale", "shift"}
    assert not {"reference_energies", "scale", "shift"} & set(header["config"])
    weights = model_paths(model_copy)[1]
    tensors = load_safetensors(weights.read_bytes())
    assert not {"reference_energies", "scale", "shift"} & set(tensors)
    tensors["scale"] = torch.tensor(5.0)
    blob = save_safetensors(tensors)
    weights.write_bytes(blob)
    import hashlib

    edit(
        model_copy,
        lambda h: h.update(
            weights_sha256=hashlib.sha256(blob).hexdigest(), weights_bytes=len(blob)
        ),
    )
    with pytest.raises(ModelFileError, match=r"\['scale'\].*only in the header's heads"):
        load_model(model_copy)


def test_float64_reference_energies_round_trip_exactly(tmp_path):
    """JSON keeps Python floats exactly: E0 with 17 significant digits come back bit for bit."""
    e0 = (-1234.5678901234567, 0.1 + 0.2)
    model = MaceModel(tiny_config(reference_energies=e0, shift=-1e-17, scale=1 / 3))
    loaded = load_model(save_model(model, tmp_path / "exact"))
    assert loaded.config.reference_energies == e0
    assert loaded.model.reference_energies.tolist() == list(e0)
    assert loaded.config.scale == 1 / 3 and loaded.config.shift == -1e-17


def test_heads_share_the_readouts_and_differ_by_e0_and_shift(tmp_path, structure):
    """Two heads: E_B − E_A = Σ_i (E0_B − E0_A)[z_i] + N (shift_B − shift_A) for equal scales;
    an unknown head is refused with the list of heads."""
    torch.manual_seed(3)
    model = MaceModel(tiny_config())
    heads = {
        "A": {"reference_energies": [-0.3, -0.5], "scale": 0.2, "shift": 0.0},
        "B": {
            "reference_energies": [-1.3, -2.5],
            "scale": 0.2,
            "shift": 0.25,
            "card": {"level_of_theory": "other"},
        },
    }
    path = save_model(model, tmp_path / "two", heads=heads, default_head="A")
    atoms = structure("bulk")
    energy = {}
    for head in ("A", "B"):
        loaded = load_model(path, head=head)
        assert loaded.head == head and loaded.heads == ["A", "B"]
        atoms.calc = EquivariantCalculator(loaded, dtype="float64")
        energy[head] = atoms.get_potential_energy()
    n_al = int((atoms.numbers == 13).sum())
    n_cu = len(atoms) - n_al
    expected = n_al * (-1.0) + n_cu * (-2.0) + len(atoms) * 0.25
    assert energy["B"] - energy["A"] == pytest.approx(expected, abs=1e-9)
    assert load_model(path).head == "A"
    with pytest.raises(ModelFileError, match=r"no head 'C'; its heads are \['A', 'B'\]"):
        load_model(path, head="C")


# --- issue 4: types, bounds, confinement -------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h: h.update(format_version=-7), "format version -7; this ase_equi reads"),
        (lambda h: h.update(format_version=True), "'format_version' must be an integer"),
        (lambda h: h.update(card=["x"]), "'card' must be a JSON object"),
        (lambda h: h.update(weights_bytes="1234"), "'weights_bytes' must be an integer"),
        (lambda h: h.update(weights_bytes=True), "'weights_bytes' must be an integer"),
        (lambda h: h.update(weights_bytes=-1), "'weights_bytes' must be an integer"),
        (lambda h: h.update(weights_sha256=123), "'weights_sha256' must be 64 lowercase hex"),
        (lambda h: h.update(dtype="int8"), "'dtype' must be one of"),
        (lambda h: h.update(committee={"members": 4}), "'committee' is set"),
        (lambda h: h.update(extra_field=1), r"unknown field\(s\) \['extra_field'\]"),
        (lambda h: h["heads"]["Default"].update(scale=float("nan")), "not a number JSON"),
        (lambda h: h["heads"]["Default"].update(reference_energies=[1.0]), "2 numbers"),
        (lambda h: h["config"].update(scale=1.0), r"'config' holds \['scale'\]"),
        (lambda h: h.update(default_head="Other"), "'default_head' 'Other' is not one of"),
    ],
)
def test_mistyped_header_fields_are_named(model_copy, change, message):
    edit(model_copy, change)
    with pytest.raises(ModelFileError, match=message):
        load_model(model_copy)


HOSTILE = {
    "channels": (lambda h: h["config"].update(channels=30000), "channels = 30000 is outside"),
    "num_interactions": (
        lambda h: h["config"].update(num_interactions=10**6, correlation=3),
        "num_interactions = 1000000 is outside",
    ),
    "r_max": (lambda h: h["config"].update(r_max=1e6), "r_max = 1000000.0 is outside"),
    "max_ell": (lambda h: h["config"].update(max_ell=50), "max_ell = 50 is outside"),
    "dev-zero": (lambda h: h.update(weights="/dev/zero"), "'weights' must be a plain file name"),
    "dotdot": (lambda h: h.update(weights="../../etc/hostname"), "'weights' must be a plain"),
    "size": (lambda h: h.update(weights_bytes=8 * 2**30), "padded: expected 8589934592 bytes"),
    "bigger-than-file": (lambda h: h["config"].update(channels=64), "element embedding has"),
}


def test_hostile_headers_fail_fast_in_bounded_memory(model_copy, tmp_path):
    """Each used to cost a minute and gigabytes, hang, leak e3nn's NotImplementedError or read
    outside the folder; now each is refused before anything is built or read (in a child with
    2 GiB of address space and a time limit). A FIFO as weights (which would block a reader
    forever) is refused by its size and kind, unread."""
    paths = {}
    for case, (change, _) in HOSTILE.items():
        folder = tmp_path / case / "models"
        folder.mkdir(parents=True)
        for source in model_paths(model_copy):
            shutil.copy(source, folder / source.name)
        paths[case] = folder / model_copy.name
        edit(paths[case], change)
    fifo = tmp_path / "fifo" / "models"
    fifo.mkdir(parents=True)
    shutil.copy(model_copy, fifo / model_copy.name)
    os.mkfifo(fifo / model_paths(model_copy)[1].name)
    got = load_in_child(*paths.values(), fifo / model_copy.name)
    for case, (_, message) in HOSTILE.items():
        text = got[str(paths[case])]
        assert text.startswith("ModelFileError") and message in text, (case, text)
    text = got[str(fifo / model_copy.name)]
    assert text.startswith("ModelFileError") and "found 0" in text, text


def test_weights_symlinked_outside_the_folder_are_refused(model_copy, tmp_path):
    weights = model_paths(model_copy)[1]
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(weights, outside)
    weights.symlink_to(outside)
    with pytest.raises(ModelFileError, match="outside the header's folder"):
        load_model(model_copy)


def test_oversized_header_is_refused_unread(model_copy):
    """A 17 MiB header (sparse: nothing on disk) is refused by its size before parsing."""
    with open(model_copy, "r+b") as fh:
        fh.truncate(17 * 2**20)
    with pytest.raises(ModelFileError, match="at most 16,777,216 are read"):
        load_model(model_copy)


@pytest.mark.parametrize("name", ["x.model.xz", "tiny.json.gz"])
def test_compressed_files_must_be_decompressed_first(tmp_path, name):
    from ase_equi.zoo import resolve

    (tmp_path / name).write_bytes(b"\xfd7zXZ\x00")
    for call in (
        lambda: load_model(tmp_path / name),
        lambda: resolve(tmp_path / name),
        lambda: EquivariantCalculator(str(tmp_path / name)),
    ):
        with pytest.raises(ModelFileError, match="is compressed.*decompress it first"):
            call()


def test_save_writes_the_header_last_and_atomically(tmp_path, monkeypatch):
    """Every file goes through a temporary name and a rename; the header is renamed last."""
    renamed = []
    real_replace = os.replace

    def spy(src, dst):
        renamed.append(Path(dst).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    save_model(MaceModel(tiny_config()), tmp_path / "m")
    assert renamed[-1] == "m.json" and set(renamed) == {"m.json", "m.safetensors", "m.md"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.md", "m.safetensors"]


# --- format 1: still read, with a warning; upgraded in place ----------------------------------


def write_v1(model: MaceModel, json_path: Path, config_edit: dict | None = None) -> None:
    """A format-1 file as ase_equi 0.1 wrote it: E0/scale/shift in config and in the weights."""
    blob = save_safetensors({k: v.contiguous() for k, v in model.state_dict().items()})
    json_path.with_suffix(".safetensors").write_bytes(blob)
    import hashlib

    header = {
        "format": "ase_equi-model",
        "format_version": 1,
        "package_version": "0.1.0",
        "config": {**model.config.to_dict(), **(config_edit or {})},
        "dtype": "float64",
        "weights": json_path.stem + ".safetensors",
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
        "weights_bytes": len(blob),
        "card": {"name": json_path.stem},
    }
    json_path.write_text(json.dumps(header))


def test_format_1_loads_with_a_warning_and_upgrades_bit_for_bit(tmp_path, structure, capsys):
    """Upgrade keeps the energies exactly, takes E0 from the weights (what the model computed
    with, even when the old header said otherwise) and makes the header hash-covered."""
    from ase_equi.cli import main

    torch.manual_seed(5)
    model = MaceModel(tiny_config()).double()
    path = tmp_path / "old.json"
    write_v1(model, path, config_edit={"reference_energies": [9.0, 9.0]})
    atoms = structure("bulk")
    with pytest.warns(UserWarning, match="not covered by a hash.*ase-equi upgrade"):
        atoms.calc = EquivariantCalculator(path, dtype="float64")
    before = atoms.get_potential_energies()
    assert main(["upgrade", str(path)]) == 0
    assert "format version 2" in capsys.readouterr().out
    header = json.loads(path.read_text())
    assert header["format_version"] == 2
    assert header["heads"]["Default"]["reference_energies"] == [-0.3, -0.5]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        atoms.calc = EquivariantCalculator(path, dtype="float64")
    np.testing.assert_array_equal(atoms.get_potential_energies(), before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json", "old.md", "old.safetensors"]


def test_upgrade_refuses_damaged_weights(tmp_path):
    path = tmp_path / "old.json"
    write_v1(MaceModel(tiny_config()), path)
    weights = path.with_suffix(".safetensors")
    blob = bytearray(weights.read_bytes())
    blob[-3] ^= 1
    weights.write_bytes(bytes(blob))
    before = path.read_text()
    with pytest.raises(ModelFileError, match="SHA-256"):
        from ase_equi.io.model_file import upgrade_model_file

        upgrade_model_file(path)
    assert path.read_text() == before
