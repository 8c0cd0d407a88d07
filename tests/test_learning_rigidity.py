"""On-the-fly learning with one model and its prediction-rigidity (LLPR) section: reference
calls only when flagged, a refitted section after each call, a resumed run equal to a whole
one, the refitted statistics equal to sums done by hand, and a model without uncertainty
refused by name."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read
from conftest import learning_start, tiny_config

from ase_equi import MaceModel, save_model
from ase_equi.errors import AseEquiError
from ase_equi.graph.build import atoms_to_graph
from ase_equi.io.model_file import read_model_file
from ase_equi.io.rigidity_section import write_rigidity
from ase_equi.learning import learn_on_the_fly
from ase_equi.learning_rigidity import refit_rigidity, rigidity_statistics
from ase_equi.model.gradients import energy_forces_stress
from ase_equi.model.prediction_rigidity import (
    LastLayerRigidity,
    capture_features,
    feature_dim,
)
from ase_equi.training.config import TrainConfig

SMALL = tiny_config(channels=4, max_ell=1, max_L=0, correlation=2, num_interactions=2)
FAST = TrainConfig(epochs=2, lr=0.005, valid_fraction=0.0, test_fraction=0.0, plots=False)
PARENT_FACTORS = (0.7, 1.3)  # α_E, α_F of the parent: kept by every refit


class CountingEMT(EMT):
    """EMT that counts its evaluations (each labelled structure costs one)."""

    calls = 0

    def calculate(self, *args, **kwargs):
        CountingEMT.calls += 1
        super().calculate(*args, **kwargs)


def labelled_frames(count: int, seed: int) -> list:
    """``count`` rattled CuAl cells (2 or 4 atoms, different cells) labelled by EMT."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(count):
        atoms = bulk("Cu", "fcc", a=3.6 + 0.05 * k, cubic=k % 2 == 0)
        atoms.numbers[0] = 13
        atoms.rattle(0.08, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        out.append(atoms)
    return out


def info(model: MaceModel, n_structures: int, n_atoms: int) -> dict:
    return {
        "method": "llpr",
        "head": "Default",
        "feature_dim": feature_dim(model),
        "features": "test",
        "forces_estimate": "local",
        "regulariser": 1e-6,
        "local_regulariser": 1e-4,
        "n_structures": n_structures,
        "n_atoms": n_atoms,
        "data": "test frames",
        "calibration": {"data": "none"},
    }


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A tiny random model with an LLPR section fitted on three EMT frames (refit from an
    identity section: only its regularisers and factors matter)."""
    torch.manual_seed(41)
    model = MaceModel(SMALL).double()
    path = save_model(model, tmp_path_factory.mktemp("llpr") / "tiny", card={"name": "tiny"})
    frames = labelled_frames(3, seed=1)
    parent = LastLayerRigidity(
        torch.eye(feature_dim(model), dtype=torch.float64),
        torch.eye(feature_dim(model), dtype=torch.float64),
        *PARENT_FACTORS,
        info=info(model, 0, 0),
    )
    write_rigidity(path, refit_rigidity(model, parent, frames, data="three EMT frames"))
    return path


def start():
    return learning_start()


def test_statistics_equal_sums_by_hand():
    """C = Σ_s w_s f_s f_sᵀ and C_loc = Σ_s w_s Σ_i f_i f_iᵀ, with f_i of each structure from
    its own model pass and the sums done in numpy, against the batched weighted sums (to
    1e-10 relative); a weight of 2 counts a frame twice; the refit inverts C + λI with the
    parent's relative λ and keeps the parent's factors."""
    torch.manual_seed(7)
    model = MaceModel(SMALL).double()
    frames = labelled_frames(5, seed=2)
    weights = np.array([1.0, 2.5, 0.5, 1.0, 3.0])
    d = feature_dim(model)
    cov, local = np.zeros((d, d)), np.zeros((d, d))
    for w, atoms in zip(weights, frames, strict=True):
        graph = atoms_to_graph(atoms, SMALL.elements, SMALL.r_max, dtype=torch.float64)
        with capture_features(model) as capture:
            energy_forces_stress(model, graph, forces=False)
        f_i = capture.node_features().detach().numpy()  # [n, d]
        f_s = f_i.sum(axis=0)
        cov += w * np.outer(f_s, f_s)
        local += w * f_i.T @ f_i
    stats = rigidity_statistics(model, frames, weights=weights, batch=2)
    for got, want in ((stats.covariance, cov), (stats.local_covariance, local)):
        assert np.abs(got.numpy() - want).max() <= 1e-10 * np.abs(want).max()
    assert (stats.structures, stats.atoms) == (5, sum(len(a) for a in frames))
    twice = rigidity_statistics(model, [frames[0], frames[0], frames[1]])
    once = rigidity_statistics(model, frames[:2], weights=[2.0, 1.0])
    np.testing.assert_allclose(twice.covariance, once.covariance, rtol=1e-12, atol=0)

    parent = LastLayerRigidity(torch.eye(d), torch.eye(d), *PARENT_FACTORS, info=info(model, 9, 9))
    refit = refit_rigidity(model, parent, frames, weights=weights, data="five frames")
    lam = 1e-6 * np.trace(cov) / d
    want_inverse = np.linalg.inv(cov + lam * np.eye(d))
    scale = np.abs(want_inverse).max()
    assert np.abs(refit.inverse_covariance.numpy() - want_inverse).max() <= 1e-6 * scale
    assert (refit.energy_factor, refit.forces_factor) == PARENT_FACTORS
    assert refit.info["regulariser"] == 1e-6 and refit.info["data"] == "five frames"
    assert (refit.info["n_structures"], refit.info["n_atoms"]) == (5, stats.atoms)


def test_single_model_learns_only_when_flagged_and_refits(model_file, tmp_path):
    CountingEMT.calls = 0
    replay = labelled_frames(2, seed=3)
    options = dict(steps=2, replay=replay, train_config=FAST)
    quiet = learn_on_the_fly(
        start(), model_file, CountingEMT(), out=tmp_path / "quiet", threshold=1e6, **options
    )
    assert quiet.calls == [] and CountingEMT.calls == 0 and quiet.model == model_file
    run = learn_on_the_fly(
        start(),
        model_file,
        CountingEMT(),
        out=tmp_path / "loud",
        threshold=1e-6,
        max_calls=1,
        **options,
    )
    assert CountingEMT.calls == len(run.calls) == 1  # both steps flagged, capped at one call
    call = run.calls[0]
    assert call["step"] == 1 and call["uncertainty"] > 1e-6
    assert json.loads((tmp_path / "loud" / "calls.json").read_text()) == run.calls
    assert {"force_rmse_before", "force_rmse_after", "energy_error_per_atom_after"} <= set(call)
    setup = json.loads((tmp_path / "loud" / "setup.json").read_text())
    assert setup["uncertainty"] == "rigidity" and setup["replay"] == "2 frames given"
    new = read_model_file(run.model)
    assert new.rigidity is not None  # the section was refitted on 2 replay + 1 learned frames
    assert (new.rigidity.info["n_structures"], new.rigidity.info["n_atoms"]) == (
        3,
        len(start()) + sum(map(len, replay)),
    )
    assert (new.rigidity.energy_factor, new.rigidity.forces_factor) == PARENT_FACTORS
    parent = read_model_file(model_file).model
    e0 = [new.model.reference_energies, parent.reference_energies]
    assert torch.equal(*e0)  # warm start: the parent's E0 kept


def test_single_model_run_resumes_where_it_stopped(model_file, tmp_path):
    options = dict(threshold=1e-6, max_calls=1, train_config=FAST, replay=None)
    whole = learn_on_the_fly(start(), model_file, EMT(), out=tmp_path / "whole", steps=3, **options)
    learn_on_the_fly(start(), model_file, EMT(), out=tmp_path / "parts", steps=1, **options)
    CountingEMT.calls = 0
    resumed = learn_on_the_fly(
        start(), model_file, CountingEMT(), out=tmp_path / "parts", steps=3, **options
    )
    assert CountingEMT.calls == 0  # the one call was made before the stop
    assert len(resumed.calls) == len(whole.calls) == 1
    a = json.loads((tmp_path / "whole" / "state.json").read_text())
    b = json.loads((tmp_path / "parts" / "state.json").read_text())
    assert a["step"] == b["step"] == 3
    np.testing.assert_allclose(a["positions"], b["positions"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(a["momenta"], b["momenta"], rtol=0, atol=1e-12)


def test_a_model_without_uncertainty_is_refused(tmp_path):
    torch.manual_seed(3)
    plain = save_model(MaceModel(SMALL).double(), tmp_path / "plain")
    with pytest.raises(AseEquiError, match="neither a committee nor a prediction-rigidity"):
        learn_on_the_fly(start(), plain, EMT(), out=tmp_path / "out", threshold=0.1, steps=1)
    assert not (tmp_path / "out").exists()


def test_every_nth_step_schedule_calls_on_schedule_only(model_file, tmp_path):
    """The naive schedule (``every``): reference calls at steps N, 2N, ... whatever the
    uncertainty; ``threshold`` and ``every`` together are refused."""
    CountingEMT.calls = 0
    run = learn_on_the_fly(
        start(), model_file, CountingEMT(), out=tmp_path / "every", every=2, steps=4,
        train_config=FAST, replay=None,
    )  # fmt: skip
    assert [c["step"] for c in run.calls] == [2, 4] and CountingEMT.calls == 2
    assert all(c["why"] == "every 2 steps" and c["threshold"] is None for c in run.calls)
    with pytest.raises(ValueError, match="exactly one of threshold"):
        learn_on_the_fly(start(), model_file, EMT(), out=tmp_path / "x", threshold=1.0, every=2,
                         steps=1)  # fmt: skip


def test_a_kill_during_training_resumes_that_training(model_file, tmp_path, monkeypatch):
    """Killed after the first epoch of the first fine-tuning: the rerun asks the reference
    nothing more (the label is on disk) and its training resumes from the checkpoint, which
    accepts the data (the learned frames as the file holds them, both times)."""
    import ase_equi.training.trainer as trainer

    real = trainer.train

    def killed_after_one_epoch(model, frames, config, **kwargs):
        real(model, frames, dataclasses.replace(config, epochs=1), **kwargs)
        raise KeyboardInterrupt("killed")

    options = dict(threshold=1e-6, max_calls=1, steps=2, replay=None)
    monkeypatch.setattr(trainer, "train", killed_after_one_epoch)
    with pytest.raises(KeyboardInterrupt):
        learn_on_the_fly(start(), model_file, EMT(), out=tmp_path / "run", **options,
                         train_config=FAST)  # fmt: skip
    monkeypatch.setattr(trainer, "train", real)
    CountingEMT.calls = 0
    run = learn_on_the_fly(
        start(), model_file, CountingEMT(), out=tmp_path / "run", **options, train_config=FAST
    )
    assert CountingEMT.calls == 0 and [c["step"] for c in run.calls] == [1]
    assert (tmp_path / "run" / "round0" / "checkpoints").is_dir()


# == the selection rule: windows of min_interval steps, the most uncertain frame of each =========


def independent_md(model_file, steps: int, timestep_fs: float):
    """Positions [steps, n, 3] and largest atomic σ_F [steps] of plain velocity Verlet of
    ``start()`` with the model (no learning): what the loop sees until its first call."""
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from ase_equi import EquivariantCalculator

    atoms = start()
    atoms.calc = EquivariantCalculator(model_file)
    dyn = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    positions, sigma = [], []
    for _ in range(steps):
        dyn.run(1)
        positions.append(atoms.positions.copy())
        sigma.append(float(atoms.calc.get_property("forces_uncertainty", atoms).max()))
    return np.array(positions), np.array(sigma)


def test_a_window_labels_its_most_uncertain_frame_and_only_when_flagged(model_file, tmp_path):
    """One window of 6 steps (2 fs) whose uncertainty first crosses the threshold at one step,
    peaks at a later one and falls before the window ends: the call, at the window's end,
    labels the peak (positions and EMT label checked against a plain MD and EMT); with the
    threshold just above the peak, no call."""
    positions, sigma = independent_md(model_file, 6, 2.0)
    threshold = 0.5 * (sigma[0] + sigma[2])
    first, peak = int(np.argmax(sigma > threshold)), int(np.argmax(sigma))
    assert 0 < first < peak < 5, (sigma, threshold)  # the three rules pick different frames
    options = dict(steps=6, min_interval=6, timestep_fs=2.0, replay=None, train_config=FAST)
    CountingEMT.calls = 0
    quiet = learn_on_the_fly(start(), model_file, CountingEMT(), out=tmp_path / "quiet",
                             threshold=sigma.max() * (1 + 1e-9), **options)  # fmt: skip
    assert quiet.calls == [] and CountingEMT.calls == 0
    run = learn_on_the_fly(
        start(), model_file, CountingEMT(), out=tmp_path / "run", threshold=threshold, **options
    )
    assert CountingEMT.calls == 1 and len(run.calls) == 1
    call = run.calls[0]
    assert (call["step"], call["called_at_step"]) == (peak + 1, 6)
    assert call["uncertainty"] == pytest.approx(sigma[peak], rel=1e-10)
    learned = read(tmp_path / "run" / "learned.xyz", ":")
    # extxyz keeps 8 decimals
    np.testing.assert_allclose(learned[0].positions, positions[peak], rtol=0, atol=1e-7)
    emt = learned[0].copy()
    emt.calc = EMT()
    assert learned[0].get_potential_energy() == pytest.approx(emt.get_potential_energy(), abs=1e-6)
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    np.testing.assert_allclose(state["positions"], positions[-1], rtol=0, atol=1e-10)


def test_calls_are_paced_over_the_run_with_the_default_window(model_file, tmp_path):
    """Every step flagged, 16 steps, 2 calls allowed: the default window is 16 // (2·2) = 4
    steps and the budget is released one call per 8 steps (⌈2 s / 16⌉ by step s). So the calls
    are made at steps 4 and 12, not 4 and 8: the window of steps 5-8 is flagged but held back
    by the pace, and its candidate competes with those of steps 9-12. The second call labels
    the most uncertain frame of steps 5-12 (and at least 4 // 2 = 2 steps after the first
    labelled frame), checked against a plain MD: 4 steps with the parent, then 8 with the
    model the first call wrote."""
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from ase_equi import EquivariantCalculator
    from ase_equi.learning_schedule import budget_so_far

    assert [budget_so_far(2, s, 16) for s in (1, 4, 8, 9, 12, 16)] == [1, 1, 1, 2, 2, 2]
    CountingEMT.calls = 0
    run = learn_on_the_fly(start(), model_file, CountingEMT(), out=tmp_path / "run", steps=16,
                           threshold=1e-6, max_calls=2, replay=None, train_config=FAST)  # fmt: skip
    assert json.loads((tmp_path / "run" / "setup.json").read_text())["window_steps"] == 4
    assert [c["called_at_step"] for c in run.calls] == [4, 12] and CountingEMT.calls == 2
    first, second = run.calls
    assert 1 <= first["step"] <= 4 and first["step"] + 2 <= second["step"] <= 12
    atoms = start()
    atoms.calc = EquivariantCalculator(model_file)
    dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    dyn.run(4)
    atoms.calc = EquivariantCalculator(str(tmp_path / "run" / "model-1.json"))
    sigma = []
    for _ in range(8):
        dyn.run(1)
        sigma.append(float(atoms.calc.get_property("forces_uncertainty", atoms).max()))
    candidates = range(max(first["step"] + 2, 5), 13)  # after the first call, kept apart
    want = max(candidates, key=lambda s: sigma[s - 5])
    assert second["step"] == want and second["uncertainty"] == pytest.approx(sigma[want - 5])


def test_a_run_killed_mid_window_resumes_with_that_windows_best_frame(model_file, tmp_path):
    """Windows of 5 steps (2 fs), killed right after the first window's most uncertain frame
    (found by a plain MD) and before the window's end: the resumed run labels that frame from
    the state, makes the same call and ends in the same state as a run never stopped; a
    different window on resume is refused."""
    _, sigma = independent_md(model_file, 5, 2.0)
    peak = int(np.argmax(sigma))
    assert peak < 4, sigma  # the kill falls inside the window, after its best frame
    options = dict(threshold=1e-6, max_calls=1, min_interval=5, timestep_fs=2.0, replay=None,
                   train_config=FAST)  # fmt: skip
    whole = learn_on_the_fly(start(), model_file, EMT(), out=tmp_path / "whole", steps=5, **options)
    learn_on_the_fly(start(), model_file, EMT(), out=tmp_path / "parts", steps=peak + 1, **options)
    killed = json.loads((tmp_path / "parts" / "state.json").read_text())
    assert killed["window_best"]["step"] == peak + 1 and killed["calls"] == []
    CountingEMT.calls = 0
    resumed = learn_on_the_fly(
        start(), model_file, CountingEMT(), out=tmp_path / "parts", steps=5, **options
    )
    assert CountingEMT.calls == 1 and resumed.calls[0]["step"] == peak + 1
    keys = ("step", "called_at_step", "uncertainty", "force_rmse_before")
    assert [[c[k] for k in keys] for c in resumed.calls] == [
        [c[k] for k in keys] for c in whole.calls
    ]
    a = json.loads((tmp_path / "whole" / "state.json").read_text())
    b = json.loads((tmp_path / "parts" / "state.json").read_text())
    np.testing.assert_allclose(a["positions"], b["positions"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(a["momenta"], b["momenta"], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="uses windows of 5 steps"):
        learn_on_the_fly(start(), model_file, EMT(), out=tmp_path / "parts", steps=8,
                         **{**options, "min_interval": 2})  # fmt: skip


@pytest.mark.parametrize(
    "given, message",
    [
        (dict(threshold=0.1, min_interval=0), "min_interval must be an integer >= 1"),
        (dict(threshold=0.1, min_interval=True), "min_interval must be an integer >= 1"),
        (dict(threshold=0.1, min_interval=2.5), "min_interval must be an integer >= 1"),
        (dict(every=2, min_interval=2), "applies to threshold only"),
        (dict(threshold=0.1, max_calls=-1), "max_calls must be an integer >= 0"),
    ],
)
def test_bad_window_settings_are_refused_by_name(model_file, tmp_path, given, message):
    with pytest.raises(ValueError, match=message):
        learn_on_the_fly(start(), model_file, EMT(), out=tmp_path / "x", steps=2, **given)
    assert not (tmp_path / "x").exists()


def test_the_shipped_replay_set_given_by_path_is_weighted_as_auto():
    """A zoo model's replay set passed by path (as for a copy of the zoo model) is named as
    the shipped set, so the refit weighs it N_parent / N_replay as ``"auto"`` does; another
    file is weighted 1."""
    from ase_equi.io.model_file import read_model_file
    from ase_equi.learning_rigidity import replay_weight_of, resolve_replay
    from ase_equi.training.replay import zoo_sets
    from ase_equi.zoo import zoo_path

    replay_path = zoo_sets("metals")[0]
    auto, said_auto = resolve_replay("metals", "auto")
    given, said_given = resolve_replay("metals", replay_path)
    assert said_given == said_auto and len(given) == len(auto)
    rigidity = read_model_file(zoo_path("metals")).rigidity
    weight = replay_weight_of(rigidity, said_given, len(given))
    assert weight == int(rigidity.info["n_structures"]) / len(given) > 1
    assert replay_weight_of(rigidity, "other.xyz (300 frames)", len(given)) == 1.0
