"""Time ase_equi against mace-torch on identical MACE weights, one MD step at a time.

Both codes load the same random-weight MACE ``.model`` file (MACE-MP-0 ``small`` = 128x0e or
``medium`` = 128x0e+128x1o, Cu only; or ``mpa0_medium``, MACE-MPA-0 medium's architecture:
density-normalised blocks, ZBL, Agnesi, 10 Bessel functions, 89 elements, 9,063,204 parameters)
and evaluate fcc Cu supercells whose atoms are all moved by
a fresh random displacement before every call, as in molecular dynamics. Every row (model,
dtype, size, mode, code) runs in a fresh subprocess, so start-up work and memory peaks belong
to that row alone: ase_equi with this python, mace-torch with the python of ``--mace-venv``.

Modes: ``forces`` (``get_forces``: NVE/NVT), ``stress`` (``get_forces`` + ``get_stress``: NPT),
``energy`` (``get_potential_energy``: Monte Carlo). What is timed, and the CPU target this is
meant to check, are in ``benchmarks/README.md``. Run with::

    python benchmarks/mace_comparison.py            # full default run (see README for its cost)
    python benchmarks/mace_comparison.py --sizes 2 --repeats 2 --models small \\
        --dtypes float32 --modes forces,energy      # a one-minute smoke test
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _bench_common as common
from ase.neighborlist import neighbor_list

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MACE_WORKER = HERE / "_mace_worker.py"
ASE_EQUI_WORKER = HERE / "_ase_equi_worker.py"
SIDES = ("ase_equi", "mace", "mace_retain", "mace_cueq")  # the last two only when asked
EXTRA_SIDES = {
    "mace_retain": "mace, memory retained",
    "mace_cueq": "mace + cuEquivariance",
}
# what ase_equi.allocator.retain_freed_memory sets, for a process that does not call it
RETAIN_ENV = {"MALLOC_MMAP_THRESHOLD_": "2147483647", "MALLOC_TRIM_THRESHOLD_": "2147483647"}
TARGET_RATIO = 0.6  # ase_equi / mace, medium float32 forces, 64–864 atoms, 2 CPU threads

# The MACE-MP-0 recipe for one element (Cu); only the hidden irreps differ between models.
MODELS = {
    "small": "128x0e",
    "medium": "128x0e+128x1o",
    "mpa0_medium": "128x0e+128x1o",
    "mp0_medium_89": "128x0e+128x1o",
}
#: MACE-MPA-0 medium's options on top of SPEC: the 89 elements of the MP / MPA-0 models
#: (H–Bi, Ac–Pu; the benchmark's Cu is one of them), density blocks, ZBL, Agnesi
FOUNDATION_ELEMENTS = list(range(1, 84)) + list(range(89, 95))
MODEL_OPTIONS: dict[str, dict[str, Any]] = {
    "mp0_medium_89": {  # MACE-MP-0 medium's architecture and elements (small_molecules.py)
        "atomic_numbers": FOUNDATION_ELEMENTS,
        "atomic_energies": [-4.099] * len(FOUNDATION_ELEMENTS),
    },
    "mpa0_medium": {
        "num_bessel": 10,
        "atomic_numbers": FOUNDATION_ELEMENTS,
        "atomic_energies": [-4.099] * len(FOUNDATION_ELEMENTS),
        "interaction_first": "RealAgnosticDensityInteractionBlock",
        "interaction": "RealAgnosticDensityResidualInteractionBlock",
        "pair_repulsion": True,
        "distance_transform": "Agnesi",
    },
}
SPEC = {
    "r_max": 6.0,
    "num_bessel": 8,
    "num_polynomial_cutoff": 5,
    "max_ell": 3,
    "correlation": 3,
    "num_interactions": 2,
    "radial_MLP": [64, 64, 64],
    "MLP_irreps": "16x0e",
    "atomic_numbers": [29],
    "atomic_energies": [-4.099],  # eV, arbitrary: it does not change the cost
    "atomic_inter_scale": 1.0,
    "atomic_inter_shift": 0.0,
    "seed": 2024,
}


def csv_of(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    """An argparse type for comma-separated values of ``kind``."""
    return lambda text: [kind(item) for item in text.split(",") if item]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=csv_of(int),
        default=[2, 3, 4, 6],
        help="n of the n×n×n cubic Cu cell (4n³ atoms), 1..10 on CPU, 1..30 on cuda "
        "(default 2,3,4,6)",
    )
    parser.add_argument("--models", type=csv_of(str), default=["small", "medium"])
    parser.add_argument("--dtypes", type=csv_of(str), default=["float32", "float64"])
    parser.add_argument("--modes", type=csv_of(str), default=["forces", "stress", "energy"])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per row")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per worker")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed of the displacements")
    parser.add_argument(
        "--paired-stress",
        type=int,
        default=10,
        help="stress rows: also time N paired forces / forces+stress calls in one ase_equi "
        "process (0: off)",
    )
    parser.add_argument(
        "--mace-retain-memory",
        action="store_true",
        help="also run mace-torch with the allocator setting ase_equi takes by itself "
        "(MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_), as a third column",
    )
    parser.add_argument(
        "--skip-mace-installed",
        action="store_true",
        help="with --mace-retain-memory: do not run mace-torch as installed (its slowest column); "
        "the memory-retained column then serves the same-model checks and the peak-RSS column",
    )
    parser.add_argument(
        "--mace-cueq",
        action="store_true",
        help="also run mace-torch with cuEquivariance kernels (MACECalculator(enable_cueq=True); "
        "needs cuequivariance-torch and its ops in the mace venv), as another column",
    )
    parser.add_argument(
        "--gpu-busy",
        type=int,
        default=3,
        help="on cuda: profile N more calls per row and report the GPU's busy fraction (kernel "
        "time / step time; 0: off)",
    )
    parser.add_argument("--row-timeout", type=float, default=600.0, help="seconds per worker")
    parser.add_argument(
        "--mace-venv",
        type=Path,
        default=Path(os.environ.get("MACE_VENV", HERE.parent / ".venv-mace")),
        help="virtual environment with mace-torch (default: $MACE_VENV, else .venv-mace/ in "
        "the repository; created if missing)",
    )
    parser.add_argument("--cache", type=Path, default=HERE / ".cache", help="model files")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="report folder")
    args = parser.parse_args()
    checks = {
        "--sizes": all(1 <= n <= (30 if args.device == "cuda" else 10) for n in args.sizes)
        and args.sizes,
        "--models": set(args.models) <= set(MODELS) and args.models,
        "--dtypes": set(args.dtypes) <= {"float32", "float64"} and args.dtypes,
        "--modes": set(args.modes) <= set(common.MODES) and args.modes,
        "--repeats": args.repeats >= 1,
        "--warmup": args.warmup >= 1,  # the first call of a calculator is never an MD step
        "--threads": args.threads >= 1,
        "--skip-mace-installed": args.mace_retain_memory or not args.skip_mace_installed,
    }
    for option, ok in checks.items():
        if not ok:
            parser.error(f"bad value for {option}: {getattr(args, option[2:].replace('-', '_'))}")
    return args


# ----------------------------------------------------------------------------------------------
# Set-up: the mace environment, the model files, the versions


def worker_env(threads: int) -> dict[str, str]:
    """Environment of every worker: thread counts pinned, mace allowed to unpickle its file."""
    env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    return env


def ensure_mace_venv(venv: Path) -> Path:
    """The python of ``venv``, after creating the venv and installing mace-torch if needed."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import mace"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        print(f"mace venv: {venv} (mace-torch importable)")
        return python
    steps = [] if python.exists() else [[sys.executable, "-m", "venv", str(venv)]]
    steps += [
        [str(python), "-m", "pip", "install", "torch==2.13.0"],
        [str(python), "-m", "pip", "install", "mace-torch==0.3.16"],
    ]
    print(f"mace venv: {venv} lacks mace-torch; setting it up:")
    for step in steps:
        print("  $", shlex.join(step), flush=True)
        subprocess.run(step, check=True)
    return python


