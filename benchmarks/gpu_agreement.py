"""Same numbers on a GPU as on the CPU: the calculator, ``evaluate``, ``relax`` and ``hessian``.

Float64, zoo models, every quantity computed once with ``device="cpu"`` and once with
``device=device``; prints the largest absolute difference of each and a verdict against a
tolerance (1e-9 eV per atom, 1e-8 eV/Å, 1e-9 eV/Å³, 1e-7 eV/Å²: the order of float64 sums,
which differ between devices). The MD-like sequences move every atom by up to 0.3 Å between
calls and strain the cell, so that the GPU's resident graph is rebuilt and its cell updated
(``ase_equi.graph.resident``), as in long NPT runs.

    python benchmarks/gpu_agreement.py [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule

from ase_equi import EquivariantCalculator, evaluate, relax
from ase_equi.vibrations import hessian

TOLERANCE = {"energy": 1e-9, "forces": 1e-8, "stress": 1e-9, "hessian": 1e-7}


def sequence(atoms: Atoms, model: str, device: str, calls: int = 8) -> list[dict]:
    """Energy, forces (and stress of a cell) along a seeded sequence of large moves."""
    calc = EquivariantCalculator(model, device=device)
    work = atoms.copy()
    work.calc = calc
    rng = np.random.default_rng(1)
    out = []
    for k in range(calls):
        work.positions += 0.1 * rng.standard_normal(work.positions.shape)
        if work.cell.rank == 3 and k % 3 == 2:
            work.set_cell(work.cell.array * (1.0 + 0.01 * rng.standard_normal()), scale_atoms=True)
        r = {"energy": work.get_potential_energy() / len(work), "forces": work.get_forces()}
        if work.cell.rank == 3:
            r["stress"] = work.get_stress()
        out.append(r)
    return out


def worst(a: list[dict], b: list[dict]) -> dict[str, float]:
    keys = {k for r in a for k in r}
    return {
        k: max(float(np.max(np.abs(x[k] - y[k]))) for x, y in zip(a, b, strict=True) if k in x)
        for k in keys
    }


def structures() -> dict[str, tuple[Atoms, str]]:
    cu = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)  # 108 atoms
    alloy = bulk("Ni", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    alloy.symbols[::3] = "Al"
    slab = fcc111("Pt", size=(3, 3, 4), vacuum=6.0)
    si = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)
    return {
        "Cu108": (cu, "metals"),
        "NiAl32": (alloy, "metals"),
        "Pt-slab": (slab, "metals"),
        "Si64": (si, "silicon-xtb"),
        "ethanol": (molecule("CH3CH2OH"), "molecules-pbe"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the differences here as JSON")
    parser.add_argument("--device", default="cuda", help="the device compared with the CPU")
    args = parser.parse_args()
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to compare")
        return 1
    print("command: python benchmarks/gpu_agreement.py", " ".join(sys.argv[1:]))
    if device == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    report: dict[str, dict[str, float]] = {}
    for name, (atoms, model) in structures().items():
        start = time.perf_counter()
        key = f"calculator {name}"
        report[key] = worst(sequence(atoms, model, "cpu"), sequence(atoms, model, device))
        print(f"{key}: {report[key]} ({time.perf_counter() - start:.1f} s)", flush=True)
    mixed = [atoms for atoms, model in structures().values() if model == "metals"]
    for atoms in mixed:
        atoms.rattle(0.05, seed=2)
    cpu = evaluate(mixed, "metals", verbose=False)
    gpu = evaluate(mixed, "metals", device=device, verbose=False)
    report["evaluate metals x3"] = worst(
        [dict(a.calc.results) for a in cpu], [dict(a.calc.results) for a in gpu]
    )
    print(f"evaluate: {report['evaluate metals x3']}")
    cpu_r = relax(mixed[:2], "metals", fmax=0.05, steps=200, verbose=False)
    gpu_r = relax(mixed[:2], "metals", fmax=0.05, steps=200, device=device, verbose=False)
    report["relax metals x2"] = {
        "energy": max(
            abs(a.get_potential_energy() - b.get_potential_energy()) / len(a)
            for a, b in zip(cpu_r.structures, gpu_r.structures, strict=True)
        ),
        "same_steps": float(np.all(cpu_r.steps == gpu_r.steps)),
    }
    print(f"relax: {report['relax metals x2']}")
    ethanol = molecule("CH3CH2OH")
    ethanol.rattle(0.03, seed=0)
    report["hessian ethanol"] = {
        "hessian": float(
            np.abs(
                hessian(ethanol, "molecules-pbe") - hessian(ethanol, "molecules-pbe", device=device)
            ).max()
        )
    }
    print(f"hessian: {report['hessian ethanol']}")
    failures = [
        f"{case} {key} {value:.1e} > {TOLERANCE[key]:.0e}"
        for case, values in report.items()
        for key, value in values.items()
        if key in TOLERANCE and value > TOLERANCE[key]
    ]
    print("verdict:", "all within tolerance" if not failures else "; ".join(failures))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"report": report, "failures": failures}, fh, indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
