"""MD stability of a silicon model: Langevin NVT of the 64-atom diamond cell, model only.
Resumable; the ``silicon-xtb`` card reads its JSON.

    export OMP_NUM_THREADS=1
    python scripts/zoo/md_stability.py silicon-xtb --run runs/silicon-xtb-v2  # 50 ps, 300, 1200 K
    python scripts/zoo/md_stability.py silicon-xtb --model models/silicon-xtb.json --ps 0.2
    (the same command resumes from the last checkpoint)

Setting: the 64-atom cubic diamond cell at GFN1-xTB's lattice constant (5.63 Å, the training
data's density), fixed cell, velocities drawn at the target temperature, ASE Langevin
(time step ``--dt`` fs, friction 0.01 fs⁻¹), float32 model. Every ``SAMPLE`` steps the script
records the shortest interatomic distance, the potential energy per atom, the kinetic
temperature and (in the second half of the run) the pair distances for the radial distribution.

A run is **stable** when all of these hold: no pair ever closer than 1.8 Å; the potential
energy per atom stays within [E_c − 0.05, E_c + 1.0] eV of the perfect crystal's E_c (a model
with a spurious deep state falls below E_c; one that blows up rises far above it); the mean
kinetic temperature of the second half is within 10 % of the set one. The RDF's first peak
(Å) and the mean coordination within 3.0 Å are reported, not judged (the crystal at 300 K:
the bond length and 4; a melted cell at 1,200 K would show about 5–6).

State (positions, momenta, the random generator, the statistics) is written atomically every
``--checkpoint`` steps to ``OUT/md-T.json``; the results to ``OUT/md-stability.json``, with the
model file's weights hash, which the card checks against the model it describes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, thermalize_momenta

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate_silicon_xtb import A0

from ase_equi import EquivariantCalculator, load_model

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = 20  # steps between samples
MIN_CONTACT = 1.8  # Å
BOND_CUTOFF = 3.0  # Å, coordination shell
ENERGY_WINDOW = (-0.05, 1.0)  # eV/atom around the perfect crystal's energy
TEMPERATURE_TOLERANCE = 0.10
RDF_BINS = np.linspace(0.0, 5.0, 251)  # Å; half the 11.26 Å cell is 5.63 Å


def pair_distances(atoms: Atoms) -> np.ndarray:
    """All distinct interatomic distances (Å, minimum image) of a periodic cell."""
    d = atoms.get_all_distances(mic=True)
    return d[np.triu_indices(len(atoms), k=1)]


def rdf_summary(histogram: np.ndarray, samples: int, n_atoms: int) -> dict[str, float]:
    """First-peak position (Å) of the pair-distance ``histogram`` over ``RDF_BINS`` (summed
    over ``samples`` configurations), and the mean coordination within ``BOND_CUTOFF``.

    The histogram counts each pair once, so the coordination is 2·pairs/(atoms·samples). The
    peak is taken from the histogram divided by the shell volume 4πr²dr (the RDF's shape).
    """
    centres = 0.5 * (RDF_BINS[1:] + RDF_BINS[:-1])
    shell = 4.0 * np.pi * centres**2 * np.diff(RDF_BINS)
    inside = centres < BOND_CUTOFF
    g = np.where(inside, histogram / shell, -1.0)
    coordination = 2.0 * histogram[inside].sum() / (n_atoms * max(samples, 1))
    return {
        "rdf_first_peak_A": float(centres[int(np.argmax(g))]),
        "mean_coordination": float(coordination),
    }


def new_state(temperature: float, seed: int) -> dict:
    atoms = bulk("Si", "diamond", a=A0, cubic=True).repeat(2)
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature, rng=rng)
    Stationary(atoms)
    return {
        "step": 0,
        "positions": atoms.positions.tolist(),
        "momenta": atoms.get_momenta().tolist(),
        "rng": rng.bit_generator.state,
        "shortest_contact_A": float("inf"),
        "energy_per_atom_range": [float("inf"), -float("inf")],
        "temperatures": [],
        "histogram": np.zeros(len(RDF_BINS) - 1).tolist(),
        "rdf_samples": 0,
        "seconds": 0.0,
        "cpu_seconds": 0.0,
    }


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def sample(atoms: Atoms, state: dict, second_half: bool) -> None:
    """Add the current configuration's contact, energy, temperature (and pairs) to ``state``."""
    distances = pair_distances(atoms)
    state["shortest_contact_A"] = min(state["shortest_contact_A"], float(distances.min()))
    e = atoms.get_potential_energy() / len(atoms)
    low, high = state["energy_per_atom_range"]
    state["energy_per_atom_range"] = [min(low, e), max(high, e)]
    if second_half:
        state["temperatures"].append(float(atoms.get_temperature()))
        state["histogram"] = (
            np.asarray(state["histogram"]) + np.histogram(distances, RDF_BINS)[0]
        ).tolist()
        state["rdf_samples"] += 1


def simulate(
    calc, temperature: float, steps: int, dt_fs: float, path: Path, checkpoint: int
) -> dict:
    """Run (or resume) one temperature to ``steps`` steps; the final state."""
    state = (
        json.loads(path.read_text()) if path.exists() else new_state(temperature, int(temperature))
    )
    atoms = bulk("Si", "diamond", a=A0, cubic=True).repeat(2)
    atoms.positions = np.array(state["positions"])
    atoms.set_momenta(np.array(state["momenta"]))
    atoms.set_constraint(FixCom())
    atoms.calc = calc
    rng = np.random.default_rng()
    rng.bit_generator.state = state["rng"]
    dyn = Langevin(
        atoms,
        dt_fs * units.fs,
        temperature_K=temperature,
        friction=0.01 / units.fs,
        fixcm=False,
        rng=rng,
    )
    while state["step"] < steps:
        started, cpu = time.perf_counter(), time.process_time()
        chunk = min(checkpoint, steps - state["step"])
        for _ in range(chunk // SAMPLE):
            dyn.run(SAMPLE)
            state["step"] += SAMPLE
            sample(atoms, state, second_half=state["step"] > steps // 2)
        state.update(positions=atoms.positions.tolist(), momenta=atoms.get_momenta().tolist())
        state["rng"] = rng.bit_generator.state
        state["seconds"] += time.perf_counter() - started
        state["cpu_seconds"] = state.get("cpu_seconds", 0.0) + time.process_time() - cpu
        write_json(path, state)
        print(
            f"{temperature:.0f} K: step {state['step']}/{steps}, {state['seconds']:.0f} s",
            flush=True,
        )
    return state


def verdict(state: dict, temperature: float, steps: int, dt_fs: float, e_crystal: float) -> dict:
    """The run's summary and its stability (see the module docstring)."""
    low, high = state["energy_per_atom_range"]
    mean_t = float(np.mean(state["temperatures"])) if state["temperatures"] else float("nan")
    stable = (
        state["shortest_contact_A"] >= MIN_CONTACT
        and e_crystal + ENERGY_WINDOW[0] <= low
        and high <= e_crystal + ENERGY_WINDOW[1]
        and abs(mean_t - temperature) <= TEMPERATURE_TOLERANCE * temperature
    )
    rdf = rdf_summary(np.asarray(state["histogram"]), state["rdf_samples"], 64)
    return {
        "temperature_K": temperature,
        "simulated_ps": state["step"] * dt_fs / 1000.0,
        "complete": state["step"] >= steps,
        "stable": bool(stable),
        "shortest_contact_A": round(state["shortest_contact_A"], 4),
        "energy_per_atom_minus_crystal_eV": [round(low - e_crystal, 4), round(high - e_crystal, 4)],
        "mean_temperature_K": round(mean_t, 1),
        **{k: round(v, 3) for k, v in rdf.items()},
        "seconds": round(state["seconds"]),
        "ms_per_step": round(1000.0 * state["seconds"] / max(state["step"], 1), 1),
        "cpu_ms_per_step": round(1000.0 * state.get("cpu_seconds", 0.0) / max(state["step"], 1), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="zoo recipe name (silicon-xtb)")
    parser.add_argument("--run", help="training folder (default runs/NAME-v2)")
    parser.add_argument("--model", help="a model file instead of the run's")
    parser.add_argument("--out", help="results folder (default runs/cards/NAME)")
    parser.add_argument("--ps", type=float, default=50.0, help="simulated time per temperature")
    parser.add_argument("--dt", type=float, default=1.0, help="time step (fs)")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 1200.0])
    parser.add_argument("--checkpoint", type=int, default=1000, help="steps between checkpoints")
    args = parser.parse_args()
    if args.checkpoint % SAMPLE or args.ps <= 0 or args.dt <= 0:
        parser.error(f"--checkpoint must be a multiple of {SAMPLE}; --ps and --dt positive")
    model_file = Path(
        args.model or Path(args.run or ROOT / "runs" / f"{args.name}-v2") / f"{args.name}.json"
    )
    out = Path(args.out or ROOT / "runs" / "cards" / args.name)
    out.mkdir(parents=True, exist_ok=True)
    steps = int(round(args.ps * 1000.0 / args.dt / SAMPLE)) * SAMPLE
    trained = load_model(model_file, dtype=None)
    calc = EquivariantCalculator(trained, dtype="float32")
    crystal = bulk("Si", "diamond", a=A0, cubic=True).repeat(2)
    crystal.calc = calc
    e_crystal = crystal.get_potential_energy() / len(crystal)
    runs = []
    for t in args.temperatures:
        state = simulate(
            calc,
            t,
            steps,
            args.dt,
            out / f"md-{t:.0f}K-{steps}x{args.dt:g}fs.json",
            args.checkpoint,
        )
        runs.append(verdict(state, t, steps, args.dt, e_crystal))
        print(runs[-1], flush=True)
    header = json.loads(model_file.read_text())
    result = {
        "model": str(args.model or model_file.name),
        "weights_sha256": header["weights_sha256"],
        "dt_fs": args.dt,
        "runs": runs,
    }
    write_json(out / "md-stability.json", result)
    print(f"wrote {out / 'md-stability.json'}")


if __name__ == "__main__":
    main()