def avg_num_neighbours(r_max: float) -> float:
    """Mean number of neighbours within ``r_max`` in the benchmark's fcc Cu (78 for 6 Å)."""
    atoms = common.fcc_copper(2)
    return len(neighbor_list("i", atoms, r_max)) / len(atoms)


def model_specs() -> dict[str, dict[str, Any]]:
    """Full build spec of each model."""
    shared = dict(SPEC, avg_num_neighbors=avg_num_neighbours(SPEC["r_max"]))
    return {
        name: dict(shared, hidden_irreps=irreps, **MODEL_OPTIONS.get(name, {}))
        for name, irreps in MODELS.items()
    }


def run_worker(
    python: Path, script: Path, request: dict[str, Any], *, env: dict[str, str], timeout: float
) -> tuple[dict[str, Any] | None, str | None]:
    """Run one worker in a fresh process: ``(result, None)`` or ``(None, why it failed)``."""
    command = [str(python), str(script), json.dumps(request)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timeout > {timeout:g} s"
    marked = [line for line in done.stdout.splitlines() if line.startswith(common.RESULT_MARK)]
    if done.returncode != 0 or not marked:
        lines = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()
        return None, f"failed (rc {done.returncode}): {lines[-1][:200]}"
    return json.loads(marked[-1][len(common.RESULT_MARK) :]), None


def build_models(
    names: list[str], python: Path, cache: Path, env: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """Path, spec and parameter count of each model, building missing files in the mace venv."""
    cache.mkdir(parents=True, exist_ok=True)
    (cache / ".gitignore").write_text("*\n!.gitignore\n")
    models = {}
    for name, spec in model_specs().items():
        if name not in names:
            continue
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
        path = cache / f"cu_{name}_{digest}.model"
        meta = path.with_suffix(".json")
        if not (path.exists() and meta.exists()):
            print(f"building {path.name} in the mace venv ...", flush=True)
            result, error = run_worker(
                python,
                MACE_WORKER,
                {"action": "build", "spec": spec, "out": str(path)},
                env=env,
                timeout=1800,
            )
            if error:
                raise SystemExit(f"could not build the {name} model: {error}")
            meta.write_text(json.dumps(dict(spec=spec, n_parameters=result["n_parameters"])))
        models[name] = dict(json.loads(meta.read_text()), path=str(path))
    return models


def git_commit() -> str:
    """Short commit of the ase_equi checkout, with ``-dirty`` when the tree has changes."""

    def git(*argv: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO), *argv], capture_output=True, text=True
        ).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def machine() -> dict[str, str]:
    """Platform, CPU model, core count and RAM of this machine."""

    def first(path: str, key: str) -> str:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return "unknown"

    ram_kib = first("/proc/meminfo", "MemTotal").split()[0]
    ram = f"{int(ram_kib) / 2**20:.1f} GiB" if ram_kib.isdigit() else "unknown"
    return {
        "platform": platform.platform(),
        "cpu": first("/proc/cpuinfo", "model name"),
        "cores": str(os.cpu_count()),
        "ram": ram,
        "hostname": socket.gethostname(),
    }


