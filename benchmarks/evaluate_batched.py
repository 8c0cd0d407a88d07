"""Batched ``evaluate`` against the ASE loop (one calculator call per structure), side by side.

Structures: ``--count`` seeded structures of 8-64 atoms of the ``metals`` model's elements
(Al, Ni, Cu, Pd, Ag, Pt, Au, randomly mixed): a third fcc bulk supercells (periodic), a third
fcc(111) slabs (periodic in-plane, 5 Å vacuum each side), a third clusters cut from bulk (no
periodicity, no cell); strained ±2 % and rattled 0.05 Å.

Reference: ``EquivariantCalculator`` on each structure in turn, asking energy, forces and (cells
of rank 3) stress, as ``evaluate`` did before it was batched. Batched: ``evaluate(structures,
calc, batch_size=...)`` for each ``--batch-sizes`` entry, on the calculator's own model (so
model loading is outside both timings); with ``--one-padding``, also the same batches with
every receiver padded to the batch's largest in-degree (``batched_results(...,
degree_buckets=False)``, what ``evaluate`` did before degree buckets). Every batched run is
checked against the reference: largest |ΔE| (eV), |ΔF| (eV/Å), |Δσ| (eV/Å³).

Each method runs ``--repeats`` times, the methods alternating (ASE loop, then each batched
method, then again), and the median is reported, as wall time and as the process's CPU time
(on a shared machine the CPU time of a one-thread process is less affected by other jobs).

``--profile N``: where the time goes, on the first N structures: the stages of the ASE loop
and of the batched call (cProfile: neighbour lists and graphs, padded layout, model forward,
backward, the rest: Python, splitting results, ``Atoms`` copies) and torch's per-operation table
(self CPU time). ``--overhead N``: the ASE loop's CPU time per structure on the first N
structures fitted as a per-call part plus a per-atom part (what batching can remove and what
it cannot). ``--skip-timing`` runs only these.

``--device cuda``: the same comparison with the model on a GPU (both sides: the calculator and
``evaluate`` share it). ``--largest-batch`` then also evaluates ``K`` rattled copies of a 64-atom
Cu cell in one model call (``batch_size=K``), doubling ``K`` from 256 until the GPU runs out of
memory (or a call takes over a minute), and reports atoms per second and the peak GPU memory of
each ``K``.

Usage (the numbers in ``benchmarks/results/`` were made with)::

    OMP_NUM_THREADS=1 python benchmarks/evaluate_batched.py --count 1000 --batch-sizes auto \
        --one-padding --repeats 2 --profile 150
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import resource
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk, fcc111

from ase_equi import EquivariantCalculator, evaluate
from ase_equi.batched import batched_results, iter_batches

ELEMENTS = ("Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au")
BULK_REPEATS = [
    (1, 1, 2),
    (1, 1, 3),
    (1, 2, 2),
    (1, 2, 3),
    (2, 2, 2),
    (1, 3, 3),
    (2, 2, 3),
    (2, 2, 4),
]
SLAB_SIZES = [
    (2, 2, 2),
    (2, 2, 3),
    (2, 2, 4),
    (3, 3, 2),
    (2, 2, 6),
    (3, 3, 3),
    (4, 4, 2),
    (4, 4, 4),
]


def _mix(atoms: Atoms, rng: np.random.Generator) -> Atoms:
    """Random elements (about half of the atoms changed), ±2 % strain, 0.05 Å rattle."""
    numbers = atoms.numbers.copy()
    change = rng.random(len(atoms)) < 0.5
    numbers[change] = [Atoms(s).numbers[0] for s in rng.choice(ELEMENTS, change.sum())]
    atoms.numbers = numbers
    if atoms.cell.rank == 3:
        strain = np.eye(3) + 0.02 * rng.uniform(-1, 1, (3, 3))
        atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
    atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
    return atoms


def structures(count: int, seed: int = 0) -> list[Atoms]:
    """``count`` mixed structures (kinds cycle bulk, slab, cluster; sizes 8-64 atoms)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(count):
        element = str(rng.choice(ELEMENTS))
        a = 3.9 + 0.15 * rng.uniform(-1, 1)
        kind = k % 3
        if kind == 0:
            repeat = BULK_REPEATS[rng.integers(len(BULK_REPEATS))]
            atoms = bulk(element, "fcc", a=a, cubic=True).repeat(repeat)
        elif kind == 1:
            size = SLAB_SIZES[rng.integers(len(SLAB_SIZES))]
            atoms = fcc111(element, size=size, a=a, vacuum=5.0)
        else:
            block = bulk(element, "fcc", a=a, cubic=True).repeat(3)
            centre = block.positions.mean(0) + rng.uniform(-0.5, 0.5, 3)
            n = int(rng.integers(8, 65))
            nearest = np.argsort(np.linalg.norm(block.positions - centre, axis=1))[:n]
            atoms = Atoms(block.numbers[nearest], block.positions[nearest])
        out.append(_mix(atoms, rng))
    return out


