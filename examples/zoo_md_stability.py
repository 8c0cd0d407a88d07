"""50 ps of Langevin MD at 300 K with a zoo model: does it stay physical?

    python examples/zoo_md_stability.py metals          # 108-atom fcc CuAu-alloy cell, 5 fs steps
    python examples/zoo_md_stability.py molecules-pbe   # one ethanol molecule in vacuum, 1 fs
    python examples/zoo_md_stability.py silicon-xtb     # 64-atom diamond Si cell, 3 fs
    python examples/zoo_md_stability.py metals --ps 5   # shorter

Float32 model, 1 torch thread. Every 100 steps it records the temperature, the shortest
interatomic distance and, for the crystals, the largest displacement from the starting lattice
site (unwrapped, centre-of-mass drift removed); for the molecule, the largest change of a bonded distance. At the end it
prints a verdict: stable when the mean temperature of the second half is within 10 % of the
target, no two atoms came closer than 0.6 × the sum of their covalent radii, no crystal atom
left its site by more than 1.5 Å, and no molecular bond stretched by more than 50 %.
The record is written to ``examples/out/stability-NAME.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms, units
from ase.build import bulk, molecule
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

from ase_equi import EquivariantCalculator

SYSTEMS = {
    # name: (structure, timestep in fs, friction in 1/fs)
    "metals": (lambda: _alloy(), 5.0, 0.01),
    "molecules-pbe": (lambda: molecule("CH3CH2OH"), 1.0, 0.01),
    "silicon-xtb": (lambda: bulk("Si", "diamond", a=5.63, cubic=True).repeat(2), 3.0, 0.01),
}


def _alloy() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.70, cubic=True).repeat(3)
    rng = np.random.default_rng(0)
    atoms.numbers[rng.choice(len(atoms), size=len(atoms) // 4, replace=False)] = 79  # Cu3Au-like
    return atoms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", choices=sorted(SYSTEMS))
    parser.add_argument("--ps", type=float, default=50.0, help="simulated time (ps)")
    parser.add_argument("--temperature", type=float, default=300.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    make, dt_fs, friction = SYSTEMS[args.model]
    atoms = make()
    atoms.calc = EquivariantCalculator(args.model, dtype="float32")
    rng = np.random.default_rng(1)
    MaxwellBoltzmannDistribution(atoms, temperature_K=args.temperature, rng=rng)
    Stationary(atoms)
    dyn = Langevin(atoms, dt_fs * units.fs, temperature_K=args.temperature,
                   friction=friction / units.fs, fixcm=False, rng=rng)
    periodic = bool(atoms.pbc.all())
    start = atoms.positions.copy()
    from ase.data import covalent_radii

    radii = covalent_radii[atoms.numbers]
    closest = 0.6 * (radii[:, None] + radii[None, :])  # Å: closer than this is unphysical
    d0 = atoms.get_all_distances(mic=periodic)
    bonded = (d0 < 1.6) & ~np.eye(len(atoms), dtype=bool)
    steps = int(round(args.ps * 1000 / dt_fs))
    record = []
    unwrapped = atoms.positions.copy()
    previous = atoms.get_scaled_positions(wrap=False).copy()
    started = time.perf_counter()

    def observe() -> None:
        nonlocal unwrapped, previous
        d = atoms.get_all_distances(mic=periodic)
        np.fill_diagonal(d, np.inf)
        row = {
            "step": dyn.nsteps,
            "time_ps": dyn.nsteps * dt_fs / 1000,
            "T_K": float(atoms.get_temperature()),
            "min_distance_A": float(d.min()),
            "too_close": bool((d < closest).any()),
        }
        if periodic:
            scaled = atoms.get_scaled_positions(wrap=False)
            jump = scaled - previous
            jump -= np.round(jump)
            unwrapped = unwrapped + jump @ atoms.cell.array
            previous = scaled
            moved = unwrapped - start
            moved -= moved.mean(axis=0)  # Langevin kicks make the centre of mass drift
            row["max_displacement_A"] = float(np.linalg.norm(moved, axis=1).max())
        else:
            stretch = np.where(bonded, d / np.where(bonded, d0, 1.0), 1.0)
            row["max_bond_stretch"] = float(np.nanmax(stretch))
        record.append(row)

    observe()
    for _ in range(steps // 100):
        dyn.run(100)
        observe()
        done = dyn.nsteps / steps
        rate = dyn.nsteps / (time.perf_counter() - started)
        print(f"\r{args.model}: {dyn.nsteps}/{steps} steps ({done:4.0%}), "
              f"T = {record[-1]['T_K']:6.1f} K, {rate:5.0f} steps/s", end="", flush=True)
    print()
    second = [r for r in record if r["time_ps"] >= args.ps / 2]
    t_mean = float(np.mean([r["T_K"] for r in second]))
    t_std = float(np.std([r["T_K"] for r in second]))
    verdict = {
        "model": args.model,
        "atoms": len(atoms),
        "formula": atoms.get_chemical_formula(),
        "simulated_ps": dyn.nsteps * dt_fs / 1000,
        "timestep_fs": dt_fs,
        "steps": dyn.nsteps,
        "wall_s": round(time.perf_counter() - started, 1),
        "T_target_K": args.temperature,
        "T_mean_second_half_K": round(t_mean, 1),
        "T_std_second_half_K": round(t_std, 1),
        "min_distance_A": round(min(r["min_distance_A"] for r in record), 3),
        "any_too_close": any(r["too_close"] for r in record),
    }
    stable = abs(t_mean - args.temperature) < 0.1 * args.temperature
    stable &= not verdict["any_too_close"]
    if periodic:
        verdict["max_displacement_A"] = round(max(r["max_displacement_A"] for r in record), 3)
        stable &= verdict["max_displacement_A"] < 1.5
    else:
        verdict["max_bond_stretch"] = round(max(r["max_bond_stretch"] for r in record), 3)
        stable &= verdict["max_bond_stretch"] < 1.5
    verdict["stable"] = bool(stable)
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / f"stability-{args.model}.json").write_text(
        json.dumps({"verdict": verdict, "record": record}, indent=1))
    print(json.dumps(verdict, indent=2))


if __name__ == "__main__":
    main()
