"""Langevin MD with EquivariantCalculator on a small random-weight model (runs in < 1 min).

    python examples/langevin_md.py [--steps 200] [--model PATH]

Without --model it first writes a small random-weight Cu/Ni model file to
``examples/out/random-cuni.json`` (weights in safetensors, config and card in JSON), loads it
through ``EquivariantCalculator`` like any model file and runs NVT Langevin dynamics of a
32-atom CuNi cell at 300 K in float32, printing a live progress line.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.build import bulk
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from ase_equi import EquivariantCalculator, MaceModel, ModelConfig, save_model


def random_model(path: Path) -> Path:
    config = ModelConfig(
        elements=(28, 29),
        reference_energies=(-0.5, -0.4),
        r_max=4.5,
        channels=16,
        max_L=1,
        max_ell=2,
        correlation=2,
        radial_mlp=(32, 32),
        avg_num_neighbors=30.0,
        scale=0.05,
    )
    torch.manual_seed(0)
    model = MaceModel(config)
    card = {
        "description": "Random weights: a demonstration of the file format, not a potential.",
        "level_of_theory": "none (random weights)",
    }
    return save_model(model, path, card=card)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--model", default=None, help="model file (default: a random one)")
    args = parser.parse_args()

    model_path = args.model or random_model(Path(__file__).parent / "out" / "random-cuni")
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    atoms.numbers[::4] = 28
    atoms.calc = EquivariantCalculator(model_path, dtype="float32")
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dyn = Langevin(
        atoms, 2 * units.fs, temperature_K=300, friction=0.02, rng=np.random.default_rng(1)
    )

    start = time.perf_counter()

    def progress() -> None:
        step = dyn.nsteps
        rate = step / max(time.perf_counter() - start, 1e-9)
        sys.stdout.write(
            f"\rstep {step:5d}/{args.steps}  T = {atoms.get_temperature():6.1f} K  "
            f"E_pot = {atoms.get_potential_energy():10.4f} eV  ({rate:5.1f} steps/s)"
        )
        sys.stdout.flush()

    dyn.attach(progress, interval=1)
    dyn.run(args.steps)
    print(f"\ndone: {args.steps} steps of {len(atoms)} atoms with model {model_path}")


if __name__ == "__main__":
    main()