def ase_loop(images: list[Atoms], calc: EquivariantCalculator) -> list[dict]:
    """The reference: one calculator call per structure (energy, forces, stress if defined)."""
    results = []
    for atoms in images:
        atoms = atoms.copy()
        atoms.calc = calc
        r = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        if atoms.cell.rank == 3:
            r["stress"] = atoms.get_stress()
        results.append(r)
    return results


def one_padding(images: list[Atoms], calc: EquivariantCalculator) -> list[dict]:
    """``evaluate``'s batches (``"auto"``) with every receiver padded to the batch's largest
    in-degree: the batched path before degree buckets (results as dicts, no ``Atoms`` copies)."""
    loaded, results = calc.loaded, []
    for _, graphs in iter_batches(images, loaded, "auto"):
        results += batched_results(graphs, loaded, stress=True, degree_buckets=False)
    return results


def differences(reference: list[dict], predicted: list[Atoms] | list[dict]) -> dict[str, float]:
    """Largest absolute differences between the two: energy, forces, stress."""
    worst = {"energy_eV": 0.0, "forces_eV_A": 0.0, "stress_eV_A3": 0.0}
    for ref, pred in zip(reference, predicted, strict=True):
        res = pred if isinstance(pred, dict) else pred.calc.results
        worst["energy_eV"] = max(worst["energy_eV"], abs(ref["energy"] - res["energy"]))
        worst["forces_eV_A"] = max(
            worst["forces_eV_A"], np.abs(ref["forces"] - res["forces"]).max()
        )
        if "stress" in ref:
            worst["stress_eV_A3"] = max(
                worst["stress_eV_A3"], np.abs(ref["stress"] - res["stress"]).max()
            )
    return worst


def _stage_table(profile: cProfile.Profile, total: float) -> list[tuple[str, float]]:
    """Seconds per stage from a cProfile run (``total``: its wall seconds): neighbour lists
    and graph tensors (the calculator's graph source or ``atoms_to_graph``), the padded
    layout and element groups (``graph/layout.py``, wherever built), the model's forward, the
    backward pass, and the rest; the layout's time is taken out of the stage that built it."""
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]

    def where(filename: str) -> str:
        return filename.replace("\\", "/").rsplit("/", 2)[-2:][-1]

    cumulative: dict[str, float] = {"graphs": 0.0, "forward": 0.0, "backward": 0.0}
    layout_by_caller: dict[str, float] = {}
    for (filename, _, name), (_, _, _, ct, callers) in stats.items():
        path = filename.replace("\\", "/")
        if path.endswith("graph/build.py") and name in ("update", "atoms_to_graph"):
            cumulative["graphs"] += ct
        elif path.endswith("model/mace.py") and name == "forward":
            cumulative["forward"] += ct
        elif name.startswith("<method 'run_backward'"):
            cumulative["backward"] += ct
        elif path.endswith("graph/layout.py") and name == "__init__":
            for (caller_file, _, _), caller_stats in callers.items():
                if not caller_file.endswith("graph/layout.py"):
                    key = where(caller_file)
                    layout_by_caller[key] = layout_by_caller.get(key, 0.0) + caller_stats[3]
    layout = sum(layout_by_caller.values())
    rows = [
        (
            "neighbour lists + graph tensors",
            cumulative["graphs"] - layout_by_caller.get("build.py", 0),
        ),
        ("padded layout + element groups", layout),
        ("model forward", cumulative["forward"] - layout_by_caller.get("mace.py", 0)),
        ("backward (forces + stress)", cumulative["backward"]),
    ]
    rows.append(("rest (Python, ASE, splitting, copies)", total - sum(sec for _, sec in rows)))
    return rows


