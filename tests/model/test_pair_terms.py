"""ZBL pair repulsion, Agnesi transform and density-normalised blocks in our own ModelConfig.

Expected values come from the ZBL formula with its published constants (Ziegler, Biersack and
Littmark 1985, as MACE rounds them) and from finite differences of the energy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.fd import calculate_numerical_forces

from ase_equi import EquivariantCalculator, ModelConfig, load_model, save_model
from ase_equi.io.model_file import LoadedModel
from ase_equi.model.mace import MaceModel
from ase_equi.model.zbl import ZBLRepulsion

R_COV = {1: 0.31, 8: 0.66, 29: 1.32}  # Å, Cordero et al. 2008


def zbl_by_hand(z1: int, z2: int, r: float, p: int = 5) -> float:
    """Pair energy (eV) from the formula, written out independently of the module."""
    a = 0.4543 * 0.529 / (z1**0.3 + z2**0.3)
    x = r / a
    phi = (
        0.1818 * math.exp(-3.2 * x)
        + 0.5099 * math.exp(-0.9423 * x)
        + 0.2802 * math.exp(-0.4028 * x)
        + 0.02817 * math.exp(-0.2016 * x)
    )
    y = r / (R_COV[z1] + R_COV[z2])
    if y >= 1:
        return 0.0
    u = (
        1
        - (p + 1) * (p + 2) / 2 * y**p
        + p * (p + 2) * y ** (p + 1)
        - p * (p + 1) / 2 * y ** (p + 2)
    )
    return 14.3996 * z1 * z2 / r * phi * u


@pytest.mark.parametrize(("z1", "z2", "r"), [(8, 29, 0.8), (1, 8, 0.5), (1, 1, 0.3), (8, 29, 2.1)])
def test_zbl_pair_energy_is_the_formula(z1, z2, r):
    zbl = ZBLRepulsion(p=5).double()
    lengths = torch.tensor([[r], [r]], dtype=torch.float64)  # the edge in both directions
    senders, receivers = torch.tensor([0, 1]), torch.tensor([1, 0])
    numbers = torch.tensor([z1, z2])
    per_atom = zbl(lengths, numbers[senders], numbers[receivers], receivers, 2)
    assert float(per_atom.sum()) == pytest.approx(zbl_by_hand(z1, z2, r), rel=1e-12, abs=1e-300)
    assert float(per_atom[0]) == pytest.approx(float(per_atom[1]))  # half to each atom


def _config(**extra) -> ModelConfig:
    return ModelConfig(
        elements=(1, 8, 29),
        reference_energies=(-1.1, -4.9, -4.1),
        r_max=4.0,
        channels=8,
        max_L=1,
        max_ell=2,
        correlation=2,
        radial_mlp=(16,),
        avg_num_neighbors=4.0,
        **extra,
    )


def _calc(model: MaceModel) -> EquivariantCalculator:
    return EquivariantCalculator(LoadedModel(model=model, config=model.config, source="test"))


def _short_contacts() -> Atoms:
    """Cu-O at 1.1 Å (ZBL range 1.98 Å) and O-H at 0.6 Å (0.97 Å), in a triclinic cell."""
    atoms = Atoms(
        "CuOH",
        positions=[[0.0, 0.0, 0.0], [1.1, 0.05, 0.0], [1.1, 0.62, 0.1]],
        cell=[[4.5, 0.0, 0.0], [0.3, 4.4, 0.0], [0.2, -0.1, 4.6]],
        pbc=True,
    )
    atoms.rattle(0.01, seed=3)
    return atoms


@pytest.mark.parametrize(
    "extra",
    [
        {"pair_repulsion": True},
        {"pair_repulsion": True, "distance_transform": "Agnesi", "density_normalisation": True},
    ],
)
def test_own_model_with_zbl_forces_equal_finite_differences(extra):
    torch.manual_seed(5)
    model = MaceModel(_config(**extra)).double()
    atoms = _short_contacts()
    atoms.calc = _calc(model)
    forces = atoms.get_forces()
    assert np.abs(forces).max() > 5.0  # the repulsion dominates at these contacts
    numerical = calculate_numerical_forces(atoms, eps=1e-5)
    np.testing.assert_allclose(forces, numerical, atol=1e-6 * np.abs(forces).max())


def test_zbl_is_added_before_scale_and_shift():
    """E(scale s) - E0 = s·(E_readout + E_ZBL) + shift: doubling the scale doubles the ZBL part
    as well, so an isolated Cu-O pair whose readouts are zeroed gives 2 E_ZBL."""
    torch.manual_seed(6)
    energies = []
    for scale in (1.0, 2.0):
        model = MaceModel(_config(pair_repulsion=True, scale=scale)).double()
        with torch.no_grad():
            for readout in model.readouts:
                for parameter in readout.parameters():
                    parameter.zero_()
        atoms = Atoms("CuO", positions=[[0, 0, 0], [0.9, 0, 0]])
        atoms.calc = _calc(model)
        energies.append(atoms.get_potential_energy() - (-4.1 - 4.9))
    assert energies[0] == pytest.approx(zbl_by_hand(8, 29, 0.9), rel=1e-12)
    assert energies[1] == pytest.approx(2 * energies[0], rel=1e-12)


def test_new_fields_stay_out_of_old_headers_and_round_trip(tmp_path):
    plain = _config().to_dict()
    assert not {"pair_repulsion", "distance_transform", "density_normalisation"} & set(plain)
    cfg = _config(pair_repulsion=True, distance_transform="Agnesi", density_normalisation=True)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="distance_transform"):
        _config(distance_transform="Soft")
    torch.manual_seed(7)
    model = MaceModel(cfg).double()
    path = save_model(model, tmp_path / "zbl")
    loaded = load_model(path)
    assert loaded.config == cfg
    a, b = _short_contacts(), _short_contacts()
    a.calc, b.calc = _calc(model), EquivariantCalculator(loaded)
    assert a.get_potential_energy() == b.get_potential_energy()
