"""Training: config validation, the loss goes down, bit-identical resume, outputs, CLI, DDP."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import ase.io
import pytest
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from conftest import emt_structures

from ase_equi import load_model
from ase_equi.cli import main
from ase_equi.data import read_frames
from ase_equi.data.batch import frames_to_graphs, make_batch
from ase_equi.model.config import ModelConfig
from ase_equi.model.gradients import energy_forces_stress
from ase_equi.training import ErrorMetrics, TrainConfig, train
from ase_equi.training.checkpoint import load_checkpoint
from ase_equi.training.checkpoint import new_model as _new_model

TINY = ModelConfig(
    elements=(13, 29),
    reference_energies=(0.0, 0.0),
    r_max=3.5,
    num_bessel=4,
    channels=4,
    max_ell=1,
    correlation=2,
    radial_mlp=(8,),
)
TINY_FLAGS = "--channels 4 --max-ell 1 --correlation 2 --radial-mlp 8 --r-max 3.5 --num-bessel 4"


class Killed(Exception):
    """Stands in for the process being killed."""


def _loss_on(model, frames, weights) -> float:
    graphs = frames_to_graphs(frames, TINY.elements, TINY.r_max)
    metrics = ErrorMetrics()
    for k in range(len(frames)):
        batch = make_batch(frames[k : k + 1], graphs[k : k + 1])
        metrics.update(energy_forces_stress(model, batch.graph, stress=True), batch)
    return metrics.loss(weights)


def test_train_config_validation_and_round_trip():
    cfg = TrainConfig(epochs=3, patience=2, max_grad_norm=None, scheduler="cosine")
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match=r"TrainConfig\.batch_size must be >= 1, got 0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match=r"TrainConfig\.scheduler must be one of"):
        TrainConfig(scheduler="step")
    with pytest.raises(ValueError, match=r"TrainConfig\.dtype"):
        TrainConfig(dtype="float16")
    with pytest.raises(ValueError, match=r"TrainConfig\.epochs must be an integer, got True"):
        TrainConfig(epochs=True)
    for name in ("lr", "energy_weight", "stress_weight"):
        for bad in (float("inf"), float("nan")):
            with pytest.raises(ValueError, match=rf"TrainConfig\.{name} must be a finite number"):
                TrainConfig(**{name: bad})
    with pytest.raises(ValueError, match=r"unknown TrainConfig fields: \['learning_rate'\]"):
        TrainConfig.from_dict({"learning_rate": 0.1})


def test_training_lowers_the_loss_and_writes_outputs(tmp_path):
    isolated = Atoms("Cu")
    isolated.calc = SinglePointCalculator(isolated, energy=-0.2, forces=[[0.0, 0.0, 0.0]])
    frames = read_frames([*emt_structures(6), isolated])
    cfg = TrainConfig(
        epochs=4,
        batch_size=2,
        lr=0.1,
        ema_decay=0.0,
        valid_fraction=0.0,
        test_fraction=0.2,
        output_dir=str(tmp_path / "run"),
    )
    lines = []
    result = train(
        TINY,
        frames,
        cfg,
        name="tiny",
        level_of_theory="EMT (ASE)",
        data_description="rattled Cu/Al",
        progress=lambda d: lines.append(d),
    )
    train_frames = [
        frames[i] for i in json.loads((tmp_path / "run/split.json").read_text())["train"]
    ]
    before = _loss_on(_new_model(result.config, cfg.seed).double(), train_frames, cfg.loss_weights)
    after = _loss_on(result.model, train_frames, cfg.loss_weights)
    assert after < 0.5 * before, (before, after)
    # constants measured on the data, the model file and its card
    assert result.config.avg_num_neighbors > 1 and result.config.scale > 0
    assert result.config.reference_energies[1] == -0.2  # E0(Cu) from the isolated atom
    loaded = load_model(result.model_path)
    assert loaded.config == result.config
    card = loaded.card
    assert card["level_of_theory"] == "EMT (ASE)"
    sizes = {k: v for k, v in card["training_data"].items() if k.startswith("n_")}
    assert sizes == {"n_train": 5, "n_valid": 0, "n_test": 1, "n_isolated_atoms": 1}
    assert card["test_errors"]["forces_mae"] == pytest.approx(
        result.test_metrics["forces_mae"], abs=1e-3
    )
    report = json.loads((tmp_path / "run/test_report.json").read_text())
    assert set(report["test"]) >= {"energy_mae", "energy_rmse", "forces_rmse", "stress_mae"}
    for name in ("test_report.md", "parity.png", "learning_curves.png", "checkpoints/last.pt"):
        assert (tmp_path / "run" / name).stat().st_size > 0
    assert [d["event"] for d in lines].count("epoch") == 4 and lines[-1]["event"] == "done"


def _states_equal(a: dict, b: dict, where: str = "") -> None:
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _states_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            _states_equal(x, y, f"{where}[{k}]")
    elif torch.is_tensor(a):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


@pytest.mark.parametrize("kill_step", [3, 4])  # 3: last step of epoch 1; 4: mid-epoch 2
def test_resume_after_kill_is_bit_identical(tmp_path, kill_step):
    frames = read_frames(emt_structures(6))
    base = TrainConfig(
        epochs=2,
        batch_size=2,
        checkpoint_every=1,
        valid_fraction=0.2,
        test_fraction=0.0,
        plots=False,
        output_dir=str(tmp_path / "whole"),
    )
    whole = train(TINY, frames, base)

    killed = dataclasses.replace(base, output_dir=str(tmp_path / "killed"))

    def kill(info):  # 5 training frames, batches of 2: steps 1-3 are epoch 1, 4-6 epoch 2
        if info["event"] == "step" and info["step"] == kill_step:  # after that step's checkpoint
            raise Killed

    with pytest.raises(Killed):
        train(TINY, frames, killed, progress=kill)
    assert load_checkpoint(tmp_path / "killed/checkpoints/last.pt")["step"] == kill_step
    with pytest.raises(ValueError, match=r"other settings: batch_size=2 \(now 3\)"):
        train(TINY, frames, dataclasses.replace(killed, batch_size=3))
    resumed = train(TINY, frames, killed)
    assert resumed.resumed_from_step == kill_step

    a = load_checkpoint(tmp_path / "whole/checkpoints/last.pt")
    b = load_checkpoint(tmp_path / "killed/checkpoints/last.pt")
    a["train_config"].pop("output_dir"), b["train_config"].pop("output_dir")
    _states_equal(a, b)  # model, EMA, optimiser, scheduler, generator, history, best, ...
    for p, q in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert (tmp_path / "whole/split.json").read_text() == (
        tmp_path / "killed/split.json"
    ).read_text()


def test_cli_train_with_json_config(tmp_path, capsys):
    ase.io.write(tmp_path / "d.xyz", emt_structures(5))
    (tmp_path / "cfg.json").write_text(
        json.dumps(
            {"model": {"channels": 8, "max_ell": 1}, "train": {"epochs": 1, "batch_size": 4}}
        )
    )
    flags = f"{TINY_FLAGS} --elements Cu,Al --test-fraction 0.2 --level-of-theory EMT --plots false"
    flags += " --pair-repulsion true"
    files = ["--data", str(tmp_path / "d.xyz"), "--out", str(tmp_path / "run")]
    code = main(["train", *files, "--config", str(tmp_path / "cfg.json"), *flags.split()])
    assert code == 0
    captured = capsys.readouterr()
    assert "epoch 1/1" in captured.err and "# Test report" in captured.out
    loaded = load_model(tmp_path / "run/model")
    assert loaded.config.channels == 4 and loaded.config.elements == (29, 13)  # flags win
    assert loaded.config.pair_repulsion is True  # the ZBL pair term, from --pair-repulsion
    assert loaded.card["level_of_theory"] == "EMT"


@pytest.mark.slow
def test_ddp_two_gloo_processes_match_one(tmp_path):
    ase.io.write(tmp_path / "d.xyz", emt_structures(5))
    settings = "--epochs 1 --batch-size 3 --checkpoint-every 1 --valid-fraction 0.2 "
    settings += "--test-fraction 0 --plots off"
    args = ["--data", str(tmp_path / "d.xyz"), *TINY_FLAGS.split(), *settings.split()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd = [*torchrun, "--nproc_per_node=2", "-m", "ase_equi.cli", "train"]
    cmd += ["--out", str(tmp_path / "ddp"), *args]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stderr.count("epoch 1/1") == 1  # only rank 0 shows progress
    ddp = load_checkpoint(tmp_path / "ddp/checkpoints/last.pt")
    assert ddp["step"] == 2  # 4 training frames, global batch 3: batches of 3 and 1
    assert main(["train", "--out", str(tmp_path / "one"), *args]) == 0
    one = load_checkpoint(tmp_path / "one/checkpoints/last.pt")
    for key in ("train_loss", "valid_loss"):
        assert ddp["history"][0][key] == pytest.approx(one["history"][0][key], rel=1e-8)
    for name, value in one["model"].items():
        torch.testing.assert_close(ddp["model"][name], value, rtol=1e-9, atol=1e-12)


def test_metrics_keep_values_when_stress_is_not_computed():
    """A batch mixing a bulk frame (stress label) and a molecule: stress is not predicted, the
    parity values must still be collected for energy and forces (the final test report)."""
    bulk_frame = emt_structures(1)[0]
    molecule = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.4]])
    molecule.calc = SinglePointCalculator(molecule, energy=0.5, forces=[[0, 0, -1], [0, 0, 1]])
    frames = read_frames([bulk_frame, molecule])
    graphs = frames_to_graphs(frames, TINY.elements, TINY.r_max)
    batch = make_batch(frames, graphs)
    assert bool(batch.stress_mask.any()) and not batch.stress_computable
    pred = energy_forces_stress(_new_model(TINY, 0).double(), batch.graph, stress=False)
    metrics = ErrorMetrics(keep_values=True)
    metrics.update(pred, batch)
    assert metrics.parity("energy")[0].numel() == 2
    assert metrics.parity("stress")[0].numel() == 0
    assert "stress_mae" not in metrics.summary()
