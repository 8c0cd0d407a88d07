"""Shared fixtures: one tiny random model (built once per session) and the test structures.

A model with random weights is a smooth, non-trivial many-body function of the positions, which
is all the physics tests need: forces must be its gradient, stress its strain derivative, and it
must be invariant under E(3) and permutations whatever the weights are.

The structures are small on purpose (the whole physics suite must run in a few minutes on two
shared cores) and all contain both of the model's elements (Al and Cu), so every test is also a
two-element test.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.geometry import cellpar_to_cell
from ase.neighborlist import neighbor_list

from ase_equi import EquivariantCalculator, MaceModel, ModelConfig, load_model, save_model
from ase_equi.io.model_file import LoadedModel

# The models here are tiny (a few thousand weights): several BLAS/OpenMP threads cost more in
# synchronisation than they gain, and on a loaded machine a spinning OpenMP thread that waits for
# a busy core makes every evaluation ~100x slower. One thread keeps the suite fast everywhere.
torch.set_num_threads(1)

ELEMENTS = (13, 29)  # Al, Cu
R_MAX = 3.5  # Å


def learning_start() -> Atoms:
    """The start of the on-the-fly learning tests: a rattled 4-atom Cu/Al cell with momenta."""
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
    atoms.numbers[[1, 2]] = 13
    atoms.rattle(0.05, seed=4)
    atoms.set_momenta(np.random.default_rng(0).normal(0, 0.2, (4, 3)))
    return atoms


def tiny_config(**overrides) -> ModelConfig:
    """A tiny two-element MACE configuration (about 10^4 weights); keywords override fields."""
    settings = dict(
        elements=ELEMENTS,
        reference_energies=(-0.3, -0.5),
        r_max=R_MAX,
        channels=8,
        max_L=1,
        max_ell=2,
        correlation=3,
        radial_mlp=(16,),
        num_interactions=2,
        avg_num_neighbors=10.0,
        scale=0.2,
    )
    settings.update(overrides)
    return ModelConfig(**settings)


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """JSON path of the session's tiny random model (with its .safetensors and .md beside it)."""
    torch.manual_seed(2024)
    model = MaceModel(tiny_config())
    directory = tmp_path_factory.mktemp("models")
    card = {"name": "tiny", "description": "Random weights, for tests only."}
    return save_model(model, directory / "tiny", card=card)


@pytest.fixture(scope="session")
def loaded_model(model_path: Path) -> LoadedModel:
    """The tiny model loaded once in float64 (building the e3nn modules is the slow part)."""
    return load_model(model_path, dtype=torch.float64)


@pytest.fixture
def make_calc(loaded_model: LoadedModel) -> Callable[[], EquivariantCalculator]:
    """Factory of fresh float64 calculators (own cache and counters) sharing the loaded model."""

    def make() -> EquivariantCalculator:
        return EquivariantCalculator(loaded_model, dtype="float64")

    return make


@pytest.fixture
def calc(make_calc: Callable[[], EquivariantCalculator]) -> EquivariantCalculator:
    """A fresh float64 calculator."""
    return make_calc()


# ---------------------------------------------------------------------------------------------
# Structures. Each builder returns a new Atoms object; all are deterministic.


def _triclinic_bulk() -> Atoms:
    """Al2Cu2 fcc cell (a = 3.75 Å), sheared into a triclinic cell and rattled; pbc everywhere."""
    atoms = bulk("Cu", "fcc", a=3.75, cubic=True)
    atoms.numbers[[0, 3]] = 13
    shear = np.array([[0.03, 0.07, -0.04], [0.02, -0.05, 0.06], [-0.03, 0.04, 0.02]])
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + shear), scale_atoms=True)
    atoms.rattle(0.08, seed=1)
    return atoms


def _small_cell() -> Atoms:
    """B2-like AlCu in a triclinic cell whose three vectors (2.9-3.1 Å) are all shorter than
    the cutoff, so each atom interacts with several images of itself and of the other atom."""
    cell = cellpar_to_cell([2.9, 3.0, 3.1, 85.0, 92.0, 97.0])
    atoms = Atoms("AlCu", scaled_positions=[[0.0, 0.0, 0.0], [0.52, 0.47, 0.55]], cell=cell)
    atoms.pbc = True
    return atoms


def _one_atom_cell() -> Atoms:
    """One Cu atom in a triclinic cell (vectors ≈ 2.6 Å < cutoff): only self-images."""
    cell = cellpar_to_cell([2.55, 2.6, 2.65, 62.0, 58.0, 64.0])
    return Atoms("Cu", positions=[[0.1, 0.2, 0.3]], cell=cell, pbc=True)


