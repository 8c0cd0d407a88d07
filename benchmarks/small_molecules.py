"""Small molecules: MD steps per second, where a step's time goes, benzene against mace-torch.

Three parts, each chosen by a flag (all three by default):

``--md``
    ASE ``Langevin`` (1 fs, 300 K, friction 0.01/fs) on ethanol (``molecule("CH3CH2OH")``,
    no cell) with ``EquivariantCalculator(MODEL)`` (default the zoo's ``molecules-pbe``), per
    dtype, one torch thread: ``--warmup`` steps, then ``--runs`` runs of ``--steps`` steps;
    median steps/s and peak RSS.
``--profile``
    One dtype's step split by wall clock (ASE dynamics, ``check_state``, neighbour list, graph
    tensors, model forward, backward, results conversion, the rest of the calculator), then
    cProfile's top functions and torch.profiler's top operators over ``--profile-steps`` steps.
``--benzene``
    Benzene without a cell, MACE-MP-0 medium's architecture with its 89 elements (random
    weights, built by mace-torch in ``--mace-venv``; ``mace_comparison.py``'s machinery and
    workers): MD-like calls (every atom moved by N(0, 0.02 Å) before each call) in fresh
    processes, ase_equi, mace-torch as installed and mace-torch with its allocator tuned
    (``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_``), ``--pairs`` rounds in alternating
    order; medians of the per-process medians and the ratios of the same run.

    OMP_NUM_THREADS=1 python benchmarks/small_molecules.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import io
import json
import pstats
import re
import shlex
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _bench_common as common
import mace_comparison as mc
import numpy as np
import torch
from ase import units
from ase.build import molecule
from ase.md.langevin import Langevin

import ase_equi.calculator
from ase_equi import EquivariantCalculator

PHASES = (
    "ASE dynamics",
    "check_state",
    "neighbour list",
    "graph tensors",
    "model forward",
    "backward (+ edge vectors)",
    "results conversion",
    "calculator, rest",
)


def md_run(model: str, dtype: str, seed: int = 0) -> tuple[Langevin, EquivariantCalculator]:
    """Ethanol with the calculator and a seeded Langevin integrator (1 fs, 300 K)."""
    atoms = molecule("CH3CH2OH")
    calc = EquivariantCalculator(model, dtype=dtype)
    atoms.calc = calc
    rng = np.random.default_rng(seed)
    dyn = Langevin(atoms, 1 * units.fs, temperature_K=300, friction=0.01, rng=rng, fixcm=False)
    return dyn, calc


def steps_per_second(args: argparse.Namespace, dtype: str) -> dict[str, Any]:
    """Median steps/s of ``args.runs`` runs of ``args.steps`` Langevin steps after warm-up."""
    dyn, calc = md_run(args.model, dtype)
    dyn.run(args.warmup)
    rates = []
    for _ in range(args.runs):
        start = time.perf_counter()
        dyn.run(args.steps)
        rates.append(args.steps / (time.perf_counter() - start))
    return {
        "dtype": dtype,
        "steps_per_s": rates,
        "median_steps_per_s": float(np.median(rates)),
        "model_calls": calc.model_calls,
        "peak_rss_mib": common.peak_rss_mib(),
    }


def timed(totals: dict[str, float], name: str, function: Callable) -> Callable:
    """``function`` with its wall time added to ``totals[name]``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            totals[name] += time.perf_counter() - start

    return wrapper


def phase_split(args: argparse.Namespace, dtype: str) -> dict[str, float]:
    """Milliseconds per step in each of :data:`PHASES` (timers around the calculator's parts)."""
    dyn, calc = md_run(args.model, dtype)
    dyn.run(args.warmup)
    t: dict[str, float] = defaultdict(float)
    calc.get_property = timed(t, "get_property", calc.get_property)  # type: ignore[method-assign]
    calc.check_state = timed(t, "check_state", calc.check_state)  # type: ignore[method-assign]
    calc.calculate = timed(t, "calculate", calc.calculate)  # type: ignore[method-assign]
    calc._store = timed(t, "results conversion", calc._store)  # type: ignore[method-assign]
    source = calc.graph_source
    source.update = timed(t, "graph", source.update)  # type: ignore[method-assign]
    verlet = source.neighbours
    verlet.update = timed(t, "neighbour list", verlet.update)  # type: ignore[method-assign]
    efs = ase_equi.calculator.energy_forces_stress
    ase_equi.calculator.energy_forces_stress = timed(t, "efs", efs)  # type: ignore[assignment]
    starts: list[float] = []
    calc.model.register_forward_pre_hook(lambda *_: starts.append(time.perf_counter()))
    calc.model.register_forward_hook(
        lambda *_: t.__setitem__("forward", t["forward"] + time.perf_counter() - starts.pop())
    )
    try:
        start = time.perf_counter()
        dyn.run(args.profile_steps)
        total = time.perf_counter() - start
    finally:
        ase_equi.calculator.energy_forces_stress = efs
    ms = {k: 1e3 * v / args.profile_steps for k, v in t.items()}
    inside = ms["get_property"] - ms["check_state"] - ms["calculate"]
    split = {
        "ASE dynamics": 1e3 * total / args.profile_steps - ms["get_property"],
        "check_state": ms["check_state"],
        "neighbour list": ms["neighbour list"],
        "graph tensors": ms["graph"] - ms["neighbour list"],
        "model forward": ms["forward"],
        "backward (+ edge vectors)": ms["efs"] - ms["forward"],
        "results conversion": ms["results conversion"],
        "calculator, rest": inside
        + ms["calculate"]
        - ms["graph"]
        - ms["efs"]
        - ms["results conversion"],
    }
    return dict(split, total=1e3 * total / args.profile_steps)


