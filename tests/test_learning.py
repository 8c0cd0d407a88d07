"""On-the-fly learning with EMT as the reference: reference calls only when the committee is
unsure, at most ``max_calls``, and a stopped run resumes exactly where it stopped."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase.calculators.emt import EMT
from conftest import learning_start, tiny_config

from ase_equi import MaceModel
from ase_equi.io.model_committee import save_committee
from ase_equi.learning import learn_on_the_fly, plot_learning
from ase_equi.model.committee import Committee
from ase_equi.training.config import TrainConfig

# smaller than the shared tiny model: each reference call trains every member
SMALL = tiny_config(channels=4, max_ell=1, max_L=0, correlation=2, num_interactions=1)
FAST = TrainConfig(epochs=2, lr=0.005, valid_fraction=0.0, test_fraction=0.0, plots=False)


class CountingEMT(EMT):
    """EMT that counts its evaluations (each labelled structure costs one)."""

    calls = 0

    def calculate(self, *args, **kwargs):
        CountingEMT.calls += 1
        super().calculate(*args, **kwargs)


@pytest.fixture(scope="module")
def committee_file(tmp_path_factory):
    members = []
    for seed in range(2):
        torch.manual_seed(30 + seed)
        members.append(MaceModel(SMALL).double())
    return save_committee(Committee(members), tmp_path_factory.mktemp("otf") / "committee")


def start():
    return learning_start()


def test_reference_called_only_when_flagged(committee_file, tmp_path):
    CountingEMT.calls = 0
    quiet = learn_on_the_fly(
        start(),
        committee_file,
        CountingEMT(),
        out=tmp_path / "quiet",
        threshold=1e6,
        steps=3,
        train_config=FAST,
    )
    assert quiet.calls == [] and CountingEMT.calls == 0
    run = learn_on_the_fly(
        start(),
        committee_file,
        CountingEMT(),
        out=tmp_path / "loud",
        threshold=1e-6,
        steps=2,
        max_calls=1,
        train_config=FAST,
    )
    assert CountingEMT.calls == len(run.calls) == 1  # both steps flagged, capped at one call
    assert run.calls[0]["step"] == 1 and run.calls[0]["uncertainty"] > 1e-6
    logged = json.loads((tmp_path / "loud" / "calls.json").read_text())
    assert logged == run.calls
    steps = np.loadtxt(tmp_path / "loud" / "uncertainty.txt", ndmin=2)
    assert steps[:, 0].tolist() == [1, 2] and steps[0, 2] == run.calls[0]["uncertainty"]
    assert plot_learning(tmp_path / "loud", tmp_path / "learning.png") is not None


def test_a_stopped_run_resumes_where_it_stopped(committee_file, tmp_path):
    options = dict(threshold=1e-6, max_calls=1, train_config=FAST)
    whole = learn_on_the_fly(
        start(), committee_file, EMT(), out=tmp_path / "whole", steps=3, **options
    )
    learn_on_the_fly(start(), committee_file, EMT(), out=tmp_path / "parts", steps=1, **options)
    resumed = learn_on_the_fly(
        start(), committee_file, EMT(), out=tmp_path / "parts", steps=3, **options
    )
    assert len(resumed.calls) == len(whole.calls) == 1
    a = json.loads((tmp_path / "whole" / "state.json").read_text())
    b = json.loads((tmp_path / "parts" / "state.json").read_text())
    assert a["step"] == b["step"] == 3
    np.testing.assert_allclose(a["positions"], b["positions"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(a["momenta"], b["momenta"], rtol=0, atol=1e-12)


def test_a_resume_with_another_model_is_refused(committee_file, tmp_path):
    """The saved run goes on with its own model: another one given on a resume would be
    recorded in setup.json but never used, so it is refused by name."""
    from ase_equi.errors import AseEquiError

    options = dict(threshold=1e6, train_config=FAST, out=tmp_path / "run")
    learn_on_the_fly(start(), committee_file, EMT(), steps=1, **options)
    with pytest.raises(AseEquiError, match="begun with model .*not 'metals'"):
        learn_on_the_fly(start(), "metals", EMT(), steps=2, **options)
    assert learn_on_the_fly(start(), committee_file, EMT(), steps=2, **options).steps == 2


def test_command_line_learns_with_a_named_reference(committee_file, tmp_path, capsys):
    """``ase-equi learn`` runs the same loop: EMT named on the command line labels the one
    flagged structure allowed; a reference that is not an importable class is refused by name."""
    from ase.io import write

    from ase_equi.cli import main

    start_file = tmp_path / "start.extxyz"
    write(start_file, start())
    common = ["learn", str(committee_file), str(start_file), "--threshold", "1e-6"]
    common += ["--steps", "2", "--max-calls", "1", "--epochs", "2"]
    assert main([*common, "--reference", "emt", "--out", str(tmp_path / "cli")]) == 0
    calls = json.loads((tmp_path / "cli" / "calls.json").read_text())
    assert len(calls) == 1 and calls[0]["step"] == 1
    bad = main([*common, "--reference", "ase.calculators.emt:NoSuch", "--out", str(tmp_path / "x")])
    assert bad == 2 and "NoSuch" in capsys.readouterr().err
    assert not (tmp_path / "x" / "calls.json").exists()


def test_command_line_passes_the_selection_window(committee_file, tmp_path, capsys):
    """``--min-interval`` reaches ``learn_on_the_fly``: a window of 0 steps is refused by
    name before any MD step or reference call."""
    from ase.io import write

    from ase_equi.cli import main

    start_file = tmp_path / "start.extxyz"
    write(start_file, start())
    argv = ["learn", str(committee_file), str(start_file), "--threshold", "1e-6"]
    argv += ["--steps", "2", "--max-calls", "1", "--reference", "emt", "--min-interval", "0"]
    assert main([*argv, "--out", str(tmp_path / "w")]) == 2
    assert "min_interval" in capsys.readouterr().err
    assert not (tmp_path / "w" / "calls.json").exists()