def _slab() -> Atoms:
    """Two-layer fcc(111) AlCu slab, periodic in-plane (60° cell), in a finite box along z."""
    atoms = fcc111("Cu", size=(2, 2, 2), a=3.7, vacuum=3.0)
    atoms.numbers[[0, 3, 5]] = 13
    atoms.rattle(0.08, seed=2)
    assert atoms.pbc.tolist() == [True, True, False]
    return atoms


def _slab_no_box() -> Atoms:
    """The slab with a zero third cell vector: a cell of rank 2."""
    atoms = _slab()
    cell = atoms.cell.array.copy()
    cell[2] = 0.0
    atoms.set_cell(cell, scale_atoms=False)
    return atoms


def _wire() -> Atoms:
    """A four-atom zigzag wire periodic along x (period 4.6 Å), in a finite 8 Å box in y, z."""
    positions = [[0.0, 0.0, 0.0], [1.2, 1.8, 0.4], [2.4, 0.3, 1.0], [3.5, 1.9, -0.5]]
    atoms = Atoms("AlCuCuAl", positions=positions, cell=[4.6, 8.0, 8.0], pbc=[True, False, False])
    atoms.positions += [0.0, 3.0, 4.0]
    return atoms


def _molecule() -> Atoms:
    """A CuAl4 cluster (Cu in a distorted Al tetrahedron): no periodicity, zero cell."""
    tetrahedron = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / np.sqrt(3.0)
    positions = np.vstack([[0.0, 0.0, 0.0], 2.5 * tetrahedron])
    atoms = Atoms("CuAl4", positions=positions)
    atoms.rattle(0.1, seed=3)
    assert atoms.cell.rank == 0 and not atoms.pbc.any()
    return atoms


STRUCTURES: dict[str, Callable[[], Atoms]] = {
    "bulk": _triclinic_bulk,
    "small_cell": _small_cell,
    "one_atom": _one_atom_cell,
    "slab": _slab,
    "slab_no_box": _slab_no_box,
    "wire": _wire,
    "molecule": _molecule,
}


def make_structure(name: str) -> Atoms:
    """A fresh copy of a named test structure, checked to be physically sensible."""
    atoms = STRUCTURES[name]()
    if len(atoms) > 1:
        distances = neighbor_list("d", atoms, R_MAX) if atoms.cell.rank else None
        if distances is None:
            diff = atoms.positions[:, None] - atoms.positions[None]
            distances = np.linalg.norm(diff, axis=-1)[np.triu_indices(len(atoms), 1)]
        assert distances.min() > 2.0, f"{name}: atoms closer than 2 Å ({distances.min():.2f} Å)"
    return atoms


@pytest.fixture
def structure() -> Callable[[str], Atoms]:
    """``structure(name)``: a fresh copy of one of the test structures in ``STRUCTURES``."""
    return make_structure


def emt_structures(n: int = 6, seed: int = 0) -> list[Atoms]:
    """Rattled, strained fcc Cu, Al and CuAl cells (4 atoms) labelled by EMT."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        atoms = (
            bulk("Al", "fcc", a=4.05, cubic=True)
            if k % 3 == 2
            else bulk("Cu", "fcc", a=3.6, cubic=True)
        )
        if k % 3 == 1:
            atoms.numbers[[0, 2]] = 13
        atoms.set_cell(atoms.cell * (1 + 0.02 * rng.standard_normal()), scale_atoms=True)
        atoms.rattle(0.1, seed=seed * 1000 + k)
        atoms.calc = EMT()
        atoms.calc = SinglePointCalculator(
            atoms,
            energy=atoms.get_potential_energy(),
            forces=atoms.get_forces(),
            stress=atoms.get_stress(),
        )
        out.append(atoms)
    return out


def broken_emt_structures(kind: str) -> list[Atoms]:
    """Two ``emt_structures`` with one defect of ``kind`` in frame 1 (a label or a position)."""
    images = emt_structures(2)
    bad = images[1]
    res = bad.calc.results
    if kind == "missing forces":
        del res["forces"]
    elif kind == "nan position":
        bad.positions[2, 1] = np.nan
    elif kind == "nan energy":
        res["energy"] = np.nan
    elif kind == "inf forces":
        res["forces"][3, 0] = np.inf
    elif kind == "forces shape":
        res["forces"] = res["forces"][:3]
    elif kind == "unknown element":
        bad.numbers[0] = 54
    elif kind == "missing energy":
        del res["energy"]
    return images
