"""How fast can a batched call be on this CPU? The matrix products' own floor, against 5×.

The question behind issue 16's CPU goal (``evaluate`` ≥ 5× the ASE loop): is the rest of the
batched call overhead that better code could remove, or is its arithmetic already the limit?
This script answers it with the model's own operations, on ``--count`` of
``evaluate_batched.py``'s structures, all in one process, one thread, float64:

1. **ASE loop**: one ``EquivariantCalculator`` call per structure (energy, forces, stress),
   CPU time, best of ``--repeats``;
2. **batched**: ``batched_results`` of all of them in one call, the same properties, CPU time,
   best of ``--repeats``;
3. **the batched call's matrix products**: every ``mm`` / ``bmm`` / ``addmm`` / ``baddbmm`` the
   call runs (forward and backward, recorded with a dispatch mode), each then run again on its
   own with fresh operands of the same shapes and dtype, best of 3: the sum is the time these
   products need on this CPU when nothing else runs beside them, a floor under any
   implementation that computes the same products;
4. the **budget** of the goal: the ASE loop's time / 5.

The floor leaves out everything that is not a matrix product (elementwise products and sums
of the tensor product, gathers and scatters, SiLU, spherical harmonics, neighbour lists), so a
floor above the budget means that 5× needs fewer products (another model), not a better
implementation of this one. Counted FLOPs (``torch.utils.flop_counter``) are printed as well.

Usage (``benchmarks/results/2026-12-01-evaluate-floor.md`` was made with)::

    OMP_NUM_THREADS=1 python benchmarks/evaluate_floor.py --count 120 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate_batched import ase_loop, structures, timed

from ase_equi import EquivariantCalculator
from ase_equi.batched import batched_results

PRODUCTS = {"mm", "bmm", "addmm", "baddbmm"}


class RecordProducts(TorchDispatchMode):
    """Counts every matrix product by (name, operand shapes)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[tuple[str, tuple[tuple[int, ...], ...]]] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in PRODUCTS:
            shapes = tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))
            self.calls[(name, shapes)] += 1
        return func(*args, **(kwargs or {}))


def best_cpu(function: Any, repeats: int) -> float:
    """The least CPU time of ``repeats`` calls (:func:`evaluate_batched.timed`)."""
    return min(timed(function)[2] for _ in range(repeats))


def product_alone(name: str, shapes: tuple[tuple[int, ...], ...]) -> float:
    """CPU seconds of one product with fresh contiguous float64 operands (best of 3)."""
    operands = [torch.randn(shape, dtype=torch.float64) for shape in shapes]
    function = getattr(torch, name)
    function(*operands)
    return best_cpu(lambda: function(*operands), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    calc = EquivariantCalculator("metals", dtype="float64")
    images = structures(1000)[: args.count]
    atoms = sum(len(a) for a in images)

    def batched() -> object:
        return batched_results(images, calc.loaded, forces=True, stress=True)

    ase_loop(images[:5], calc)
    batched()
    loop_s = best_cpu(lambda: ase_loop(images, calc), args.repeats)
    batched_s = best_cpu(batched, args.repeats)
    recorder = RecordProducts()
    with recorder:
        batched()
    floor_s = sum(n * product_alone(name, shapes) for (name, shapes), n in recorder.calls.items())
    with FlopCounterMode(display=False) as counter:
        batched()
    flops = counter.get_total_flops()
    budget_s = loop_s / 5
    figures = {
        "command": "python benchmarks/evaluate_floor.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, 1 thread",
        "torch": torch.__version__,
        "structures": args.count,
        "atoms": atoms,
        "ase_loop_cpu_s": loop_s,
        "batched_cpu_s": batched_s,
        "speedup": loop_s / batched_s,
        "budget_5x_s": budget_s,
        "matrix_products": sum(recorder.calls.values()),
        "matrix_product_floor_s": floor_s,
        "floor_over_budget": floor_s / budget_s,
        "counted_gflop": flops / 1e9,
        "matrix_gflop_per_s_in_call": flops / batched_s / 1e9,
        "matrix_gflop_per_s_alone": flops / floor_s / 1e9,
    }
    for key, value in figures.items():
        print(f"{key:28s} {value:.4g}" if isinstance(value, float) else f"{key:28s} {value}")
    print(
        f"ms per atom: ASE loop {1e3 * loop_s / atoms:.3f}, batched {1e3 * batched_s / atoms:.3f}, "
        f"5x budget {1e3 * budget_s / atoms:.3f}, matrix products alone {1e3 * floor_s / atoms:.3f}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