def profile(images: list[Atoms], calc: EquivariantCalculator, rows: int = 12) -> dict:
    """Stage tables (cProfile) and torch's per-operation tables of the ASE loop and of
    ``evaluate`` on ``images``, printed; returned as a dict of stage seconds."""
    methods: dict[str, Callable[[], object]] = {
        "ASE loop": lambda: ase_loop(images, calc),
        "evaluate(auto), one padding": lambda: one_padding(images, calc),
        "evaluate(auto)": lambda: evaluate(images, calc, verbose=False),
    }
    n_atoms = sum(map(len, images))
    out = {}
    for name, method in methods.items():
        prof = cProfile.Profile()
        start = time.perf_counter()
        prof.runcall(method)
        total = time.perf_counter() - start
        stages = _stage_table(prof, total)
        out[name] = dict(stages, total=total)
        print(f"\n{name}: {total:.2f} s under cProfile, {len(images)} structures, {n_atoms} atoms")
        for stage, sec in stages:
            print(f"  {stage:40s} {sec:7.2f} s  {100 * sec / total:5.1f} %")
    for name, method in methods.items():
        with torch.profiler.profile() as prof_t:
            method()
        print(f"\n{name}: torch operations (self CPU time, under the profiler)")
        print(prof_t.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))
    return out


def per_call_overhead(images: list[Atoms], calc: EquivariantCalculator) -> dict[str, float]:
    """The ASE loop's CPU time per structure fitted as ``t = overhead + per_atom × n_atoms``
    (least squares over ``images``), printed: what a batch can remove (the overhead) and what
    it cannot (the per-atom work)."""
    n_p, t_p = [], []
    for atoms in images:
        _, _, cpu = timed(lambda a=atoms: ase_loop([a], calc))
        n_p.append(len(atoms))
        t_p.append(cpu)
    design = np.stack([np.ones(len(n_p)), np.array(n_p, dtype=float)], axis=1)
    (overhead, per_atom), *_ = np.linalg.lstsq(design, np.array(t_p), rcond=None)
    mean_n = float(np.mean(n_p))
    share = overhead / (overhead + per_atom * mean_n)
    print(
        f"\nASE loop, one call: {1e3 * overhead:.1f} ms per call + {1e3 * per_atom:.3f} ms per "
        f"atom (CPU, least squares over {len(n_p)} structures); at the mean {mean_n:.1f} atoms "
        f"the per-call part is {100 * share:.0f} % of a call, so a batch that kept the per-atom "
        f"cost could be at most {1 / (1 - share):.2f}x faster"
    )
    return {"overhead_s": float(overhead), "per_atom_s": float(per_atom), "mean_atoms": mean_n}


