"""``scripts/keep_runs.py``: what of a training chain's run folders is kept in git, and that a
new session gets back exactly what the next command needs to resume."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import keep_runs


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def chain(tmp_path, monkeypatch):
    """A finished stage 1 and an unfinished stage 2 under a temporary runs/."""
    runs, kept = tmp_path / "runs", tmp_path / "runs-kept"
    monkeypatch.setattr(keep_runs, "RUNS", runs)
    monkeypatch.setattr(keep_runs, "KEPT", kept)
    monkeypatch.setattr(keep_runs, "ROOT", tmp_path)
    done, going = runs / "si", runs / "si-stage2"
    for name in ("split.json", "si.json", "si.safetensors", "si.md", "test_report.md"):
        _write(done / name, f"stage 1 {name}")
    _write(done / "checkpoints" / "last.pt", "stage 1 checkpoint")
    _write(done / "training-frames.xyz", "frames")
    _write(going / "split.json", "stage 2 split")
    _write(going / "checkpoints" / "last.pt", "stage 2 checkpoint")
    _write(going / "checkpoints" / "previous.pt", "stage 2 older checkpoint")
    _write(going / "training-frames.xyz", "frames")
    _write(going / "card" / "md-300.json", "MD state at 300 K")
    (going / "card" / "big.xyz").write_bytes(b"x" * keep_runs.SMALL)
    return runs, kept


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in root.rglob("*") if p.is_file()}


def test_save_keeps_a_finished_model_or_an_unfinished_checkpoint(chain):
    runs, kept = chain
    keep_runs.save([runs / "si", runs / "si-stage2"])
    assert set(_files(kept)) == {
        "si/split.json",
        "si/si.json",
        "si/si.safetensors",
        "si/si.md",
        "si/test_report.md",
        "si-stage2/split.json",
        "si-stage2/checkpoints/last.pt",
        "si-stage2/card/md-300.json",
    }
    # the stage finishes: saved again, its checkpoint is dropped and its model kept
    for name in ("si.json", "si.safetensors"):
        _write(runs / "si-stage2" / name, f"stage 2 {name}")
    keep_runs.save([runs / "si-stage2"])
    assert not (kept / "si-stage2" / "checkpoints").exists()
    assert (kept / "si-stage2" / "si.safetensors").read_text() == "stage 2 si.safetensors"


def test_restore_brings_back_what_was_kept_and_keeps_newer_files(chain):
    runs, kept = chain
    keep_runs.save([runs / "si", runs / "si-stage2"])
    saved = _files(kept)
    newer = runs / "si-stage2" / "checkpoints" / "last.pt"
    for path in runs.rglob("*"):
        if path.is_file() and path != newer:
            path.unlink()
    _write(newer, "stage 2 checkpoint, later")
    os.utime(newer, (2e9, 2e9))  # newer than the kept copy
    keep_runs.restore()
    restored = _files(runs)
    assert restored.pop("si-stage2/checkpoints/last.pt") == "stage 2 checkpoint, later"
    saved.pop("si-stage2/checkpoints/last.pt")
    assert restored == saved


def test_save_refuses_a_folder_that_is_not_there(chain):
    runs, _ = chain
    with pytest.raises(SystemExit, match="no run folder"):
        keep_runs.save([runs / "missing"])
