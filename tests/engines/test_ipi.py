"""The i-PI client against the real i-PI: a short PIMD run of a water molecule whose recorded
bead energies and forces equal the calculator's on the recorded bead geometries.

i-PI runs as a subprocess (``i-pi input.xml``, UNIX socket in the test's folder); our client
serves it from this process. The comparison reads i-PI's own output files: bead potentials
(hartree, printed with 17 digits) and per-bead positions and forces (ASE's units, i-PI's
conversion constants), so it checks units, the cell and virial orientation, the bead order
and, with ``batch_size`` 4, the batched protocol.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms, units
from ase.io import read

from ase_equi import EquivariantCalculator
from ase_equi.engines.ipi import BeadEvaluator, serve
from ase_equi.engines.ipi_protocol import IpiAddress
from ase_equi.loading import load_model

IPI = shutil.which("i-pi")
needs_ipi = pytest.mark.skipif(
    importlib.util.find_spec("ipi") is None or IPI is None,
    reason="i-PI is not installed (pip install ipi==3.3.1; the i-pi command on PATH)",
)

WATER = """3
# CELL(abcABC): 12.0 12.0 12.0 90.0 90.0 90.0 cell{angstrom} positions{angstrom}
O 0.0 0.0 0.119262
H 0.0 0.763239 -0.477047
H 0.0 -0.763239 -0.477047
"""
BEADS, STEPS = 4, 2


@pytest.fixture(scope="module")
def water_model():
    """molecules-pbe, loaded once for the client and the reference calculator."""
    return load_model("molecules-pbe")


def _input(prefix: str, batch_size: int) -> str:
    return f"""<simulation verbosity='low' floatformat='%.17e' sockets_prefix='{prefix}'>
  <output prefix='sim'>
    <properties stride='1' filename='out'> [ step, bead_potentials ] </properties>
    <trajectory filename='pos' stride='1' format='ase'> positions </trajectory>
    <trajectory filename='frc' stride='1' format='ase'> forces </trajectory>
  </output>
  <total_steps>{STEPS}</total_steps>
  <prng><seed>31415</seed></prng>
  <ffsocket name='model' mode='unix' pbc='false'>
    <address>water</address><batch_size>{batch_size}</batch_size>
  </ffsocket>
  <system>
    <initialize nbeads='{BEADS}'>
      <file mode='xyz' units='angstrom'>water.xyz</file>
      <velocities mode='thermal' units='kelvin'>300</velocities>
    </initialize>
    <forces><force forcefield='model'/></forces>
    <motion mode='dynamics'>
      <dynamics mode='nvt'>
        <timestep units='femtosecond'>0.5</timestep>
        <thermostat mode='pile_l'><tau units='femtosecond'>50</tau></thermostat>
      </dynamics>
    </motion>
    <ensemble><temperature units='kelvin'>300</temperature></ensemble>
  </system>
</simulation>
"""


def _run_pimd(folder: Path, batch_size: int, model):
    """i-PI in a subprocess, served by our client here; the client's report."""
    (folder / "input.xml").write_text(_input(f"{folder}/s_", batch_size))
    (folder / "water.xyz").write_text(WATER)
    log = open(folder / "ipi.log", "w")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    server = subprocess.Popen(
        [sys.executable, str(IPI), "input.xml"], cwd=folder, stdout=log, stderr=log, env=env
    )
    try:
        template = Atoms("OH2")
        beads = BeadEvaluator(model, template)
        report = serve(beads, IpiAddress(unix="water", sockets_prefix=f"{folder}/s_"), timeout=30)
        assert server.wait(timeout=30) == 0, (folder / "ipi.log").read_text()[-3000:]
    finally:
        if server.poll() is None:
            server.kill()
        log.close()
    return report


