"""The cost of one model against another on the same structure: MD-like force calls.

    OMP_NUM_THREADS=1 python benchmarks/model_cost.py MODEL_A MODEL_B --structure FILE \\
        [--index 0] [--rounds 5] [--calls 20] [--out RESULT.json]

``MODEL_A`` and ``MODEL_B`` are zoo names or model files; ``FILE`` any structure file ASE reads
(``--index``: which frame). Both models are loaded once (float32, as the calculator's default),
then timed in alternation, A then B in each of ``--rounds`` rounds, ``--calls`` force calls each
(after 3 warm-up calls), every call on a new geometry (all atoms displaced by N(0, 0.02² Å²)
from the structure, as ``_bench_common.time_md_calls`` does), so a change in the machine's
load hits both. Printed: the command, the machine, each model's median time per call over all
rounds, and the ratio B/A of every round and its median. One thread unless the environment
says otherwise.

For example, the zoo's ``silicon-xtb`` before and after the 64-channel model (the old files from
git)::

    mkdir -p runs/silicon-xtb-32 && for e in json md safetensors; do
        git show 2019b89:models/silicon-xtb.$e > runs/silicon-xtb-32/silicon-xtb.$e; done
    OMP_NUM_THREADS=1 python benchmarks/model_cost.py runs/silicon-xtb-32/silicon-xtb.json \\
        silicon-xtb --structure models/silicon-xtb-test.xyz.xz
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import torch
from ase.io import read

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import summary, time_md_calls

from ase_equi import EquivariantCalculator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_a")
    parser.add_argument("model_b")
    parser.add_argument("--structure", required=True, help="a structure file ASE reads")
    parser.add_argument("--index", type=int, default=0, help="the frame of the file")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20, help="timed force calls per round")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    torch.set_num_threads(threads)
    atoms = read(args.structure, index=args.index)
    atoms.calc = None
    calcs = {m: EquivariantCalculator(m) for m in (args.model_a, args.model_b)}
    times: dict[str, list[float]] = {m: [] for m in calcs}
    ratios = []
    for r in range(args.rounds):
        medians = {}
        for model, calc in calcs.items():
            mine = atoms.copy()
            mine.calc = calc
            timed = time_md_calls(mine, "forces", repeats=args.calls, warmup=3, seed=r,
                                  prepare=None, synchronize=lambda: None)  # fmt: skip
            times[model] += timed["step_times_s"]
            medians[model] = timed["step"]["median_s"]
        ratios.append(medians[args.model_b] / medians[args.model_a])
    result = {
        "command": f"OMP_NUM_THREADS={threads} python benchmarks/model_cost.py "
        + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{threads} thread(s), torch {torch.__version__}",
        "structure": f"{args.structure}[{args.index}]: {len(atoms)} atoms",
        "per_call": {m: summary(t) for m, t in times.items()},
        "ratio_b_over_a_per_round": ratios,
        "ratio_b_over_a_median": float(np.median(ratios)),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
