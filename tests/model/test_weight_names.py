"""The model's weight and buffer names are a file format: model files and the MACE import map
onto them. A MaceModel built from a zoo model's config must have exactly the tensors, names and
shapes, stored in that zoo file (written by an earlier version and pinned by its hash), so a
renamed module or buffer inside ``ase_equi/model`` fails here, not in a user's loader.
"""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from ase_equi.io.rigidity_section import TENSORS as RIGIDITY_TENSORS
from ase_equi.model.config import ModelConfig
from ase_equi.model.mace import MaceModel
from ase_equi.zoo import zoo_path

# Per-head constants: in the file's header (``heads``), not among its weights.
HEAD_BUFFERS = {"reference_energies", "scale", "shift"}


@pytest.mark.parametrize("name", ["metals", "molecules-pbe", "silicon-xtb"])
def test_state_dict_names_and_shapes_match_zoo_file(name):
    header_path = zoo_path(name)
    header = json.loads(header_path.read_text())
    head = header["heads"][header["default_head"]]
    config = ModelConfig.from_dict(
        {**header["config"], "reference_energies": head["reference_energies"]}
    )
    model = MaceModel(config)
    built = {k: tuple(v.shape) for k, v in model.state_dict().items() if k not in HEAD_BUFFERS}
    with safe_open(str(header_path.parent / header["weights"]), "pt") as weights:
        stored = {k: tuple(weights.get_slice(k).get_shape()) for k in weights.keys()}
    # the optional prediction-rigidity section's tensors are not the model's (io/rigidity_section)
    stored = {k: v for k, v in stored.items() if k not in RIGIDITY_TENSORS.values()}
    assert sorted(built) == sorted(stored)
    assert built == stored
    assert HEAD_BUFFERS <= set(model.state_dict())