@needs_ipi
@pytest.mark.parametrize("batch_size", [1, BEADS])
def test_pimd_beads_get_the_calculators_energies_and_forces(tmp_path, batch_size, water_model):
    report = _run_pimd(tmp_path, batch_size, water_model)
    # one geometry per bead per force evaluation (the initial one and one per step)
    assert report.structures == BEADS * (STEPS + 1) and report.batch_size == batch_size
    assert report.model_calls == BEADS * (STEPS + 1) // batch_size  # a batch is ONE call
    potentials = np.loadtxt(tmp_path / "sim.out")  # step, V(bead 0..3) in hartree
    assert potentials.shape == (STEPS + 1, 1 + BEADS)
    calc = EquivariantCalculator(water_model)
    moved = 0.0
    for bead in range(BEADS):
        frames = read(tmp_path / f"sim.pos_{bead}.extxyz", index=":")
        forces = read(tmp_path / f"sim.frc_{bead}.extxyz", index=":")
        assert len(frames) == len(forces) == STEPS + 1
        for step, (atoms, recorded) in enumerate(zip(frames, forces, strict=True)):
            atoms.pbc = False  # a molecule in a box; i-PI's file says T T T
            atoms.calc = calc
            energy = atoms.get_potential_energy() / units.Hartree
            assert abs(energy - potentials[step, 1 + bead]) < 1e-9 * abs(energy)
            # i-PI converts with its own 8-digit constants and prints 8 decimals: the recorded
            # positions are off by ~1e-8 Å, which moves a force by ~50 eV/Å² × 1e-8 Å
            np.testing.assert_allclose(
                atoms.get_forces(), recorded.get_forces(), rtol=3e-7, atol=2e-6
            )
            moved = max(moved, float(np.abs(atoms.positions - frames[0].positions).max()))
    assert moved > 1e-3  # the beads did move: the steps are not all the initial geometry


def test_virial_of_a_free_molecule_is_the_sum_of_forces_times_positions(water_model):
    """For an energy that depends only on interatomic vectors, −σV = Σ_i f_i ⊗ r_i: the virial
    sent to i-PI (hartree) from the strain derivative equals it from the forces alone."""
    template = Atoms("OH2", positions=[[0, 0, 0.12], [0, 0.76, -0.48], [0, -0.76, -0.48]])
    rng = np.random.default_rng(7)
    q = (template.positions + rng.normal(scale=0.05, size=(3, 3)) + 6.0) / units.Bohr
    h = np.diag([12.0, 13.0, 14.0]) / units.Bohr  # no image within the 5 Å cutoff
    beads = BeadEvaluator(water_model, template)
    _, forces, virial = beads.one(h, q)
    np.testing.assert_allclose(virial, forces.T @ q, rtol=0, atol=1e-10)
    assert np.abs(virial).max() > 1e-4
    (_, forces_b, virial_b), _ = beads.many([h, h], [q, q])  # the batched path: same numbers
    np.testing.assert_allclose(forces_b, forces, rtol=0, atol=1e-12)
    np.testing.assert_allclose(virial_b, virial, rtol=0, atol=1e-12)


