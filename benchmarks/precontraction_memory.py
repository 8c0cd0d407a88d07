"""Peak memory and first-call time of an 89-element medium model on benzene (float32, CPU).

The product basis precontracts its weights with the coupling basis; this measures what the
first force call of a 12-atom, two-element molecule costs with a model that knows 89 elements
(MACE-MP-0 medium's shape: 128 channels, max_L 1, max_ell 3, correlation 3, random weights).

    OMP_NUM_THREADS=1 python benchmarks/precontraction_memory.py

To compare with another version of the package, run the same file with that version first on
``PYTHONPATH`` (e.g. a ``git worktree`` of an older commit).
"""

from __future__ import annotations

import platform
import resource
import time

import torch
from ase.build import molecule

import ase_equi
from ase_equi import EquivariantCalculator, MaceModel, ModelConfig
from ase_equi.io.model_file import LoadedModel


def medium_config() -> ModelConfig:
    """MACE-MP-0 medium's shape with 89 elements (random weights are enough for time and
    memory): 128 channels, max_L 1, max_ell 3, correlation 3, r_max 6 Å, radial MLP 64-64-64."""
    return ModelConfig(
        elements=tuple(range(1, 90)),
        reference_energies=(0.0,) * 89,
        r_max=6.0,
        channels=128,
        max_L=1,
        max_ell=3,
        correlation=3,
        radial_mlp=(64, 64, 64),
        num_interactions=2,
        avg_num_neighbors=20.0,
    )


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    torch.set_num_threads(1)
    config = medium_config()
    torch.manual_seed(0)
    model = MaceModel(config).to(torch.float32)
    for p in model.parameters():
        p.requires_grad_(False)
    built = peak_mib()
    atoms = molecule("C6H6")
    atoms.calc = EquivariantCalculator(LoadedModel(model, config), dtype="float32")
    start = time.perf_counter()
    atoms.get_forces()
    first = time.perf_counter() - start
    atoms.rattle(0.01, seed=1)
    start = time.perf_counter()
    atoms.get_forces()
    second = time.perf_counter() - start
    print(f"package: {ase_equi.__file__}")
    print(f"machine: {platform.machine()}, torch {torch.__version__}, 1 thread, float32")
    print(
        f"peak RSS after building the model {built:.0f} MiB, after benzene forces "
        f"{peak_mib():.0f} MiB; first force call {first:.2f} s, second {second * 1e3:.0f} ms"
    )


if __name__ == "__main__":
    main()
