"""Tests of the restricted MACE unpickler (``ase_equi.io.mace.reader``).

The expected keys, shapes, dtypes and SHA-256 hashes come from ``model.state_dict()`` computed
by mace-torch itself (``scripts/make_mace_reference.py``, stored in
``tests/fixtures/mace/reference_<name>.json``); nothing here imports mace.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from e3nn import o3
from mace_data import NAMES, model_file
from mace_data import reference as _reference

from ase_equi.io.mace.reader import (
    GlobalRef,
    ModelFileError,
    PickledModule,
    PickledObject,
    UnsafeModelError,
    read_mace_model,
    state_dict,
)


def _walk(module: PickledModule, prefix: str = ""):
    yield prefix, module
    for name, child in module.children.items():
        yield from _walk(child, f"{prefix}{name}.")


def _sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().contiguous().numpy().tobytes()).hexdigest()


def test_reference_files_present():
    assert {"mp0_small", "mp0_medium", "mp0_large", "off23_small", "mace_nonresidual"} <= set(NAMES)


# ----------------------------------------------------------------------------------------------
# Real MACE files


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_matches_mace(name):
    expected = _reference(name)["state_dict"]
    weights = state_dict(read_mace_model(model_file(name)))
    assert list(weights) == list(expected)  # same keys, same order as model.state_dict()
    for key, record in expected.items():
        tensor = weights[key]
        assert list(tensor.shape) == record["shape"], key
        assert str(tensor.dtype) == f"torch.{record['dtype']}", key
        assert _sha256(tensor) == record["sha256"], key


@pytest.mark.parametrize("name", NAMES)
def test_class_paths_are_those_the_pickle_names(name):
    pickle_globals = set(_reference(name)["pickle_globals"])
    root = read_mace_model(model_file(name))
    seen = set()
    for _, module in _walk(root):
        if module.class_path.startswith("__torch__."):  # inside e3nn's TorchScript blobs
            continue
        seen.add(module.class_path)
        for value in module.attributes.values():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, PickledObject):
                    seen.add(item.class_path)
                elif isinstance(item, GlobalRef):
                    seen.add(item.path)
    # reduce_graph_module is the only global that is not the class it builds
    seen.discard("torch.fx.graph_module.GraphModule")
    assert "torch.fx.graph_module.reduce_graph_module" in pickle_globals
    assert seen <= pickle_globals
    irreps = {"e3nn.o3._irreps.Irreps", "e3nn.o3._irreps._MulIr", "e3nn.o3._irreps.Irrep"}
    named_classes = {g for g in pickle_globals if g.startswith(("mace.", "e3nn."))} - irreps
    assert named_classes <= seen


@pytest.mark.parametrize("name", NAMES)
def test_hyperparameters_are_visible(name):
    """Everything the importer needs is in attributes or buffers, with the built values."""
    architecture = _reference(name)["architecture"]
    root = read_mace_model(model_file(name))
    modules = dict(_walk(root))
    assert root.class_path == f"mace.modules.models.{architecture['model']}"
    assert root.buffers["atomic_numbers"].tolist() == architecture["atomic_numbers"]
    assert root.buffers["r_max"].item() == pytest.approx(architecture["r_max"])
    assert root.buffers["num_interactions"].item() == architecture["num_interactions"]
    # mace-torch 0.3.16 names the one head 'Default', 0.3.10 'default' (as recorded at build)
    built = _reference(name)["constructor"]["model attributes"]["heads"]
    assert repr(root.attributes["heads"]) == built
    heads = architecture.get("heads", ["Default"])
    assert built in ("['Default']", "['default']") if len(heads) == 1 else built == repr(heads)
    energies = modules["atomic_energies_fn."].buffers["atomic_energies"]
    expected = np.asarray(architecture["atomic_energies"], dtype=float)
    np.testing.assert_allclose(energies.numpy(), expected, rtol=1e-6)  # [n_heads,] n_elements
    if architecture["model"] == "ScaleShiftMACE":
        scale_shift = modules["scale_shift."].buffers
        for key in ("scale", "shift"):
            np.testing.assert_allclose(
                scale_shift[key].numpy(), architecture[f"atomic_inter_{key}"], rtol=1e-6
            )
    else:
        assert "scale_shift." not in modules

    first = modules["interactions.0."]
    assert first.class_path.endswith("." + architecture["interaction_first"])
    assert modules["interactions.1."].class_path.endswith("." + architecture["interaction"])
    assert first.attributes["hidden_irreps"] == architecture["hidden_irreps"]
    assert first.attributes["avg_num_neighbors"] == pytest.approx(12.3)
    assert first.attributes["radial_MLP"] == architecture["radial_MLP"]

    assert modules["spherical_harmonics."].attributes["_lmax"] == architecture["max_ell"]
    radial = modules["radial_embedding."]
    assert radial.attributes["out_dim"] == architecture["num_bessel"]
    cutoff = modules["radial_embedding.cutoff_fn."].buffers["p"]
    assert cutoff.item() == architecture["num_polynomial_cutoff"]

    contractions = [m for path, m in modules.items() if path.endswith("contractions.0.")]
    assert [m.attributes["correlation"] for m in contractions] == [3, 3]

    readout = modules[f"readouts.{architecture['num_interactions'] - 1}."]
    mlp = architecture["MLP_irreps"]  # one block of MLP_irreps per head
    assert readout.attributes["hidden_irreps"] == str((len(heads) * o3.Irreps(mlp)).simplify())
    activation = modules[f"readouts.{architecture['num_interactions'] - 1}.non_linearity.acts.0."]
    assert activation.class_path == "e3nn.math._normalize_activation.normalize2mom"
    assert activation.attributes["f"] == GlobalRef("torch.nn.functional.silu")
    assert isinstance(activation.attributes["cst"], float) and activation.attributes["cst"] > 1


def test_irreps_and_instructions_are_plain_data():
    modules = dict(_walk(read_mace_model(model_file("mp0_medium"))))
    tensor_product = modules["interactions.1.conv_tp."]
    assert tensor_product.attributes["irreps_in2"] == "1x0e+1x1o+1x2e+1x3o"
    instruction = tensor_product.attributes["instructions"][0]
    assert instruction.fields["connection_mode"] == "uvu"
    assert instruction.fields["i_in1"] == 0
    linear = modules["interactions.0.linear_up."]
    assert linear.attributes["instructions"][0].fields["path_shape"] == (128, 128)
    # e3nn's TorchScript blobs are re-attached as children, as e3nn itself does on loading
    assert tensor_product.attributes["__codegen__"] == [
        "_compiled_main_left_right",
        "_compiled_main_right",
    ]
    compiled = tensor_product.children["_compiled_main_left_right"]
    assert sorted(compiled.buffers) == ["_w3j_1_1_2", "_w3j_1_2_1", "_w3j_1_2_3", "_w3j_1_3_2"]
    # symmetric-contraction einsums (torch.fx) are kept as source text only
    graph = modules["products.0.symmetric_contractions.contractions.0.graph_opt_main."]
    assert graph.class_path == "torch.fx.graph_module.GraphModule"
    assert "def forward" in graph.attributes["_code"]


# ----------------------------------------------------------------------------------------------
# Malicious pickles


def _zip_model(path: Path, payload: bytes, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/version", b"3\n")
        archive.writestr("archive/byteorder", b"little")
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return path


def _binunicode(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _call_global(module: str, name: str, argument: str) -> bytes:
    """Protocol-2 pickle of ``module.name(argument)`` (GLOBAL, TUPLE1, REDUCE)."""
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + _binunicode(argument) + b"\x85R."


class _SystemCall:
    """Pickles as ``os.system(command)``, the classic payload (STACK_GLOBAL in protocol 4)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        (lambda cmd: _call_global("os", "system", cmd), "os.system"),
        (lambda cmd: pickle.dumps(_SystemCall(cmd), protocol=4), f"{os.system.__module__}.system"),
        (
            lambda cmd: _call_global("builtins", "eval", f"__import__('os').system({cmd!r})"),
            "builtins.eval",
        ),
        (lambda cmd: _call_global("subprocess", "getoutput", cmd), "subprocess.getoutput"),
        (lambda cmd: _call_global("torch", "load", cmd), "torch.load"),
    ],
)
def test_malicious_pickle_is_refused(tmp_path, payload, named):
    marker = tmp_path / "pwned_xyz"
    path = _zip_model(tmp_path / "evil.model", payload(f"touch {marker}"))
    with pytest.raises(UnsafeModelError, match="refus") as error:
        read_mace_model(path)
    assert named in str(error.value)
    assert not marker.exists()


