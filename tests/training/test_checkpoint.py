"""Checkpoints: a damaged last.pt is named and the run resumes from previous.pt; files a kill
left behind are removed; a resume says where it started."""

from __future__ import annotations

import logging
import math
import subprocess
import sys

import pytest
import torch
from conftest import emt_structures
from test_training import TINY

from ase_equi.data import read_frames
from ase_equi.errors import CheckpointError
from ase_equi.training import TrainConfig, train
from ase_equi.training.checkpoint_file import (
    load_checkpoint,
    remove_stale_temporaries,
    resume_checkpoint,
    save_checkpoint,
)
from ase_equi.training.config import CHECKPOINT_FORMAT


def _state(step: int) -> dict:
    return {"format": CHECKPOINT_FORMAT, "step": step, "w": torch.full((64, 64), float(step))}


def _damage(path, kind: str) -> None:
    data = bytearray(path.read_bytes())
    if kind == "overwritten":  # 64 bytes in the middle (the case)
        mid = len(data) // 2
        data[mid : mid + 64] = b"\xff" * 64
    elif kind == "truncated":
        data = data[: len(data) // 3]
    elif kind == "empty":
        data = bytearray()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["overwritten", "truncated", "empty"])
def test_damaged_last_falls_back_to_previous_naming_the_file(tmp_path, caplog, kind):
    save_checkpoint(tmp_path / "last.pt", _state(1))
    save_checkpoint(tmp_path / "last.pt", _state(2))
    assert load_checkpoint(tmp_path / "previous.pt")["step"] == 1
    _damage(tmp_path / "last.pt", kind)
    pattern = r"checkpoint .*last\.pt (is truncated|fails|has no)"
    with pytest.raises(CheckpointError, match=pattern):
        load_checkpoint(tmp_path / "last.pt")
    with caplog.at_level(logging.WARNING):
        state, path = resume_checkpoint(tmp_path)
    assert path.name == "previous.pt" and state["step"] == 1
    assert torch.equal(state["w"], torch.full((64, 64), 1.0))
    assert any("last.pt" in r.getMessage() for r in caplog.records)


def test_no_good_checkpoint_raises_naming_both_files(tmp_path):
    save_checkpoint(tmp_path / "last.pt", _state(1))
    save_checkpoint(tmp_path / "last.pt", _state(2))
    _damage(tmp_path / "last.pt", "overwritten")
    _damage(tmp_path / "previous.pt", "truncated")
    with pytest.raises(CheckpointError, match=r"last\.pt.*previous\.pt"):
        resume_checkpoint(tmp_path)
    assert resume_checkpoint(tmp_path / "empty-dir") is None


def test_a_damaged_last_is_not_rotated_over_a_good_previous(tmp_path):
    save_checkpoint(tmp_path / "last.pt", _state(1))
    save_checkpoint(tmp_path / "last.pt", _state(2))
    _damage(tmp_path / "last.pt", "overwritten")
    save_checkpoint(tmp_path / "last.pt", _state(3))
    assert load_checkpoint(tmp_path / "previous.pt")["step"] == 1
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 3


def test_footer_claiming_a_huge_payload_is_refused_without_reading_it(tmp_path):
    save_checkpoint(tmp_path / "last.pt", _state(1))
    data = bytearray((tmp_path / "last.pt").read_bytes())
    data[-40:-32] = (2**62).to_bytes(8, "little")  # the footer's payload length
    (tmp_path / "last.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"truncated or padded: footer says 4611686018"):
        load_checkpoint(tmp_path / "last.pt")


def _dead_pid() -> int:
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(child.stdout)


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = _dead_pid()
    stale = tmp_path / f"last.pt.tmp{dead}"
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / "notes.tmp"  # not ours: no pid
    other.write_text("keep")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and other.exists()


def test_train_resumes_from_previous_when_last_is_damaged(tmp_path, capsys, caplog):
    frames = read_frames(emt_structures(5))
    cfg = TrainConfig(
        epochs=1,
        batch_size=2,
        checkpoint_every=1,
        valid_fraction=0.0,
        test_fraction=0.0,
        plots=False,
        output_dir=str(tmp_path / "run"),
    )
    train(TINY, frames, cfg, verbose=False)  # 5 frames, batches of 2: 3 steps
    ckpt = tmp_path / "run" / "checkpoints"
    assert load_checkpoint(ckpt / "last.pt")["step"] == 3
    _damage(ckpt / "last.pt", "overwritten")
    stale = ckpt / f"last.pt.tmp{_dead_pid()}"
    stale.write_bytes(b"\0" * 100)
    with caplog.at_level(logging.WARNING):
        result = train(TINY, frames, TrainConfig(**{**cfg.to_dict(), "epochs": 2}))
    err = capsys.readouterr().err
    # saves: steps 1, 2, 3 (checkpoint_every=1), then the end of epoch 1 (last.pt); previous.pt
    # is the step-3 save, taken before the epoch was closed: 0 epochs done, 3 steps
    assert f"resumed from {ckpt / 'previous.pt'}, epoch 0, step 3" in err
    assert any("last.pt" in r.getMessage() and "checksum" in r.getMessage() for r in caplog.records)
    assert result.resumed_from == ckpt / "previous.pt" and result.resumed_from_step == 3
    assert not stale.exists()
    assert "epoch 2/2" in err
    assert all(math.isfinite(float(p.abs().sum())) for p in result.model.parameters())


def test_resume_with_more_epochs_follows_the_cosine_of_the_new_length(tmp_path):
    """A cosine run resumed with another ``epochs`` uses, from the resume on, the learning
    rates of a run started with that many epochs (the saved schedule's length is replaced)."""
    frames = read_frames(emt_structures(5))
    settings = dict(
        batch_size=2,
        scheduler="cosine",
        lr=0.01,
        valid_fraction=0.0,
        test_fraction=0.0,
        plots=False,
    )
    fresh = train(TINY, frames, TrainConfig(**settings, epochs=4, output_dir=str(tmp_path / "a")))
    short = TrainConfig(**settings, epochs=2, output_dir=str(tmp_path / "b"))
    train(TINY, frames, short, verbose=False)
    resumed = train(TINY, frames, TrainConfig(**{**short.to_dict(), "epochs": 4}), verbose=False)
    lr_fresh = [h["lr"] for h in fresh.history]
    lr_resumed = [h["lr"] for h in resumed.history]
    assert len(lr_fresh) == len(lr_resumed) == 4
    assert lr_resumed[2:] == pytest.approx(lr_fresh[2:], rel=1e-12, abs=1e-15)
    assert lr_resumed[3] > 0.0  # the short run's schedule had ended at zero
    assert lr_resumed[1] != pytest.approx(lr_fresh[1])  # epochs 1-2 ran the 2-epoch cosine
