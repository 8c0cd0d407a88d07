"""On-the-fly learning with the user's dynamics: a thermostat whose random numbers and
temperature ramp resume exactly after a kill, a relaxation that ends converged, and the
keywords that do not apply refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import units
from ase.calculators.emt import EMT
from ase.md.langevin import Langevin
from ase.optimize import BFGS
from conftest import learning_start, tiny_config

from ase_equi import EquivariantCalculator, MaceModel
from ase_equi.io.model_committee import save_committee
from ase_equi.learning import learn_on_the_fly, plot_learning
from ase_equi.model.committee import Committee
from ase_equi.training.config import TrainConfig

SMALL = tiny_config(channels=4, max_ell=1, max_L=0, correlation=2, num_interactions=1)
FAST = TrainConfig(epochs=2, lr=0.005, valid_fraction=0.0, test_fraction=0.0, plots=False)


@pytest.fixture(scope="module")
def committee_file(tmp_path_factory):
    members = []
    for seed in range(2):
        torch.manual_seed(50 + seed)
        members.append(MaceModel(SMALL).double())
    return save_committee(Committee(members), tmp_path_factory.mktemp("dyn") / "committee")


def start():
    return learning_start()


def heating(atoms):
    """Langevin at 300 K + 200 K per step, its own seeded generator, the ramp an observer."""
    dyn = Langevin(atoms, 2 * units.fs, temperature_K=300, friction=0.05, fixcm=False,
                   rng=np.random.default_rng(7))  # fmt: skip
    dyn.attach(lambda: dyn.set_temperature(temperature_K=300 + 200 * dyn.nsteps))
    return dyn


def test_a_thermostat_with_a_ramp_resumes_exactly(committee_file, tmp_path):
    """Killed after 3 of 6 steps (one call made) and resumed: the same positions and momenta
    as the run never stopped, to 1e-12; without the saved generator state and step counter
    (a fresh Langevin at step 0) the random kicks and the temperature would differ."""
    options = dict(threshold=1e-6, max_calls=2, min_interval=2, dynamics=heating,
                   replay=None, train_config=FAST)  # fmt: skip
    whole = learn_on_the_fly(start(), committee_file, EMT(), out=tmp_path / "whole", steps=6,
                             **options)  # fmt: skip
    learn_on_the_fly(start(), committee_file, EMT(), out=tmp_path / "parts", steps=3, **options)
    resumed = learn_on_the_fly(start(), committee_file, EMT(), out=tmp_path / "parts", steps=6,
                               **options)  # fmt: skip
    assert [c["step"] for c in resumed.calls] == [c["step"] for c in whole.calls]
    assert len(whole.calls) == 2
    a = json.loads((tmp_path / "whole" / "state.json").read_text())
    b = json.loads((tmp_path / "parts" / "state.json").read_text())
    assert a["rng"]["kind"] == "Generator" and a["rng"] == b["rng"]
    np.testing.assert_allclose(a["positions"], b["positions"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(a["momenta"], b["momenta"], rtol=0, atol=1e-12)
    times = np.loadtxt(tmp_path / "whole" / "uncertainty.txt", ndmin=2)[:, 1]
    np.testing.assert_allclose(times, 2.0 * np.arange(1, 7), rtol=1e-12)
    setup = json.loads((tmp_path / "whole" / "setup.json").read_text())
    assert setup["dynamics"] == "Langevin"
    # the same six steps with the plain generator state of a fresh start differ
    fresh = learn_on_the_fly(start(), committee_file, EMT(), out=tmp_path / "fresh", steps=3,
                             **options)  # fmt: skip
    c = json.loads((tmp_path / "fresh" / "state.json").read_text())
    assert fresh.steps == 3 and c["rng"] != a["rng"]


def test_a_relaxation_learns_and_ends_converged(committee_file, tmp_path):
    """BFGS on a rattled cell: with nothing flagged the run ends when the optimizer has
    converged (fewer steps than allowed, largest force ≤ fmax); with every structure flagged
    and one call allowed, the call is made, the optimizer restarts with the new model and the
    run again ends converged, with that model's forces ≤ fmax."""
    fmax = 1e-4  # the tiny untrained model's forces are below 0.01 eV/Å here
    relax = dict(dynamics=lambda atoms: BFGS(atoms, logfile=None), fmax=fmax, steps=200,
                 replay=None, train_config=FAST)  # fmt: skip
    quiet = learn_on_the_fly(start(), committee_file, EMT(), out=tmp_path / "quiet",
                             threshold=1e6, **relax)  # fmt: skip
    assert quiet.calls == [] and 1 < quiet.steps < 200
    state = json.loads((tmp_path / "quiet" / "state.json").read_text())
    atoms = start()
    atoms.positions = state["positions"]
    atoms.calc = EquivariantCalculator(committee_file)
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() <= fmax
    run = learn_on_the_fly(start(), committee_file, EMT(), out=tmp_path / "learn",
                           threshold=1e-6, max_calls=1, min_interval=1000, **relax)  # fmt: skip
    assert len(run.calls) == 1 and run.steps < 200
    assert run.calls[0]["called_at_step"] == quiet.steps  # at convergence, not a window's end
    state = json.loads((tmp_path / "learn" / "state.json").read_text())
    atoms.positions = state["positions"]
    atoms.calc = EquivariantCalculator(run.model)
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() <= fmax
    times = np.loadtxt(tmp_path / "learn" / "uncertainty.txt", ndmin=2)[:, 1]
    assert np.isnan(times).all()  # an optimizer's steps have no time
    assert plot_learning(tmp_path / "learn", tmp_path / "relax.png") is not None
    # the naive schedule in a relaxation: a call at every 3rd step, none at convergence
    naive = learn_on_the_fly(start(), committee_file, EMT(), out=tmp_path / "naive", every=3,
                             max_calls=2, **relax)  # fmt: skip
    assert [c["called_at_step"] for c in naive.calls] == [3, 6] and naive.steps < 200


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(dynamics=heating, timestep_fs=1.0), "timestep_fs"),
        (dict(fmax=0.05), "fmax applies to a relaxation"),
        (dict(dynamics=heating, fmax=0.05), "fmax applies to an optimizer"),
        (dict(dynamics=lambda atoms: "verlet"), "molecular dynamics or optimizer"),
        (dict(dynamics=lambda atoms: BFGS(atoms.copy())), "must move the atoms"),
    ],
)
def test_keywords_that_do_not_apply_are_refused(committee_file, tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        learn_on_the_fly(start(), committee_file, EMT(), out=tmp_path / "x", threshold=1.0,
                         steps=2, replay=None, **options)  # fmt: skip
    assert not (tmp_path / "x" / "state.json").exists()


@pytest.mark.filterwarnings("error::DeprecationWarning")  # ASE 3.29 renamed the momenta draw
def test_command_line_dynamics(committee_file, tmp_path, capsys):
    """``--dynamics langevin`` runs a thermostat (its generator in the state, resumable);
    ``--dynamics bfgs --relax-cell`` a cell relaxation that stops converged before --steps;
    an option of another dynamics is refused by name before any step."""
    from ase.io import write

    from ase_equi.cli import main

    start_file = tmp_path / "start.extxyz"
    write(start_file, start())
    common = ["learn", str(committee_file), str(start_file), "--reference", "emt"]
    common += ["--threshold", "1e6", "--max-calls", "1"]
    langevin = ["--dynamics", "langevin", "--temperature", "500", "--steps", "3"]
    assert main([*common, *langevin, "--out", str(tmp_path / "nvt")]) == 0
    state = json.loads((tmp_path / "nvt" / "state.json").read_text())
    assert state["step"] == 3 and state["rng"]["kind"] == "Generator"
    assert json.loads((tmp_path / "nvt" / "setup.json").read_text())["dynamics"] == "Langevin"
    relax = ["--dynamics", "bfgs", "--relax-cell", "--fmax", "1e-3", "--steps", "300"]
    assert main([*common, *relax, "--out", str(tmp_path / "relax")]) == 0
    state = json.loads((tmp_path / "relax" / "state.json").read_text())
    assert 0 < state["step"] < 300
    assert "steps of bfgs" in capsys.readouterr().err
    bad = main([*common, "--fmax", "0.1", "--steps", "2", "--out", str(tmp_path / "bad")])
    assert bad == 2 and "--fmax" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("make_rng", [np.random.default_rng, np.random.RandomState])
def test_generator_state_round_trips_through_json(make_rng):
    """Both kinds of numpy generator a thermostat may hold: the state saved as JSON and put
    into a fresh thermostat's generator gives the same next draws."""
    from ase.calculators.emt import EMT as Reference

    from ase_equi.learning_dynamics import make_dynamics, rng_state

    def thermostat(atoms):
        return Langevin(atoms, 1 * units.fs, temperature_K=300, friction=0.05, fixcm=False,
                        rng=make_rng(11))  # fmt: skip

    atoms = start()
    atoms.calc = Reference()
    first = make_dynamics(atoms, thermostat, None, None, 0, None)
    first.run(steps=2)
    saved = json.loads(json.dumps(rng_state(first)))
    again = make_dynamics(atoms, thermostat, None, None, 2, saved)
    assert again.nsteps == 2
    np.testing.assert_array_equal(first.rng.standard_normal(5), again.rng.standard_normal(5))


def test_a_thermostat_on_numpys_global_generator_is_announced(caplog):
    """ASE's Langevin without ``rng=`` draws from numpy's global generator, whose state the
    run does not save: said once, with the fix."""
    import logging

    from ase_equi.learning_dynamics import make_dynamics

    atoms = start()
    with caplog.at_level(logging.WARNING, logger="ase_equi.learning_dynamics"):
        make_dynamics(atoms, lambda a: Langevin(a, units.fs, temperature_K=300, friction=0.05,
                                                fixcm=False), None, None, 0, None)  # fmt: skip
    assert "default_rng" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ase_equi.learning_dynamics"):
        make_dynamics(atoms, heating, None, None, 0, None)
    assert caplog.text == ""


def test_a_cell_relaxation_labels_the_candidate_in_its_own_cell(committee_file, tmp_path):
    """BFGS on a cell filter from a stretched cell, one call at convergence: the labelled
    structure is the window's most uncertain one with the cell it had at that step (the
    same relaxation without calls, step for step), not the cell the relaxation ended with."""
    from ase.filters import FrechetCellFilter
    from ase.io import read

    cells: dict[int, np.ndarray] = {}

    def relax(atoms):
        dyn = BFGS(FrechetCellFilter(atoms), logfile=None)
        dyn.attach(lambda: cells.setdefault(dyn.nsteps, atoms.cell.array.copy()))
        return dyn

    def stretched():
        atoms = start()
        atoms.set_cell(atoms.cell.array * 1.03, scale_atoms=True)
        return atoms

    options = dict(dynamics=relax, fmax=1e-4, steps=300, replay=None, train_config=FAST)
    quiet = learn_on_the_fly(stretched(), committee_file, EMT(), out=tmp_path / "quiet",
                             threshold=1e6, **options)  # fmt: skip
    quiet_cells = dict(cells)
    run = learn_on_the_fly(stretched(), committee_file, EMT(), out=tmp_path / "learn",
                           threshold=1e-6, max_calls=1, min_interval=1000, **options)  # fmt: skip
    labelled_step = run.calls[0]["step"]
    assert run.calls[0]["called_at_step"] == quiet.steps
    final = quiet_cells[quiet.steps]
    assert np.abs(quiet_cells[labelled_step] - final).max() > 1e-4  # the cell did move
    learned = read(tmp_path / "learn" / "learned.xyz", index=0)
    np.testing.assert_allclose(learned.cell.array, quiet_cells[labelled_step], atol=1e-7)
