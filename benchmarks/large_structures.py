"""Time, page faults and peak memory of ase_equi MD steps on fcc Cu, chunked or not.

Each (size, chunk_mib) row runs in a fresh process (peak RSS belongs to that row): the
calculator loads a MACE ``.model`` file (default: the medium model that ``mace_comparison.py``
builds in ``benchmarks/.cache``), moves every atom by a fresh N(0, 0.02 Å) displacement
before each call, and times ``get_forces`` and counts the process's minor page faults during
it. The first call is a warm-up. ``--retain off`` builds the calculator with
``retain_memory=False`` (freed memory handed back to the OS, as glibc does by default). There
is no mace-torch column: at these sizes it does not fit in this machine's memory (about
6.5 MB per atom).

    python benchmarks/large_structures.py --sizes 8,12,16 --chunk-mib default,128,none
    python benchmarks/large_structures.py --sizes 6 --retain on,off
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def worker(request: dict) -> None:
    import numpy as np
    import torch

    sys.path.insert(0, str(HERE))
    import _bench_common as common

    from ase_equi import EquivariantCalculator

    torch.set_num_threads(request["threads"])
    chunk = request["chunk_mib"]
    kwargs = {} if chunk == "default" else {"chunk_mib": None if chunk == "none" else float(chunk)}
    calc = EquivariantCalculator(
        request["model"], dtype=request["dtype"], retain_memory=request["retain"] == "on", **kwargs
    )
    atoms = common.fcc_copper(request["n_cells"])
    atoms.calc = calc
    rng = np.random.default_rng(0)
    reference = atoms.get_positions()
    times, faults = [], []
    for _ in range(request["repeats"] + 1):
        atoms.set_positions(reference + common.DISPLACEMENT * rng.standard_normal(reference.shape))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        atoms.get_forces()
        times.append(time.perf_counter() - start)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    common.emit(
        {
            "n_atoms": len(atoms),
            "step_times_s": times[1:],
            "median_s": float(np.median(times[1:])),
            "median_faults": float(np.median(faults[1:])),
            "peak_rss_mib": common.peak_rss_mib(),
            "chunk_mib": calc.max_chunk_bytes / 2**20 if calc.max_chunk_bytes else None,
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="8,12,16", help="n of the n×n×n cubic cell (4n³ atoms)")
    parser.add_argument(
        "--chunk-mib",
        default="default,128,none",
        help="chunk_mib values: numbers, 'default' or 'none'",
    )
    parser.add_argument("--retain", default="on", help="retain_memory values: on, off or on,off")
    parser.add_argument("--model", default=None, help="MACE .model file (default: cached medium)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="timed calls after one warm-up")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    model = args.model or next(iter(sorted((HERE / ".cache").glob("cu_medium_*.model"))), None)
    if model is None:
        raise SystemExit("no model: run mace_comparison.py once (it builds the medium model)")
    print("command:", " ".join(["python", *sys.argv]))
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} cores; threads {args.threads}; "
        f"dtype {args.dtype}; model {Path(model).name}; load average {os.getloadavg()[0]:.2f}"
    )
    print(
        "| atoms | chunk_mib | retain_memory | step median s (runs) | minor page faults per "
        "step | peak RSS MiB |"
    )
    print("|---:|---|---|---|---:|---:|")
    combos = [
        (n, chunk, retain)
        for n in [int(x) for x in args.sizes.split(",")]
        for chunk in args.chunk_mib.split(",")
        for retain in args.retain.split(",")
    ]
    for n, chunk, retain in combos:
        request = dict(
            model=str(model),
            dtype=args.dtype,
            threads=args.threads,
            n_cells=n,
            chunk_mib=chunk,
            repeats=args.repeats,
            retain=retain,
        )
        done = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps(request)],
            capture_output=True,
            text=True,
        )
        lines = [x for x in done.stdout.splitlines() if x.startswith("BENCH-RESULT ")]
        if done.returncode or not lines:
            print(f"| {4 * n**3} | {chunk} | {retain} | failed: {done.stderr.strip()[-200:]} | | |")
            continue
        r = json.loads(lines[-1][len("BENCH-RESULT ") :])
        runs = ", ".join(f"{t:.2f}" for t in r["step_times_s"])
        print(
            f"| {r['n_atoms']} | {chunk} ({r['chunk_mib']}) | {retain} "
            f"| {r['median_s']:.2f} ({runs}) | {r['median_faults']:.0f} "
            f"| {r['peak_rss_mib']:.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