def profiles(args: argparse.Namespace, dtype: str) -> dict[str, str]:
    """cProfile (by function) and torch.profiler (by operator) tables of the same steps."""
    dyn, _ = md_run(args.model, dtype)
    dyn.run(args.warmup)
    profiler = cProfile.Profile()
    profiler.enable()
    dyn.run(args.profile_steps)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(args.rows)
    with torch.profiler.profile() as prof:
        dyn.run(args.profile_steps)
    table = prof.key_averages()
    ops = sum(event.count for event in table) / args.profile_steps
    ops_line = f"{ops:.0f} torch operations per step (profiler events, nested ones included)"
    body = table.table(sort_by="self_cpu_time_total", row_limit=args.rows)
    lines = text.getvalue().splitlines()[: args.rows + 12]
    # file names relative to the repository or site-packages: no machine paths in the report
    lines = [re.sub(r"\S*/site-packages/", "", x.replace(f"{mc.REPO}/", "")) for x in lines]
    cprofile = "\n".join(x.rstrip() for x in lines)
    return {"cprofile": cprofile, "torch_ops": f"{ops_line}\n{body}"}


def benzene_rows(args: argparse.Namespace) -> dict[str, Any]:
    """Benzene, 89-element medium model: ase_equi vs mace-torch (as installed and tuned)."""
    env = mc.worker_env(args.threads)
    mace_python = mc.ensure_mace_venv(args.mace_venv)
    model = mc.build_models(["mp0_medium_89"], mace_python, args.cache, env)["mp0_medium_89"]
    sides = {
        "ase_equi": (Path(sys.executable), mc.ASE_EQUI_WORKER, env),
        "mace": (mace_python, mc.MACE_WORKER, env),
        "mace_tuned": (mace_python, mc.MACE_WORKER, dict(env, **mc.RETAIN_ENV)),
    }
    results: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    errors: dict[str, list[str]] = {side: [] for side in sides}
    for dtype in args.benzene_dtypes:
        for index in range(args.pairs):
            order = list(sides) if index % 2 == 0 else list(sides)[::-1]
            for side in order:
                python, script, side_env = sides[side]
                request = dict(
                    action="time",
                    model=model["path"],
                    structure="benzene",
                    dtype=dtype,
                    mode="forces",
                    repeats=args.benzene_repeats,
                    warmup=3,
                    threads=args.threads,
                    device="cpu",
                    seed=index,
                )
                result, error = mc.run_worker(python, script, request, env=side_env, timeout=900)
                if result is None:
                    errors[side].append(f"{dtype}: {error}")
                    continue
                results[side].append(dict(result, dtype=dtype))
                step = result["step"]["median_s"]
                print(f"benzene {dtype} {side} round {index}: {step * 1e3:.1f} ms", flush=True)
    return {"model": model, "results": results, "errors": errors}


def benzene_summary(data: dict[str, Any], dtypes: list[str]) -> list[dict[str, Any]]:
    """Per dtype: median step (ms) and peak RSS (MiB) of each side, and the ratios."""
    rows = []
    for dtype in dtypes:
        row: dict[str, Any] = {"dtype": dtype}
        for side, results in data["results"].items():
            mine = [r for r in results if r["dtype"] == dtype]
            steps = [r["step"]["median_s"] for r in mine]
            row[side] = {
                "median_ms": 1e3 * float(np.median(steps)) if steps else None,
                "per_process_ms": [1e3 * s for s in steps],
                "peak_rss_mib": max((r["peak_rss_mib"] for r in mine), default=None),
                "energy_eV": mine[-1]["energy_eV"] if mine else None,
            }
        for other in ("mace", "mace_tuned"):
            a, b = row["ase_equi"]["median_ms"], row[other]["median_ms"]
            row[f"ratio_vs_{other}"] = a / b if a and b else None
        rows.append(row)
    return rows


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="md,profile,benzene", help="md, profile, benzene")
    parser.add_argument("--model", default="molecules-pbe", help="zoo name or model file")
    parser.add_argument("--dtypes", type=mc.csv_of(str), default=["float64", "float32"])
    parser.add_argument("--steps", type=int, default=200, help="steps per timed run")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per dtype")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    parser.add_argument("--profile-dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--profile-steps", type=int, default=100)
    parser.add_argument("--rows", type=int, default=25, help="rows of the profile tables")
    parser.add_argument("--pairs", type=int, default=3, help="benzene rounds per dtype")
    parser.add_argument("--benzene-dtypes", type=mc.csv_of(str), default=["float32"])
    parser.add_argument("--benzene-repeats", type=int, default=30, help="timed calls each")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--mace-venv", type=Path, default=mc.HERE.parent / ".venv-mace", help="mace-torch venv"
    )
    parser.add_argument("--cache", type=Path, default=mc.HERE / ".cache", help="model files")
    parser.add_argument("--out", type=Path, default=None, help="folder for the .md and .json")
    parser.add_argument("--name", default="small-molecules", help="file stem after the date")
    return parser.parse_args()


