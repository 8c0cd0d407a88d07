"""Reading labelled data, validation errors, E0 least squares and data statistics."""

from __future__ import annotations

import ase.db
import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import voigt_6_to_full_3x3_stress

from ase_equi.batch import frames_to_graphs, make_batch
from ase_equi.data import DataKeys, Frame, read_frames, split_indices
from ase_equi.statistics import data_statistics, fit_reference_energies


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


def _with_ref_labels(atoms: Atoms, stress_3x3: bool = False) -> Atoms:
    """A copy with labels moved to REF_energy / REF_forces / REF_stress (info and arrays)."""
    res = atoms.calc.results
    out = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    out.info["REF_energy"] = res["energy"]
    out.arrays["REF_forces"] = res["forces"].copy()
    out.info["REF_stress"] = (
        voigt_6_to_full_3x3_stress(res["stress"]) if stress_3x3 else res["stress"].copy()
    )
    return out


def test_read_extxyz_default_keys(tmp_path):
    images = emt_structures(3)
    ase.io.write(tmp_path / "d.xyz", images)
    frames = read_frames(tmp_path / "d.xyz", elements=[13, 29])
    assert [f.index for f in frames] == [0, 1, 2]
    for frame, atoms in zip(frames, images, strict=True):
        res = atoms.calc.results
        assert frame.energy == pytest.approx(res["energy"], abs=1e-9)
        np.testing.assert_allclose(frame.forces, res["forces"], atol=1e-7)
        np.testing.assert_allclose(frame.stress, res["stress"], atol=1e-9)
        assert frame.has_stress and frame.atoms.calc is None


@pytest.mark.parametrize("stress_3x3", [False, True])
def test_read_ref_keys_and_3x3_stress(tmp_path, stress_3x3):
    images = emt_structures(2)
    ase.io.write(tmp_path / "d.xyz", [_with_ref_labels(a, stress_3x3) for a in images])
    frames = read_frames(tmp_path / "d.xyz", keys=DataKeys.ref())
    np.testing.assert_allclose(frames[1].stress, images[1].calc.results["stress"], atol=1e-9)
    np.testing.assert_allclose(frames[1].forces, images[1].calc.results["forces"], atol=1e-7)
    # without an explicit choice the default names are missing: the error lists what is there
    with pytest.raises(ValueError, match=r"frame 0 .* no energy under 'energy'.*REF_energy"):
        read_frames(tmp_path / "d.xyz")


def test_ambiguous_keys_need_a_choice():
    atoms = emt_structures(1)[0]
    atoms.info["REF_energy"] = atoms.calc.results["energy"] + 0.5  # e.g. a DFT relabelling
    with pytest.raises(ValueError, match=r"frame 0: energy is ambiguous.*REF_energy"):
        read_frames([atoms])
    atoms.arrays["REF_forces"] = atoms.calc.results["forces"]
    atoms.info["REF_stress"] = atoms.calc.results["stress"]
    (frame,) = read_frames([atoms], keys=DataKeys.ref())
    assert frame.energy == pytest.approx(atoms.calc.results["energy"] + 0.5)
    (frame,) = read_frames([atoms], keys=DataKeys())
    assert frame.energy == pytest.approx(atoms.calc.results["energy"])
    atoms.info["REF_energy"] = atoms.calc.results["energy"]  # same value: not ambiguous
    assert read_frames([atoms])[0].energy == pytest.approx(atoms.calc.results["energy"])


def _broken(kind: str) -> list[Atoms]:
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


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing forces", r"frame 1 has no forces under 'forces'"),
        ("nan position", r"frame 1: positions contain NaN or inf at atom 2"),
        ("nan energy", r"frame 1: energy is nan"),
        ("inf forces", r"frame 1: forces contain NaN or inf at atom 3"),
        ("forces shape", r"frame 1: forces have shape \(3, 3\), expected \(4, 3\)"),
        ("unknown element", r"frame 1: element Xe \(Z=54\) is not in"),
        ("missing energy", r"frame 1 has no energy under 'energy'. Keys found: calculator"),
    ],
)
def test_invalid_frames_name_the_frame(kind, message):
    with pytest.raises(ValueError, match=message):
        read_frames(_broken(kind), elements=[13, 29])


def test_forces_optional_when_asked():
    images = _broken("missing forces")
    frames = read_frames(images, require_forces=False)
    assert frames[1].forces is None
    graphs = frames_to_graphs(frames, [13, 29], 3.5)
    batch = make_batch(frames, graphs)
    assert batch.forces_mask.tolist() == [True] * 4 + [False] * 4