def timed(method: Callable[[], object]) -> tuple[object, float, float]:
    """``(result, wall seconds, CPU seconds of this process)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = method()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def largest_batch(calc: EquivariantCalculator, limit_s: float = 60.0) -> list[dict]:
    """One ``evaluate`` call of ``K`` rattled copies of a 64-atom Cu cell (energy, forces,
    stress), ``K`` = 256, 512, ... until CUDA runs out of memory or a call takes ``limit_s``."""
    base = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 4))
    rng = np.random.default_rng(0)
    rows: list[dict] = []
    count = 256
    while True:
        images = []
        for _ in range(count):
            atoms = base.copy()
            atoms.positions += 0.05 * rng.standard_normal(atoms.positions.shape)
            images.append(atoms)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            start = time.perf_counter()
            evaluate(images, calc, batch_size=count, verbose=False)
            wall = time.perf_counter() - start
        except torch.cuda.OutOfMemoryError as error:
            print(f"largest batch: {count} x 64 atoms: out of GPU memory ({error})"[:300])
            rows.append({"structures": count, "atoms": 64 * count, "out_of_memory": True})
            break
        peak = torch.cuda.max_memory_allocated() / 2**20
        rows.append(
            {"structures": count, "atoms": 64 * count, "seconds": wall, "peak_gpu_mib": peak}
        )
        print(
            f"largest batch: {count} x 64 atoms in one call: {wall:.2f} s, "
            f"{64 * count / wall:.0f} atoms/s, peak GPU memory {peak:.0f} MiB",
            flush=True,
        )
        if wall > limit_s:
            break
        count *= 2
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--batch-sizes", default="auto,1,8,32,128")
    parser.add_argument("--json", help="write the results here as JSON")
    parser.add_argument("--one-padding", action="store_true", help="also the batches before")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each method (median)")
    parser.add_argument("--profile", type=int, default=0, help="profile the first N structures")
    parser.add_argument(
        "--overhead", type=int, default=0, help="fit per-call + per-atom time on N structures"
    )
    parser.add_argument("--skip-timing", action="store_true", help="only --profile/--overhead")
    parser.add_argument("--device", default="cpu", help="torch device of the model (cuda)")
    parser.add_argument(
        "--largest-batch", action="store_true", help="on cuda: the largest batch that fits"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = structures(args.count)
    n_atoms = sum(len(a) for a in images)
    calc = EquivariantCalculator("metals", dtype=args.dtype, device=args.device)
    print("command:", " ".join(["python", *sys.argv]))
    machine = platform.processor() or platform.machine()
    if args.device.startswith("cuda"):
        machine += f", GPU {torch.cuda.get_device_name(0)}"
    print(f"machine: {machine}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"threads: {torch.get_num_threads()}, dtype {args.dtype}, model metals")
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(
        f"structures: {args.count}, {n_atoms} atoms ({min(map(len, images))}-"
        f"{max(map(len, images))} per structure); kinds cycle bulk/slab/cluster"
    )
    ase_loop(images[:3], calc)  # warm-up
    evaluate(images[:20], calc, verbose=False)
    methods: dict[str, Callable[[], object]] = {"ASE loop": lambda: ase_loop(images, calc)}
    for size in args.batch_sizes.split(","):
        batch_size: int | str = size if size == "auto" else int(size)
        methods[f"evaluate(batch_size={size})"] = lambda b=batch_size: evaluate(
            images, calc, batch_size=b, verbose=False
        )
    if args.one_padding:
        methods["evaluate(auto), one padding per batch (before)"] = lambda: one_padding(
            images, calc
        )
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
    reference: list[dict] = []
    worst: dict[str, dict[str, float]] = {}
    for repeat in range(0 if args.skip_timing else args.repeats):
        for name, method in methods.items():
            result, wall, cpu = timed(method)
            times[name].append((wall, cpu))
            if name == "ASE loop":
                reference = result  # type: ignore[assignment]
            else:
                worst[name] = differences(reference, result)  # type: ignore[arg-type]
            print(f"run {repeat + 1}: {name}: {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True)
    print(f"load average at end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    medians = {
        name: tuple(statistics.median(t[i] for t in runs) for i in (0, 1))
        for name, runs in times.items()
        if runs
    }
    rows = []
    for name, (wall, cpu) in medians.items() if times["ASE loop"] else ():
        ase_wall, ase_cpu = medians["ASE loop"]
        row = {
            "method": name,
            "seconds": wall,
            "cpu_seconds": cpu,
            "speedup": ase_wall / wall,
            "cpu_speedup": ase_cpu / cpu,
            "runs": times[name],
            **worst.get(name, {}),
        }
        rows.append(row)
        text = (
            f"{name}: {wall:.2f} s wall ({n_atoms / wall:.0f} atoms/s), {cpu:.2f} s CPU; "
            f"{ase_wall / wall:.2f}x the ASE loop (wall), {ase_cpu / cpu:.2f}x (CPU)"
        )
        if name in worst:
            w = worst[name]
            text += (
                f"; max |dE| {w['energy_eV']:.1e} eV, |dF| {w['forces_eV_A']:.1e} eV/A, "
                f"|ds| {w['stress_eV_A3']:.1e} eV/A^3"
            )
        print(text)
    stages = profile(images[: args.profile], calc) if args.profile else {}
    overhead = per_call_overhead(images[: args.overhead], calc) if args.overhead else {}
    largest = largest_batch(calc) if args.largest_batch else []
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the process: {peak:.0f} MiB")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "command": " ".join(["python", *sys.argv]),
                    "machine": machine,
                    "device": args.device,
                    "dtype": args.dtype,
                    "count": args.count,
                    "atoms": n_atoms,
                    "rows": rows,
                    "profile_stages": stages,
                    "ase_loop_per_call_fit": overhead,
                    "peak_rss_mib": peak,
                    "largest_batch": largest,
                },
                fh,
                indent=1,
            )


if __name__ == "__main__":
    main()