def load_average() -> str:
    """1/5/15-minute load averages (a busy machine makes every timing here longer)."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


# ----------------------------------------------------------------------------------------------
# The report


def seconds(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}" if x >= 1e-3 else f"{x:.2e}"


def timing_cell(result: dict[str, Any] | None, error: str | None) -> str:
    if result is None:
        return error or "not run"
    step = result["step"]
    return f"{seconds(step['median_s'])} [{seconds(step['min_s'])}–{seconds(step['max_s'])}]"


def median(row: dict[str, Any], side: str, key: str = "step") -> float | None:
    result = row[side]
    return result[key]["median_s"] if result and result.get(key) else None


def mace_result(row: dict[str, Any]) -> dict[str, Any] | None:
    """mace-torch's result of a row: as installed, or tuned where that was skipped."""
    return row["mace"] or row.get("mace_retain")


def ratio(a: float | None, b: float | None, fmt: str = "{:.2f}") -> str:
    return fmt.format(a / b) if a and b else "n/a"


def busy_cell(result: dict[str, Any]) -> str:
    """GPU kernel time of a profiled step over the unprofiled median step time."""
    busy = (result or {}).get("gpu_busy")
    return f"{busy['fraction']:.0%}" if busy else "n/a"


def model_tables(rows: list[dict[str, Any]], device: str) -> list[str]:
    """The two Markdown tables and the derived lines of one (model, dtype)."""
    extra = [side for side in EXTRA_SIDES if any(side in row for row in rows)]
    head = (
        "| atoms | mode | ase_equi median [min–max] s | mace median [min–max] s "
        "| ratio ase_equi/mace |"
    )
    rule = "|---:|---|---|---|---:|"
    for side in extra:
        head += f" {EXTRA_SIDES[side]}, median [min–max] s | ratio ase_equi/that |"
        rule += "---|---:|"
    lines = [head, rule]
    for row in rows:
        line = (
            f"| {row['n_atoms']} | {row['mode']}"
            f" | {timing_cell(row['ase_equi'], row['ase_equi_error'])}"
            f" | {timing_cell(row['mace'], row['mace_error'])}"
            f" | {ratio(median(row, 'ase_equi'), median(row, 'mace'))} |"
        )
        for side in extra:
            line += (
                f" {timing_cell(row[side], row[side + '_error'])}"
                f" | {ratio(median(row, 'ase_equi'), median(row, side))} |"
            )
        lines.append(line)
    cuda = device == "cuda"
    head = (
        "| atoms | mode | edges | ase_equi graph build s | fraction of step | mace data prep s "
        "| fraction of step | peak RSS ase_equi MiB | peak RSS mace MiB |"
    )
    rule = "|---:|---|---:|---:|---:|---:|---:|---:|---:|"
    if cuda:
        head += " peak CUDA ase_equi MiB | peak CUDA mace MiB | GPU busy ase_equi | GPU busy mace |"
        rule += "---:|---:|---:|---:|"
    lines += ["", head, rule]
    for row in rows:
        ours, theirs = row["ase_equi"] or {}, mace_result(row) or {}
        edges = {r.get("n_edges") for r in (ours, theirs) if r}
        cells = [
            str(row["n_atoms"]),
            row["mode"],
            "/".join(str(e) for e in sorted(edges, key=str)) or "n/a",
            seconds(median(row, "ase_equi", "prepare")),
            ratio(median(row, "ase_equi", "prepare"), median(row, "ase_equi"), "{:.1%}"),
            seconds(median(row, "mace", "prepare")),
            ratio(median(row, "mace", "prepare"), median(row, "mace"), "{:.1%}"),
            f"{ours['peak_rss_mib']:.0f}" if ours else "n/a",
            f"{theirs['peak_rss_mib']:.0f}" if theirs else "n/a",
        ]
        if cuda:
            cells += [f"{r['cuda_peak_mib']:.0f}" if r else "n/a" for r in (ours, theirs)]
            cells += [busy_cell(r) for r in (ours, theirs)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for n_atoms in sorted({row["n_atoms"] for row in rows}):
        by_mode = {row["mode"]: row for row in rows if row["n_atoms"] == n_atoms}
        parts = []
        for side in SIDES[:2]:
            t = {mode: median(row, side) for mode, row in by_mode.items()}
            speedup = ratio(t.get("forces"), t.get("energy"), "{:.2f}×")
            overhead = ratio(t.get("stress"), t.get("forces"), "{:.2f}")
            overhead = f"{float(overhead) - 1:+.0%}" if overhead != "n/a" else "n/a"
            parts.append((speedup, overhead))
        lines.append(
            f"- {n_atoms} atoms: energy-only speed-up vs forces (t_forces/t_energy) "
            f"ase_equi {parts[0][0]} (mace {parts[1][0]}); stress overhead "
            f"(t_stress/t_forces − 1) ase_equi {parts[0][1]} (mace {parts[1][1]})"
        )
        paired = (by_mode.get("stress", {}).get("ase_equi") or {}).get("paired_stress")
        if paired:
            lines.append(
                f"- {n_atoms} atoms, stress overhead from {paired['pairs']} paired calls in one "
                f"process (median of t_stress/t_forces − 1): ase_equi "
                f"{paired['overhead_median']:+.1%} (forces {seconds(paired['forces_median_s'])} "
                f"s, forces + stress {seconds(paired['stress_median_s'])} s)"
            )
    return lines


def checks(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    """Same-model check (energies, edges) and the CPU target."""
    lines = []
    for dtype in args.dtypes:
        pairs = [
            (r["ase_equi"], mace_result(r))
            for r in rows
            if r["dtype"] == dtype and r["ase_equi"] and mace_result(r)
        ]
        if pairs:
            worst = max(
                abs(ours["energy_eV"] - theirs["energy_eV"]) / ours["n_atoms"]
                for ours, theirs in pairs
            )
            same_edges = all(ours["n_edges"] == theirs["n_edges"] for ours, theirs in pairs)
            lines.append(
                f"- same model, same geometry, {dtype}: max |E_ase_equi − E_mace| / atom = "
                f"{worst:.2e} eV over {len(pairs)} rows; edge counts equal: {same_edges}"
            )
    by_key = {(r["model"], r["n_atoms"], r["mode"], r["dtype"]): r for r in rows}
    errors: dict[str, list[float]] = {side: [] for side in SIDES}
    for (model, n_atoms, mode, dtype), row in by_key.items():
        reference = by_key.get((model, n_atoms, mode, "float64"))
        if dtype != "float32" or reference is None:
            continue
        for side in SIDES:
            if row.get(side) and reference.get(side):
                e32, e64 = row[side]["energy_eV"], reference[side]["energy_eV"]
                errors[side].append(abs(e32 - e64) / n_atoms)
    if errors["ase_equi"]:
        lines.append(
            "- float32 against float64, same code and geometry: max |E32 − E64| / atom "
            + ", ".join(f"{side} {max(v):.2e} eV" for side, v in errors.items() if v)
            + f" over {len(errors['ase_equi'])} rows"
        )
    target = [
        r
        for r in rows
        if r["model"] == "medium"
        and r["dtype"] == "float32"
        and r["mode"] == "forces"
        and 64 <= r["n_atoms"] <= 864
    ]
    if args.device != "cpu" or args.threads != 2:
        lines.append("- CPU target not evaluated (it is defined for --device cpu --threads 2)")
    elif not target:
        lines.append(
            "- CPU target not evaluated (needs a medium, float32, forces row of 64–864 atoms)"
        )
    for row in target if args.device == "cpu" and args.threads == 2 else []:
        value = ratio(median(row, "ase_equi"), median(row, "mace"))
        verdict = "n/a" if value == "n/a" else "meets" if float(value) <= TARGET_RATIO else "misses"
        retained = ""
        if row.get("mace_retain"):
            other = ratio(median(row, "ase_equi"), median(row, "mace_retain"))
            mark = "n/a" if other == "n/a" else "≤" if float(other) <= TARGET_RATIO else ">"
            retained = f"; against mace with memory retained {other} ({mark} {TARGET_RATIO})"
        lines.append(
            f"- CPU target (medium, float32, forces, {row['n_atoms']} atoms, 2 threads): "
            f"ase_equi/mace = {value}, target ≤ {TARGET_RATIO}: {verdict}{retained}"
        )
    return lines


def report(rows: list[dict[str, Any]], header: list[str], args: argparse.Namespace) -> str:
    lines = ["# ase_equi vs mace-torch: one MD step on identical MACE weights", "", *header, ""]
    for model in args.models:
        for dtype in args.dtypes:
            chosen = [r for r in rows if r["model"] == model and r["dtype"] == dtype]
            lines += [f"## {model}, {dtype}", "", *model_tables(chosen, args.device), ""]
    lines += ["## Checks", "", *checks(rows, args), ""]
    return "\n".join(lines)


def output_path(folder: Path, host: str, cpu: str) -> Path:
    """``<folder>/<date>-<host or cpu>.md``, with ``-2``, ``-3`` … rather than overwriting."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", host or cpu).strip("-") or "machine"
    stem = f"{datetime.date.today().isoformat()}-{name}"
    path, k = folder / f"{stem}.md", 1
    while path.exists():
        k += 1
        path = folder / f"{stem}-{k}.md"
    return path


# ----------------------------------------------------------------------------------------------


def main() -> int:
    args = parse_args()
    started = time.perf_counter()
    command = shlex.join(["python", *sys.argv])  # no machine path in the committed report
    print("command:", command, flush=True)
    env = worker_env(args.threads)
    mace_python = ensure_mace_venv(args.mace_venv)
    models = build_models(args.models, mace_python, args.cache, env)
    pythons = {
        "ase_equi": (Path(sys.executable), ASE_EQUI_WORKER),
        "mace": (mace_python, MACE_WORKER),
    }
    if args.mace_retain_memory:
        pythons["mace_retain"] = (mace_python, MACE_WORKER)
    if args.mace_cueq:
        pythons["mace_cueq"] = (mace_python, MACE_WORKER)
    versions = {}
    for side, (python, script) in list(pythons.items())[:2]:
        result, error = run_worker(
            python, script, {"action": "info", "device": args.device}, env=env, timeout=300
        )
        versions[side] = ", ".join(f"{k} {v}" for k, v in (result or {}).items()) or error
    host = machine()
    load_start = load_average()

    combos = [
        (m, d, n, mode)
        for m in args.models
        for d in args.dtypes
        for n in args.sizes
        for mode in args.modes
    ]
    rows = []
    for index, (model, dtype, n_cells, mode) in enumerate(combos, 1):
        request = dict(
            action="time",
            model=models[model]["path"],
            dtype=dtype,
            n_cells=n_cells,
            mode=mode,
            repeats=args.repeats,
            warmup=args.warmup,
            threads=args.threads,
            device=args.device,
            seed=args.seed,
            paired_stress=args.paired_stress,
            gpu_busy=args.gpu_busy if args.device == "cuda" else 0,
        )
        row: dict[str, Any] = dict(model=model, dtype=dtype, n_atoms=4 * n_cells**3, mode=mode)
        sides = list(pythons)
        order = sides if index % 2 else sides[::-1]  # alternate who runs first against drift
        for side in order:
            if side == "mace" and args.skip_mace_installed:
                row[side], row[f"{side}_error"] = None, "not run (--skip-mace-installed)"
                continue
            python, script = pythons[side]
            side_env = dict(env, **RETAIN_ENV) if side == "mace_retain" else env
            side_request = dict(request, cueq=side == "mace_cueq")
            row[side], row[f"{side}_error"] = run_worker(
                python, script, side_request, env=side_env, timeout=args.row_timeout
            )
        rows.append(row)
        print(
            f"[{index}/{len(combos)}] {model} {dtype} {row['n_atoms']} atoms {mode}: "
            + ", ".join(
                f"{side} {timing_cell(row[side], row[side + '_error'])} s" for side in pythons
            ),
            file=sys.stderr,
            flush=True,
        )

    total = time.perf_counter() - started
    model_lines = [
        f"- `{name}`: hidden {info['spec']['hidden_irreps']}, {info['n_parameters']} parameters, "
        f"`{Path(info['path']).name}`"
        + (
            f"; MPA-0 options: {info['spec']['interaction_first']} then "
            f"{info['spec']['interaction']}, ZBL, {info['spec']['distance_transform']}, "
            f"{info['spec']['num_bessel']} Bessel, {len(info['spec']['atomic_numbers'])} elements"
            if "interaction_first" in info["spec"]
            else ""
        )
        for name, info in models.items()
    ]
    spec = next(iter(models.values()))["spec"]
    header = [
        f"- command: `{command}`",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {host['platform']}; CPU {host['cpu']}; {host['cores']} cores; "
        f"RAM {host['ram']}; host {host['hostname']}",
        f"- load average (1/5/15 min) at start {load_start}, at end {load_average()}",
        f"- device: {args.device}; torch threads per worker: {args.threads} "
        f"(also OMP/MKL/OPENBLAS_NUM_THREADS)",
        f"- ase_equi side: {versions['ase_equi']}, git {git_commit()}",
        f"- mace side (python of --mace-venv): {versions['mace']}",
        "- models: random-weight ScaleShiftMACE, MACE-MP-0 recipe for Cu only (MPA-0: its "
        f"options below): r_max {spec['r_max']} Å, {SPEC['num_bessel']} Bessel, "
        f"p={spec['num_polynomial_cutoff']}, max_ell {spec['max_ell']}, correlation "
        f"{spec['correlation']}, {spec['num_interactions']} interactions (residual), radial MLP "
        f"{spec['radial_MLP']}, "
        f"MLP {spec['MLP_irreps']}, avg_num_neighbors {spec['avg_num_neighbors']:g}; stored in "
        "float64, each code converts to the row's dtype",
        *[f"  {line}" for line in model_lines],
        f"- structure: fcc Cu, a = {common.LATTICE_CONSTANT} Å, cubic cell repeated n×n×n; "
        f"before every call all atoms move by N(0, {common.DISPLACEMENT} Å) from the crystal "
        f"sites (seed {args.seed}, identical on both sides)",
        f"- per row and code: a fresh process, {args.warmup} warm-up calls, {args.repeats} timed "
        "calls (perf_counter around the ASE calls of the mode); graph build / data prep is "
        "timed separately on the same geometries; peak RSS is the process's ru_maxrss "
        "(imports and model included)",
        "- mace-torch's calculator computes energy, forces and stress in every call, so its "
        "three modes cost the same; ase_equi computes only what is asked (stress in every call "
        "once asked)",
        "- memory allocator: ase_equi's calculator keeps freed tensor memory in the heap "
        "(`ase_equi.allocator.retain_freed_memory`, glibc mallopt) unless told not to; "
        "mace-torch runs as installed"
        + (
            ", and in the third column with the same setting through the environment "
            f"({', '.join(f'{k}={v}' for k, v in RETAIN_ENV.items())})"
            if args.mace_retain_memory
            else ""
        ),
        *(
            [
                "- mace + cuEquivariance column: the same mace-torch calculator with "
                "`enable_cueq=True` (its e3nn blocks converted to cuEquivariance kernels at load)"
            ]
            if args.mace_cueq
            else []
        ),
        *(
            [
                f"- GPU busy: kernel and copy time of {args.gpu_busy} more calls under torch's "
                "profiler, per call, over the unprofiled median step time"
            ]
            if args.device == "cuda" and args.gpu_busy
            else []
        ),
        f"- total wall time of this run: {total / 60:.1f} min",
    ]
    text = report(rows, header, args)
    args.out.mkdir(parents=True, exist_ok=True)
    path = output_path(args.out, host["hostname"], host["cpu"])
    path.write_text(text)
    path.with_suffix(".json").write_text(json.dumps(dict(header=header, rows=rows), indent=1))
    print(text)
    print(f"written: {path} (raw numbers in {path.with_suffix('.json').name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
