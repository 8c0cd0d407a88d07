"""The pull of the shared layers towards the parent's weights (L2-SP) in fine-tuning."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import emt_structures
from test_training import TINY

from ase_equi.data import read_frames
from ase_equi.errors import CheckpointError
from ase_equi.model.mace import MaceModel
from ase_equi.training import TrainConfig, train
from ase_equi.training.finetune import FinetuneConfig
from ase_equi.training.parent_pull import (
    parent_pull,
    pull_for_finetune,
    shared_parameters,
)


def _model(seed: int = 0) -> MaceModel:
    torch.manual_seed(seed)
    return MaceModel(TINY).double()


def _perturb(model: MaceModel, size: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(size * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def test_zero_pull_is_the_old_loss_and_the_value_follows_the_formula():
    model = _model()
    anchors, left_out = shared_parameters(model)
    assert left_out == [] and anchors
    assert not any(k.startswith("readouts.") for k in anchors)  # the head is never pulled
    assert parent_pull(anchors, 0.0) is None  # train() then adds nothing: the old loss
    pull = parent_pull(anchors, 3.0)
    assert pull is not None and float(pull(model).detach()) == 0.0
    reference = {k: p.detach().numpy().copy() for k, p in model.named_parameters()}
    _perturb(model, 0.1, seed=1)
    squares, count = 0.0, 0
    for name, p in model.named_parameters():  # by hand, with numpy
        if not name.startswith("readouts."):
            squares += float(np.sum((p.detach().numpy() - reference[name]) ** 2))
            count += p.numel()
    assert math.isclose(float(pull(model).detach()), 3.0 * squares / count, rel_tol=1e-12)


def test_pull_gradient_is_two_lambda_delta_over_n():
    model = _model()
    anchors, _ = shared_parameters(model)
    n = sum(t.numel() for t in anchors.values())
    _perturb(model, 0.05, seed=2)
    strength = 7.5
    pull = parent_pull(anchors, strength)
    assert pull is not None
    pull(model).backward()
    for name, p in model.named_parameters():
        if name.startswith("readouts."):
            assert p.grad is None, name  # heads feel no pull
            continue
        expected = 2 * strength * (p.detach() - anchors[name]) / n
        torch.testing.assert_close(p.grad, expected, rtol=1e-12, atol=0)


def test_weights_the_parent_lacks_are_not_pulled():
    parent = torch.nn.ModuleDict(
        {"embed": torch.nn.Linear(2, 3), "readouts": torch.nn.Linear(3, 1)}
    )
    grown = torch.nn.ModuleDict({"embed": torch.nn.Linear(2, 4), "readouts": torch.nn.Linear(4, 1)})
    grown.add_module("extra", torch.nn.Linear(1, 1))
    grown["embed"].bias = torch.nn.Parameter(torch.zeros(4))
    anchors, left_out = shared_parameters(grown, parent)
    assert anchors == {}
    assert sorted(left_out) == ["embed.bias", "embed.weight", "extra.bias", "extra.weight"]


def test_two_heads_pull_the_parent_head_but_not_the_new_one(tmp_path):
    from ase_equi.training.multihead import add_head

    parent = _model()
    constants = {"reference_energies": np.zeros(2), "scale": 1.0, "shift": 0.0}
    two = add_head(parent, constants, ("parent", "new"))
    pull, report = pull_for_finetune(two, parent, 2.0, tmp_path, replay=True)
    assert pull is not None and report["parent_head_pulled"]
    _perturb(two, 0.05, seed=4)
    pull(two).backward()
    grads = {k: p.grad for k, p in two.named_parameters()}
    assert all(grads[k] is None for k in grads if k.startswith("head_readouts."))
    assert all(grads[k] is not None for k in grads if not k.startswith("head_readouts."))
    assert report["pulled_weights"] == sum(p.numel() for p in parent.parameters())
    trunk = sum(p.numel() for k, p in parent.named_parameters() if not k.startswith("readouts."))
    # without replay the parent's head gets no data gradient: not pulled (AdamW leaves it be)
    _, no_replay = pull_for_finetune(two, parent, 2.0, tmp_path / "none", replay=False)
    assert no_replay["pulled_weights"] == trunk and not no_replay["parent_head_pulled"]
    _, single = pull_for_finetune(_model(), parent, 2.0, tmp_path / "one", replay=True)
    assert single["pulled_weights"] == trunk  # one head: it learns the new level, not pulled


def _train_moves(tmp_path, name: str, strength: float) -> float:
    """Largest change of a shared weight after 6 AdamW steps (lr 1e-2, no EMA, no clipping)."""
    frames = read_frames(emt_structures(8, seed=45))
    model = _model(seed=3)
    anchors, _ = shared_parameters(model)
    cfg = TrainConfig(
        output_dir=str(tmp_path / name),
        epochs=1,
        lr=1e-2,
        batch_size=1,
        ema_decay=0.0,
        max_grad_norm=None,
        valid_fraction=0.125,
        test_fraction=0.125,
        plots=False,
    )
    result = train(model, frames, cfg, verbose=False, penalty=parent_pull(anchors, strength))
    after = dict(result.model.named_parameters())
    return max(float((after[k] - ref).abs().max()) for k, ref in anchors.items())


def test_huge_pull_keeps_the_trunk_at_the_parent(tmp_path):
    free = _train_moves(tmp_path, "free", 0.0)
    held = _train_moves(tmp_path, "held", 1e12)
    print(f"largest shared-weight change after 6 steps: free {free:.3g}, pulled {held:.3g}")
    assert free > 0.03  # AdamW at lr 1e-2 moves up to lr per step
    # AdamW's first step moves every weight by lr whatever λ; the pull then brings it back
    assert held < 0.1 * free and held < 1e-2


def test_nonsense_strengths_are_refused():
    for bad in (-1.0, float("nan"), float("inf"), "10", True, None):
        with pytest.raises(ValueError, match="parent_pull must be"):
            FinetuneConfig(parent_pull=bad)  # type: ignore[arg-type]
    assert FinetuneConfig(parent_pull=0).parent_pull == 0.0


def test_resume_with_another_pull_is_refused(tmp_path):
    model, parent = _model(), _model()
    pull, report = pull_for_finetune(model, parent, 5.0, tmp_path, replay=True)
    assert pull is not None
    assert report["strength"] == 5.0 and report["left_out"] == []
    assert report["pulled_weights"] == sum(
        p.numel() for k, p in model.named_parameters() if not k.startswith("readouts.")
    )
    assert json.loads((tmp_path / "parent_pull.json").read_text()) == {"strength": 5.0}
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="parent_pull=5.0, asked 2.0"):
        pull_for_finetune(model, parent, 2.0, tmp_path, replay=True)
    assert pull_for_finetune(model, parent, 5.0, tmp_path, True)[0] is not None  # same: resumes
    (tmp_path / "parent_pull.json").unlink()
    with pytest.raises(CheckpointError, match="made without the parent pull"):
        pull_for_finetune(model, parent, 5.0, tmp_path, replay=True)