def report(data: dict[str, Any]) -> str:
    """The Markdown report of one run."""
    lines = ["# Small molecules: MD steps/s, where a step goes, benzene vs mace-torch", ""]
    lines += [f"- {key}: {value}" for key, value in data["header"].items()]
    if data.get("md"):
        lines += ["", "## Ethanol, ASE Langevin 1 fs, steps/s", ""]
        lines += ["| dtype | median steps/s | runs | peak RSS MiB |", "|---|---:|---|---:|"]
        for row in data["md"]:
            runs = ", ".join(f"{x:.1f}" for x in row["steps_per_s"])
            lines.append(
                f"| {row['dtype']} | {row['median_steps_per_s']:.1f} | {runs} "
                f"| {row['peak_rss_mib']:.0f} |"
            )
    if data.get("split"):
        split = data["split"]
        lines += ["", f"## Where a step goes ({data['header']['profile dtype']}), ms", ""]
        lines += ["| phase | ms per step | share |", "|---|---:|---:|"]
        for phase in PHASES:
            lines.append(f"| {phase} | {split[phase]:.2f} | {split[phase] / split['total']:.0%} |")
        lines.append(f"| total | {split['total']:.2f} | |")
        for title, key in (("cProfile, by function", "cprofile"), ("torch ops", "torch_ops")):
            lines += ["", f"### {title}", "", "```", data["profiles"][key], "```"]
    if data.get("benzene"):
        lines += ["", "## Benzene (no cell), MACE-MP-0 medium architecture, 89 elements", ""]
        lines += [
            "| dtype | ase_equi ms | mace ms | mace tuned ms | ratio | ratio vs tuned "
            "| peak RSS MiB (ours / mace / tuned) |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for row in data["benzene"]["summary"]:
            ms = [row[s]["median_ms"] for s in ("ase_equi", "mace", "mace_tuned")]
            rss = [row[s]["peak_rss_mib"] for s in ("ase_equi", "mace", "mace_tuned")]
            ratios = [row["ratio_vs_mace"], row["ratio_vs_mace_tuned"]]
            lines.append(
                f"| {row['dtype']} | "
                + " | ".join("n/a" if x is None else f"{x:.1f}" for x in ms)
                + " | "
                + " | ".join("n/a" if x is None else f"{x:.2f}" for x in ratios)
                + " | "
                + " / ".join("n/a" if x is None else f"{x:.0f}" for x in rss)
                + " |"
            )
        errors = {k: v for k, v in data["benzene"]["errors"].items() if v}
        if errors:
            lines += ["", f"Failed workers: {errors}"]
    return "\n".join(lines) + "\n"


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    parts = set(args.parts.split(","))
    host = mc.machine()
    header: dict[str, Any] = {
        "command": f"OMP_NUM_THREADS={args.threads} " + shlex.join(["python", *sys.argv]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": f"{host['platform']}; CPU {host['cpu']}; {host['cores']} cores; "
        f"RAM {host['ram']}",
        "torch": f"{torch.__version__}, {torch.get_num_threads()} thread(s)",
        "git": mc.git_commit(),
        "model": args.model,
        "profile dtype": args.profile_dtype,
        "load average at start (1/5/15 min)": mc.load_average(),
    }
    data: dict[str, Any] = {"header": header}
    if "md" in parts:
        data["md"] = [steps_per_second(args, dtype) for dtype in args.dtypes]
        for row in data["md"]:
            print(f"{row['dtype']}: {row['median_steps_per_s']:.1f} steps/s", flush=True)
    if "profile" in parts:
        data["split"] = phase_split(args, args.profile_dtype)
        data["profiles"] = profiles(args, args.profile_dtype)
    if "benzene" in parts:
        raw = benzene_rows(args)
        data["benzene"] = dict(raw, summary=benzene_summary(raw, args.benzene_dtypes))
    header["load average at end (1/5/15 min)"] = mc.load_average()
    text = report(data)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = args.out / f"{datetime.date.today().isoformat()}-{args.name}"
        stem.with_suffix(".md").write_text(text)
        if "benzene" in data:  # no machine paths in the saved numbers
            data["benzene"]["model"]["path"] = Path(data["benzene"]["model"]["path"]).name
        stem.with_suffix(".json").write_text(json.dumps(data, indent=1, default=str))
        print(f"written: {stem}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
