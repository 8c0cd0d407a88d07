"""The strain-pair slope loss of ``scripts/zoo/strain_pairs.py``: which frames pair up, and that
a pair's slope error is the difference of the central-difference elastic constants of the
model and of the reference calculator (here ASE's EMT, through the card's own
``cubic_elastic_constants``)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk, molecule
from ase.calculators.emt import EMT

from ase_equi import EquivariantCalculator
from ase_equi.data import Frame
from ase_equi.io.model_file import LoadedModel
from ase_equi.model.config import ModelConfig
from ase_equi.model.mace import MaceModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "zoo"))
from defect_pairs import DefectPairPenalty, defect_pairs
from paired_frames import PairSampling
from physics import cubic_elastic_constants
from strain_pairs import StrainPairPenalty, strain_groups, strain_pairs

DELTA = 0.005
SAMPLING = PairSampling(elements=(29,), r_max=4.0, dtype=torch.float64, pairs_per_step=None)


def _strained(atoms: Atoms, strain: np.ndarray) -> Atoms:
    atoms = atoms.copy()
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
    return atoms


def _uniaxial(delta: float) -> np.ndarray:
    e = np.zeros((3, 3))
    e[0, 0] = delta
    return e


def _frame(atoms: Atoms, index: int, calc=None) -> Frame:
    atoms = atoms.copy()
    atoms.calc = calc or EMT()
    stress = atoms.get_stress() if atoms.pbc.all() else None
    frame = Frame(atoms.copy(), atoms.get_potential_energy(), atoms.get_forces(), stress, index)
    frame.atoms.calc = None
    return frame


def _model() -> MaceModel:
    torch.manual_seed(3)
    config = ModelConfig(
        elements=(29,), reference_energies=(-1.0,), channels=4, max_ell=1, correlation=2,
        radial_mlp=(8,), r_max=4.0,
    )  # fmt: skip
    return MaceModel(config).double()


def test_only_unrattled_periodic_copies_of_one_structure_group():
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    rattled = _strained(cu, _uniaxial(0.004))
    rattled.rattle(0.01, seed=2)
    structures = [
        _strained(cu, _uniaxial(DELTA)),
        _strained(cu, _uniaxial(-DELTA)),
        _strained(cu.repeat((2, 1, 1)), _uniaxial(DELTA)),  # other atoms: its own group
        rattled,  # other fractional coordinates
        molecule("H2O"),  # not periodic
    ]
    frames = [_frame(a, k, None if k != 4 else EMT()) for k, a in enumerate(structures)]
    assert strain_groups(frames, range(len(frames))) == [[0, 1]]
    assert strain_groups(frames, [0, 2, 3, 4]) == []  # frame 1 not allowed: no pair left


def test_pair_step_is_the_strain_between_the_cells():
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    shear = np.zeros((3, 3))
    shear[1, 2] = shear[2, 1] = 0.004
    structures = [_strained(cu, _uniaxial(DELTA)), _strained(cu, _uniaxial(-DELTA)),
                  _strained(cu, shear), _strained(cu, _uniaxial(0.04))]  # fmt: skip
    frames = [_frame(a, k) for k, a in enumerate(structures)]
    pairs = {(i, j): step for i, j, step in strain_pairs(frames, [[0, 1, 2, 3]])}
    # ±δ along xx: a step of (1 + δ)⁻¹(1 − δ) − 1 ≈ −2δ; the 4 % cell is beyond max_strain
    assert pairs[(0, 1)] == pytest.approx(2 * DELTA / (1 + DELTA), rel=1e-12)
    assert set(pairs) == {(0, 1), (0, 2), (1, 2)}


def test_slope_error_is_the_difference_of_the_elastic_constants():
    model = _model()
    calc = EquivariantCalculator(LoadedModel(model, model.config), dtype="float64")
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    frames = [_frame(_strained(cu, _uniaxial(d)), k) for k, d in enumerate((DELTA, -DELTA))]
    penalty = StrainPairPenalty(frames, [0, 1], SAMPLING, weight=2.0)
    errors = penalty.slope_errors(model).detach().numpy()[0]
    c_model = cubic_elastic_constants(cu, lambda: calc, delta=DELTA)
    c_emt = cubic_elastic_constants(cu, EMT, delta=DELTA)
    # e = (Δσ_model − Δσ_EMT)/step with step = 2δ/(1 + δ) and Δσ = σ(−δ) − σ(+δ) = −2δ C
    scale = -(1 + DELTA) * units.GPa
    assert errors[0, 0] == pytest.approx((c_model["C11"] - c_emt["C11"]) * scale, rel=1e-6)
    assert errors[1, 1] == pytest.approx((c_model["C12"] - c_emt["C12"]) * scale, rel=1e-6)
    assert abs(errors[0, 1]) < 1e-9  # no shear response to a uniaxial strain in a cubic cell
    expected = 2.0 * float(np.mean(errors**2))
    assert float(penalty(model).detach()) == pytest.approx(expected, rel=1e-10)


def test_a_model_labelling_its_own_frames_has_no_slope_error():
    model = _model()
    calc = EquivariantCalculator(LoadedModel(model, model.config), dtype="float64")
    cu = bulk("Cu", "fcc", a=3.6)
    rng = np.random.default_rng(0)
    strains = [0.5 * (e + e.T) for e in rng.uniform(-0.01, 0.01, (4, 3, 3))]
    frames = [_frame(_strained(cu, e), k, calc) for k, e in enumerate(strains)]
    penalty = StrainPairPenalty(frames, range(4), SAMPLING, weight=1.0)
    assert penalty.num_pairs == 6
    assert float(penalty.slope_errors(model).abs().max()) < 1e-10


def test_coordinates_on_either_side_of_the_cell_boundary_group_together():
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    shifted = cu.copy()
    shifted.positions[1] += shifted.cell.array.sum(0) * 1e-9  # 0.5 → 0.5 + 1e-9
    below = cu.copy()
    below.set_scaled_positions(below.get_scaled_positions() - 1e-9)  # 0 → -1e-9 (≈ 1)
    frames = [_frame(a, k) for k, a in enumerate((cu, shifted, below))]
    assert strain_groups(frames, range(3)) == [[0, 1, 2]]


def test_defect_pair_error_is_the_vacancy_formation_energy_error():
    model = _model()
    calc = EquivariantCalculator(LoadedModel(model, model.config), dtype="float64")
    host = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    vacancy = host.copy()
    del vacancy[5]
    alloy = host.copy()
    alloy.numbers[3] = 79  # two elements: no pair
    other_cell = bulk("Cu", "fcc", a=3.62, cubic=True).repeat(2)
    structures = [vacancy, host, alloy, other_cell]
    frames = [_frame(a, k) for k, a in enumerate(structures)]
    assert defect_pairs(frames, range(4)) == [(0, 1)]
    penalty = DefectPairPenalty(frames[:2], [0, 1], SAMPLING, weight=3.0)

    def formation(make) -> float:
        energies = []
        for atoms in (vacancy, host):
            atoms = atoms.copy()
            atoms.calc = make()
            energies.append(atoms.get_potential_energy())
        return energies[0] - 31 / 32 * energies[1]

    expected = formation(lambda: calc) - formation(EMT)
    assert float(penalty.errors(model)[0]) == pytest.approx(expected, abs=1e-9)
    assert float(penalty(model).detach()) == pytest.approx(3.0 * expected**2, rel=1e-9)


def test_vacancies_and_interstitials_pair_with_a_host_at_rest_only():
    host = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    vacancy = host.copy()
    del vacancy[5]
    hot = host.copy()
    hot.rattle(0.05, seed=4)
    interstitial = host.copy()
    interstitial.append("Cu")
    interstitial.positions[-1] = [0.9, 0.9, 0.9]
    frames = [_frame(a, k) for k, a in enumerate((vacancy, hot, host, interstitial))]
    assert defect_pairs(frames, range(4)) == [(0, 2), (3, 2)]


def test_relative_slope_errors_are_divided_by_the_reference_slope():
    model = _model()
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    frames = [_frame(_strained(cu, _uniaxial(d)), k) for k, d in enumerate((DELTA, -DELTA))]
    penalty = StrainPairPenalty(frames, [0, 1], SAMPLING, weight=1.0)
    absolute = penalty.slope_errors(model).detach().numpy()[0]
    relative = penalty.slope_errors(model, relative=True).detach().numpy()[0]
    step = 2 * DELTA / (1 + DELTA)
    slope = (frames[1].atoms.copy(), frames[0].atoms.copy())
    s_ref = [_frame(a, 9).stress for a in slope]  # EMT's Voigt stresses, recomputed
    diff = (np.array(s_ref[0]) - np.array(s_ref[1])) / step
    voigt_norm = np.sqrt((diff[:3] ** 2).sum() + 2 * (diff[3:] ** 2).sum())
    assert relative == pytest.approx(absolute / voigt_norm, rel=1e-9)