def test_allowed_activation_cannot_be_called(tmp_path):
    marker = tmp_path / "pwned_xyz"
    payload = _call_global("torch.nn.functional", "silu", f"touch {marker}")
    with pytest.raises(UnsafeModelError, match="torch.nn.functional.silu"):
        read_mace_model(_zip_model(tmp_path / "evil.model", payload))


def test_malicious_torchscript_blob_inside_a_module_is_refused(tmp_path):
    """The TorchScript archives in e3nn's ``__codegen__`` go through the same allow-list."""
    marker = tmp_path / "pwned_xyz"
    blob = io.BytesIO()
    with zipfile.ZipFile(blob, "w") as inner:
        inner.writestr("archive/data.pkl", _call_global("os", "system", f"touch {marker}"))
    state = {
        "_parameters": {},
        "_buffers": {},
        "_modules": {},
        "__codegen__": {"f": blob.getvalue()},
    }
    # placeholder e3nn Linear, then BUILD with the state above
    payload = (
        b"\x80\x03ce3nn.o3._linear\nLinear\n)\x81" + pickle.dumps(state, protocol=3)[2:-1] + b"b."
    )
    with pytest.raises(UnsafeModelError, match="os.system"):
        read_mace_model(_zip_model(tmp_path / "evil.model", payload))
    assert not marker.exists()


