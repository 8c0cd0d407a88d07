"""``scripts/zoo/train_strain_pairs.py``'s warm start at a new cutoff (``with_cutoff``): every
learned weight kept, the radial basis and the neighbour normalisation those of the new cutoff
(the count checked against ASE's own neighbour list), and pairs between the old and the new
cutoff now felt."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk
from ase.neighborlist import neighbor_list

from ase_equi.data import Frame
from ase_equi.io.model_file import LoadedModel
from ase_equi.model.config import ModelConfig
from ase_equi.model.mace import MaceModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "zoo"))
from train_strain_pairs import with_cutoff


def _model(r_max: float) -> MaceModel:
    torch.manual_seed(5)
    config = ModelConfig(
        elements=(29,), reference_energies=(-1.0,), channels=4, max_ell=1, correlation=2,
        radial_mlp=(8,), r_max=r_max, avg_num_neighbors=12.0,
    )  # fmt: skip
    return MaceModel(config).float()


def _energy(model: MaceModel, atoms: Atoms) -> float:
    from ase_equi import EquivariantCalculator

    model = model.double()
    calc = EquivariantCalculator(LoadedModel(model, model.config), dtype="float64")
    atoms = atoms.copy()
    atoms.calc = calc
    return float(atoms.get_potential_energy())


def _frames() -> list[Frame]:
    cells = [bulk("Cu", "fcc", a=3.6, cubic=True), bulk("Cu", "fcc", a=3.7).repeat(2)]
    return [Frame(a, -1.0, np.zeros((len(a), 3)), None, k) for k, a in enumerate(cells)]


def test_learned_weights_kept_and_radial_basis_of_the_new_cutoff():
    start = _model(3.0)
    new = with_cutoff(start, 4.5, _frames())
    assert new.config.r_max == 4.5
    old_state, new_state = start.state_dict(), new.state_dict()
    learned = [k for k in old_state if not k.startswith("radial_embedding.")]
    assert learned and all(torch.equal(old_state[k], new_state[k]) for k in learned)
    frequencies = new_state["radial_embedding.bessel.frequencies"].double()
    expected = math.pi / 4.5 * torch.arange(1, len(frequencies) + 1, dtype=torch.float64)
    assert torch.allclose(frequencies, expected, rtol=1e-6)


def test_neighbour_normalisation_counted_at_the_new_cutoff():
    frames = _frames()
    new = with_cutoff(_model(3.0), 4.5, frames)
    pairs = sum(len(neighbor_list("i", f.atoms, 4.5)) for f in frames)
    atoms = sum(len(f.atoms) for f in frames)
    assert new.config.avg_num_neighbors == pairs / atoms
    assert new.config.avg_num_neighbors > 12.0  # fcc Cu: 12 first neighbours, more within 4.5


def test_pairs_beyond_the_old_cutoff_are_felt_after_the_warm_start():
    start = _model(3.0)
    new = with_cutoff(start, 4.5, _frames())

    def dimer(d: float) -> Atoms:
        return Atoms("Cu2", positions=[[0, 0, 0], [d, 0, 0]])

    # 3.5 and 4.0 Å: beyond the old cutoff, inside the new one
    assert _energy(start, dimer(3.5)) == _energy(start, dimer(4.0))
    assert abs(_energy(new, dimer(3.5)) - _energy(new, dimer(4.0))) > 1e-8


def test_a_wider_radial_basis_starts_as_the_same_function():
    """More radial basis functions at the same cutoff: the same energies (the new functions'
    weights zero, the kept ones rescaled for the layer's 1/√inputs normalisation) to float32
    rounding; the new functions do reach the energy once their weights are not zero; fewer
    functions are refused."""
    import pytest

    start = _model(3.0)
    same = with_cutoff(start, 3.0, _frames())
    wide = with_cutoff(start, 3.0, _frames(), num_bessel=20)
    assert wide.config.num_bessel == 20 and same.config.num_bessel == 8
    cell = bulk("Cu", "fcc", a=3.6, cubic=True)
    cell.rattle(0.1, seed=3)
    assert _energy(wide, cell) == pytest.approx(_energy(same, cell), abs=1e-6)
    assert same.config.avg_num_neighbors == 12.0  # fcc Cu within 3 Å: as the start model's
    assert _energy(wide, cell) == pytest.approx(_energy(start, cell), abs=1e-6)
    layer = next(k for k in wide.state_dict() if k.endswith("radial_mlp.layer0.weight"))
    assert torch.count_nonzero(wide.state_dict()[layer][8:]) == 0
    with torch.no_grad():
        wide.state_dict()[layer][8:] += 0.5
    assert _energy(wide, cell) != pytest.approx(_energy(same, cell), abs=1e-4)
    with pytest.raises(ValueError, match="num_bessel 4"):
        with_cutoff(start, 3.0, _frames(), num_bessel=4)
