"""50 ps of Langevin MD at 300 K with a zoo model: does it stay physical?

    python examples/zoo_md_stability.py metals          # 108-atom fcc CuAu-alloy cell, 5 fs steps
    python examples/zoo_md_stability.py molecules-pbe   # one ethanol molecule in vacuum, 1 fs
    python examples/zoo_md_stability.py silicon-xtb     # 64-atom diamond Si cell, 3 fs
    python examples/zoo_md_stability.py metals --ps 5   # shorter

Float32 model, 1 torch thread. Every 100 steps it records the temperature, the shortest
interatomic distance and, for the crystals, the largest displacement from the starting lattice
site (unwrapped, centre-of-mass drift removed); for the molecule, the largest change of a bonded
distance (:class:`Observer`). At the end it prints a verdict (:func:`verdict`): stable when the
mean temperature of the second half is within 10 % of the target, no two atoms came closer
than 0.6 × the sum of their covalent radii, no crystal atom left its site by more than 1.5 Å,
and no molecular bond stretched by more than 50 %.
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


class Observer:
    """Called every 100 steps: appends to :attr:`record` the step, time (ps), temperature (K),
    the shortest interatomic distance (Å), whether two atoms came closer than 0.6 × the sum of
    their covalent radii and, for a crystal, the largest displacement from the starting site
    (Å; unwrapped, centre-of-mass drift removed) or, for a molecule, the largest stretch of a
    bond (ratio to its starting length; bonded: closer than 1.6 Å at the start)."""

    def __init__(self, atoms: Atoms, dyn: Langevin, dt_fs: float) -> None:
        from ase.data import covalent_radii

        self.atoms, self.dyn, self.dt_fs = atoms, dyn, dt_fs
        self.periodic = bool(atoms.pbc.all())
        radii = covalent_radii[atoms.numbers]
        self.closest = 0.6 * (radii[:, None] + radii[None, :])  # Å: closer is unphysical
        self.d0 = atoms.get_all_distances(mic=self.periodic)
        self.bonded = (self.d0 < 1.6) & ~np.eye(len(atoms), dtype=bool)
        self.start = atoms.positions.copy()
        self.unwrapped = atoms.positions.copy()
        self.previous = atoms.get_scaled_positions(wrap=False).copy()
        self.record: list[dict] = []

    def __call__(self) -> None:
        atoms = self.atoms
        d = atoms.get_all_distances(mic=self.periodic)
        np.fill_diagonal(d, np.inf)
        row = {
            "step": self.dyn.nsteps,
            "time_ps": self.dyn.nsteps * self.dt_fs / 1000,
            "T_K": float(atoms.get_temperature()),
            "min_distance_A": float(d.min()),
            "too_close": bool((d < self.closest).any()),
        }
        if self.periodic:
            scaled = atoms.get_scaled_positions(wrap=False)
            jump = scaled - self.previous
            jump -= np.round(jump)
            self.unwrapped = self.unwrapped + jump @ atoms.cell.array
            self.previous = scaled
            moved = self.unwrapped - self.start
            moved -= moved.mean(axis=0)  # Langevin kicks make the centre of mass drift
            row["max_displacement_A"] = float(np.linalg.norm(moved, axis=1).max())
        else:
            stretch = np.where(self.bonded, d / np.where(self.bonded, self.d0, 1.0), 1.0)
            row["max_bond_stretch"] = float(np.nanmax(stretch))
        self.record.append(row)


def verdict(record: list[dict], *, target_K: float, total_ps: float, periodic: bool) -> dict:
    """The stability criteria of the module docstring applied to ``record``."""
    second = [r for r in record if r["time_ps"] >= total_ps / 2]
    t_mean = float(np.mean([r["T_K"] for r in second]))
    t_std = float(np.std([r["T_K"] for r in second]))
    result = {
        "T_target_K": target_K,
        "T_mean_second_half_K": round(t_mean, 1),
        "T_std_second_half_K": round(t_std, 1),
        "min_distance_A": round(min(r["min_distance_A"] for r in record), 3),
        "any_too_close": any(r["too_close"] for r in record),
    }
    stable = abs(t_mean - target_K) < 0.1 * target_K
    stable &= not result["any_too_close"]
    if periodic:
        result["max_displacement_A"] = round(max(r["max_displacement_A"] for r in record), 3)
        stable &= result["max_displacement_A"] < 1.5
    else:
        result["max_bond_stretch"] = round(max(r["max_bond_stretch"] for r in record), 3)
        stable &= result["max_bond_stretch"] < 1.5
    result["stable"] = bool(stable)
    return result


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
    dyn = Langevin(
        atoms,
        dt_fs * units.fs,
        temperature_K=args.temperature,
        friction=friction / units.fs,
        fixcm=False,
        rng=rng,
    )
    observe = Observer(atoms, dyn, dt_fs)
    steps = int(round(args.ps * 1000 / dt_fs))
    started = time.perf_counter()
    observe()
    for _ in range(steps // 100):
        dyn.run(100)
        observe()
        done = dyn.nsteps / steps
        rate = dyn.nsteps / (time.perf_counter() - started)
        print(
            f"\r{args.model}: {dyn.nsteps}/{steps} steps ({done:4.0%}), "
            f"T = {observe.record[-1]['T_K']:6.1f} K, {rate:5.0f} steps/s",
            end="",
            flush=True,
        )
    print()
    summary = {
        "model": args.model,
        "atoms": len(atoms),
        "formula": atoms.get_chemical_formula(),
        "simulated_ps": dyn.nsteps * dt_fs / 1000,
        "timestep_fs": dt_fs,
        "steps": dyn.nsteps,
        "wall_s": round(time.perf_counter() - started, 1),
        **verdict(
            observe.record, target_K=args.temperature, total_ps=args.ps, periodic=observe.periodic
        ),
    }
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / f"stability-{args.model}.json").write_text(
        json.dumps({"verdict": summary, "record": observe.record}, indent=1)
    )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