def test_command_line_names_the_socket_nobody_serves(tmp_path, capsys):
    from ase_equi.cli import main

    (tmp_path / "water.xyz").write_text(WATER)
    prefix = f"{tmp_path}/s_"
    argv = ["ipi", "--model", "molecules-pbe", "--template", str(tmp_path / "water.xyz")]
    argv += ["--unix", "nobody", "--sockets-prefix", prefix, "--connect-wait", "0"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "3 atoms" in err and f"no i-PI server answered at unix:{prefix}nobody" in err
    with pytest.raises(SystemExit):  # exactly one of --address and --unix
        main(["ipi", "--model", "molecules-pbe", "--template", "water.xyz"])


@needs_ipi
def test_ipi_py_driver_custom_module_gives_the_calculators_numbers(tmp_path, water_model):
    """``i-pi-py_driver -m custom -P ase_equi/engines/ipi_driver.py``: loaded by path the way
    i-PI loads it, one structure and a batch of two (one model call), in atomic units."""
    from ipi.pes import load_pes

    import ase_equi.engines.ipi_driver as module

    (tmp_path / "water.xyz").write_text(WATER)
    driver_class = load_pes("custom", module.__file__)
    driver = driver_class(template=str(tmp_path / "water.xyz"), model="molecules-pbe")
    water = read(tmp_path / "water.xyz")
    water.pbc, water.calc = False, EquivariantCalculator(water_model)
    h = water.cell[:].T / units.Bohr
    shifted = water.positions + [[0.0, 0.0, 0.05], [0.0, -0.02, 0.0], [0.01, 0.0, 0.0]]
    geometries = [water.positions / units.Bohr, shifted / units.Bohr]
    expected = []
    for q in geometries:
        water.positions = q * units.Bohr
        forces = water.get_forces() * units.Bohr / units.Hartree
        expected.append((water.get_potential_energy() / units.Hartree, forces))
    potential, forces, virial, extras = driver(h, geometries[0])
    assert abs(potential - expected[0][0]) < 1e-12 and extras == ""
    np.testing.assert_allclose(forces, expected[0][1], rtol=0, atol=1e-12)
    calls = driver.beads.model_calls
    for (v, f, w, _), (v_ref, f_ref) in zip(driver([h, h], geometries), expected, strict=True):
        assert abs(v - v_ref) < 1e-12
        np.testing.assert_allclose(f, f_ref, rtol=0, atol=1e-12)
        assert w.shape == (3, 3)
    assert driver.beads.model_calls == calls + 1


HOSTILE_SETUP = """
import socket
import numpy as np
from ase import Atoms
from ase_equi.engines.ipi import BeadEvaluator, answer
from ase_equi.engines.ipi_protocol import IpiConnection, header

beads = BeadEvaluator("molecules-pbe", Atoms("OH2"))
i32 = np.int32
INIT = [header("INIT"), i32(0), i32(0)]
CELL = [np.eye(3) * 40.0, np.eye(3) / 40.0]

def feed(*parts):
    server, client = socket.socketpair()
    server.sendall(b"".join(p if isinstance(p, bytes) else np.asarray(p).tobytes() for p in parts))
    server.shutdown(socket.SHUT_WR)
    try:
        return answer(IpiConnection(client, timeout=10), beads)
    finally:
        client.close()
        server.close()
"""


def test_hostile_server_messages_are_refused_by_name_fast_and_small():
    """A server that lies about sizes, sends garbage or hangs up: each refusal names the
    problem, within a second and without allocating what the lie asks for."""
    from bounded_run import run_bounded

    text = b"batch_size:1000000000"
    cases = {
        "batch": f"feed(header('INIT'), i32(0), i32({len(text)}), {text!r})",
        "batch_word": "feed(header('INIT'), i32(0), i32(13), b'batch_size:ab')",
        "text": "feed(header('INIT'), i32(0), i32(2**31 - 1))",
        "atoms": "feed(*INIT, header('POSDATA'), *CELL, i32(2**31 - 1))",
        "negative": "feed(*INIT, header('POSDATA'), *CELL, i32(-5))",
        "fewer": "feed(*INIT, header('POSDATA'), *CELL, i32(2), np.zeros(6))",
        "nan": "feed(*INIT, header('POSDATA'), *CELL, i32(3), np.full(9, np.nan))",
        "unknown": "feed(header('HELLO'))",
        "early": "feed(*INIT, header('GETFORCE'))",
        "hangup": "feed(*INIT, header('POSDATA'), np.zeros(5))",
        "binary": "feed(bytes(range(200, 212)))",
    }
    expected = {
        "batch": ("AseEquiError", "batch_size 1000000000; expected 1..4096"),
        "batch_word": ("AseEquiError", "batch_size 'ab', not a number"),
        "text": ("AseEquiError", "a string length = 2147483647"),
        "atoms": ("AseEquiError", "the number of atoms = 2147483647; expected 0..3"),
        "negative": ("AseEquiError", "the number of atoms = -5"),
        "fewer": ("AseEquiError", "i-PI sent 2 atoms, the template has 3"),
        "nan": ("ValueError", "NaN"),
        "unknown": ("AseEquiError", "unknown message 'HELLO'"),
        "early": ("AseEquiError", "GETFORCE before sending POSDATA"),
        "hangup": ("ConnectionError", "closed the connection"),
        "binary": ("AseEquiError", "not ASCII"),
    }
    records = run_bounded(cases, setup=HOSTILE_SETUP, limit_gib=3.0, timeout=120)
    for name, (error, words) in expected.items():
        record = records[name]
        assert error in [record["error"], *record.get("bases", [])], (name, record)
        assert words in record["message"], (name, record["message"])
        assert record["seconds"] < 2.0, (name, record["seconds"])
    assert max(r["peak_rss_mib"] for r in records.values()) < 1500