def test_read_ase_db(tmp_path):
    images = emt_structures(2)
    with ase.db.connect(tmp_path / "d.db") as db:
        for atoms in images:
            bare = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=True)
            res = atoms.calc.results
            db.write(
                bare,
                REF_energy=res["energy"],
                data={"REF_forces": res["forces"], "REF_stress": res["stress"]},
            )
    frames = read_frames(tmp_path / "d.db", keys=DataKeys.ref())
    np.testing.assert_allclose(frames[1].forces, images[1].calc.results["forces"])
    assert frames[0].energy == pytest.approx(images[0].calc.results["energy"])


def test_reference_energies_least_squares_exact():
    rng = np.random.default_rng(3)
    e0 = {1: -13.6, 8: -2041.0, 29: -1.25}
    frames = []
    for k in range(8):
        numbers = rng.choice(list(e0), size=int(rng.integers(2, 7)))
        atoms = Atoms(numbers=numbers, positions=rng.uniform(0, 6, (len(numbers), 3)))
        frames.append(Frame(atoms, float(sum(e0[int(z)] for z in numbers)), index=k))
    fitted = fit_reference_energies(frames, [1, 8, 29])
    np.testing.assert_allclose(fitted, [e0[1], e0[8], e0[29]], rtol=0, atol=1e-9)


def test_isolated_atoms_fix_their_element():
    e0 = {13: -0.5, 29: -0.25}
    frames = [Frame(Atoms("Cu"), -0.3, index=0)]  # isolated Cu: wins over the fit
    for k, formula in enumerate(["CuAl", "Cu2Al", "Al3", "CuAl2"], start=1):
        atoms = Atoms(formula, positions=np.arange(3 * len(Atoms(formula))).reshape(-1, 3))
        frames.append(Frame(atoms, sum(e0[int(z)] for z in atoms.numbers), index=k))
    fitted = fit_reference_energies(frames, [13, 29])
    assert fitted[1] == pytest.approx(-0.3)
    # Al from min || n_Al E0_Al - (E - n_Cu (-0.3)) ||, by hand: normal equations
    n_al = np.array([1, 1, 3, 2])
    n_cu = np.array([1, 2, 0, 1])
    target = n_al * -0.5 + n_cu * -0.25 - n_cu * -0.3
    assert fitted[0] == pytest.approx(float(n_al @ target / (n_al @ n_al)))


def test_statistics_shift_scale_neighbours():
    rng = np.random.default_rng(0)
    frames = []
    for k, a in enumerate((3.6, 3.65)):
        atoms = bulk("Cu", "fcc", a=a)  # one atom, 12 neighbours within 3.0 Å
        frames.append(Frame(atoms, -1.0 - k, rng.normal(size=(1, 3)), index=k))
    frames.append(Frame(Atoms("Cu"), -0.25, np.zeros((1, 3)), index=2))
    stats = data_statistics(frames, [29], 3.0)
    assert stats.reference_energies == (-0.25,)
    assert stats.shift == pytest.approx(np.mean([-1.0 + 0.25, -2.0 + 0.25]))
    forces = np.concatenate([frames[0].forces, frames[1].forces])  # isolated atom left out
    assert stats.scale == pytest.approx(np.sqrt(np.mean(forces**2)))
    assert stats.avg_num_neighbors == pytest.approx(12.0)


def test_split_is_fixed_by_seed_and_disjoint():
    a = split_indices(20, valid_fraction=0.2, test_fraction=0.1, seed=7)
    assert a == split_indices(20, valid_fraction=0.2, test_fraction=0.1, seed=7)
    assert a != split_indices(20, valid_fraction=0.2, test_fraction=0.1, seed=8)
    assert sorted(a["train"] + a["valid"] + a["test"]) == list(range(20))
    assert (len(a["train"]), len(a["valid"]), len(a["test"])) == (14, 4, 2)
    with pytest.raises(ValueError, match="no training frame"):
        split_indices(2, valid_fraction=0.5, test_fraction=0.5, seed=0)


def test_batch_labels_and_stress_mask():
    images = emt_structures(2)
    molecule = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.3]])
    molecule.calc = SinglePointCalculator(
        molecule, energy=-1.0, forces=np.zeros((2, 3)), stress=np.zeros(6)
    )
    frames = read_frames(images + [molecule])
    batch = make_batch(frames, frames_to_graphs(frames, [13, 29], 3.5))
    assert batch.stress_mask.tolist() == [True, True, False]  # no cell: stress label unused
    assert not batch.stress_computable
    assert batch.num_atoms.tolist() == [4, 4, 2]
    assert batch.forces.shape == (10, 3) and batch.stress.shape == (3, 3, 3)
    expected = voigt_6_to_full_3x3_stress(images[0].calc.results["stress"])
    torch.testing.assert_close(batch.stress[0], torch.as_tensor(expected))