def test_unknown_class_outside_known_namespaces_is_refused(tmp_path):
    payload = b"\x80\x02cmypackage.layers\nDense\n)\x81."
    with pytest.raises(UnsafeModelError, match="mypackage.layers.Dense"):
        read_mace_model(_zip_model(tmp_path / "other.model", payload))


# ----------------------------------------------------------------------------------------------
# Broken files


def test_truncated_file_names_the_file(tmp_path):
    path = tmp_path / "truncated.model"
    data = (model_file("mp0_small")).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated.model"):
        read_mace_model(path)


def test_corrupt_storage_is_detected(tmp_path):
    source = model_file("mace_nonresidual")
    with zipfile.ZipFile(source) as archive:
        records = {info.filename: archive.read(info) for info in archive.infolist()}
    storage = next(name for name in records if "/data/" in name and len(records[name]) > 64)
    records[storage] = records[storage][:-8]  # one float64 short
    path = tmp_path / "short.model"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in records.items():
            archive.writestr(name, data)
    with pytest.raises(ModelFileError, match="short.model.*truncated or corrupt"):
        read_mace_model(path)


def test_flipped_byte_fails_the_checksum(tmp_path):
    source = model_file("mace_nonresidual")
    with zipfile.ZipFile(source) as archive:
        largest = max(archive.infolist(), key=lambda info: info.file_size)
    data = bytearray(source.read_bytes())
    # local file header: 30 bytes, then the name and the extra field, then the stored data
    name_length, extra_length = struct.unpack_from("<HH", data, largest.header_offset + 26)
    start = largest.header_offset + 30 + name_length + extra_length
    data[start + largest.file_size // 2] ^= 0xFF
    path = tmp_path / "flipped.model"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="flipped.model"):
        read_mace_model(path)


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", b"\x80\x02}q\x00."])
def test_not_a_torch_archive(tmp_path, content):
    path = tmp_path / "bogus.model"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match="bogus.model"):
        read_mace_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="absent.model"):
        read_mace_model(tmp_path / "absent.model")


# ----------------------------------------------------------------------------------------------
# Plain torch modules: torch itself gives the truth


def _linear_with_extras() -> torch.nn.Module:
    torch.manual_seed(0)
    linear = torch.nn.Linear(3, 2, dtype=torch.float64)
    linear.register_buffer("counts", torch.arange(5, dtype=torch.int32))
    linear.register_buffer("scratch", torch.ones(3, dtype=torch.float32), persistent=False)
    return linear


def test_torch_module_state_dict(tmp_path):
    module = _linear_with_extras()
    path = tmp_path / "linear.pt"
    torch.save(module, path)
    root = read_mace_model(path)
    assert root.class_path == "torch.nn.modules.linear.Linear"
    assert root.attributes["in_features"] == 3
    assert root.non_persistent_buffers == {"scratch"}
    expected = module.state_dict()
    weights = state_dict(root)
    assert list(weights) == list(expected)
    for key, tensor in expected.items():
        assert torch.equal(weights[key], tensor) and weights[key].dtype == tensor.dtype


def test_big_endian_archive(tmp_path):
    """Storages written on a big-endian machine are byte-swapped on reading."""
    module = _linear_with_extras()
    little = tmp_path / "little.pt"
    torch.save(module, little)
    # storage bytes -> item size: weight 6 x f8, bias 2 x f8, counts 5 x i4, scratch 3 x f4
    itemsizes = {48: 8, 16: 8, 20: 4, 12: 4}
    with zipfile.ZipFile(little) as archive:
        records = {info.filename: archive.read(info) for info in archive.infolist()}
    big = tmp_path / "big.pt"
    with zipfile.ZipFile(big, "w") as archive:
        for name, data in records.items():
            if name.endswith("/byteorder"):
                data = b"big"
            elif name.rpartition("/")[0].endswith("/data"):
                size = itemsizes[len(data)]
                data = b"".join(data[i : i + size][::-1] for i in range(0, len(data), size))
            archive.writestr(name, data)
    weights = state_dict(read_mace_model(big))
    for key, tensor in module.state_dict().items():
        assert torch.equal(weights[key], tensor), key
