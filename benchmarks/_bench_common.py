"""What both timing workers share: the structure, the MD-like timing loop and JSON I/O.

This module is imported by ``_ase_equi_worker.py`` (our environment) and ``_mace_worker.py``
(the mace-torch virtual environment), so it may import only what both have: numpy, ase and the
standard library. Both sides must see exactly the same geometries: the perturbations come from
``numpy.random.default_rng(seed)`` (PCG64), whose stream does not depend on the numpy version.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from ase import Atoms
from ase.build import bulk, molecule

LATTICE_CONSTANT = 3.61  # Å, fcc Cu
DISPLACEMENT = 0.02  # Å, standard deviation of the per-call random displacement of every atom
RESULT_MARK = "BENCH-RESULT "  # prefix of the one stdout line the parent parses

# mode → the ASE calls of one MD step (the calculator decides how much work each one does)
MODES: dict[str, Callable[[Atoms], None]] = {
    "forces": lambda atoms: atoms.get_forces(),  # NVE / NVT step
    "stress": lambda atoms: (atoms.get_forces(), atoms.get_stress()),  # NPT step
    "energy": lambda atoms: atoms.get_potential_energy(),  # Monte Carlo step
}


def fcc_copper(n_cells: int) -> Atoms:
    """Cubic fcc Cu repeated ``n_cells`` times along each axis: ``4 n_cells³`` atoms, periodic."""
    return bulk("Cu", "fcc", a=LATTICE_CONSTANT, cubic=True).repeat(n_cells)


def structure(request: dict[str, Any]) -> Atoms:
    """The request's structure: ``"benzene"`` (C6H6, no cell, not periodic) when its
    ``structure`` says so, else fcc Cu of ``n_cells`` (:func:`fcc_copper`)."""
    if request.get("structure") == "benzene":
        return molecule("C6H6")
    return fcc_copper(request["n_cells"])


def read_request() -> dict[str, Any]:
    """The JSON request given as the first argument, or on stdin when there is none."""
    text = sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read()
    return json.loads(text)


def emit(result: dict[str, Any]) -> None:
    """Print ``result`` as one marked JSON line (libraries may print other lines around it)."""
    sys.stdout.write(RESULT_MARK + json.dumps(result) + "\n")
    sys.stdout.flush()


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB: Linux's ``VmHWM`` (KiB), which
    starts anew at ``exec``; elsewhere ``ru_maxrss``, which on Linux a worker inherits from a
    larger parent process."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def summary(times: list[float]) -> dict[str, float]:
    """Median, minimum and maximum of a list of durations, seconds."""
    return {
        "median_s": float(np.median(times)),
        "min_s": float(np.min(times)),
        "max_s": float(np.max(times)),
    }


def time_md_calls(
    atoms: Atoms,
    mode: str,
    *,
    repeats: int,
    warmup: int,
    seed: int,
    prepare: Callable[[Atoms], int] | None,
    synchronize: Callable[[], None],
) -> dict[str, Any]:
    """Time ``warmup + repeats`` MD-like calls of ``atoms.calc``, each on a new geometry.

    Before every call all positions are set to the reference positions plus an independent
    N(0, ``DISPLACEMENT``²) displacement per coordinate, so the calculator never sees the same
    structure twice (as in MD) while the neighbour count stays that of the crystal. Only the
    ASE calls of ``MODES[mode]`` are inside the timed region; the first ``warmup`` calls are
    discarded.

    After each timed call ``prepare(atoms)`` (the data preparation alone: neighbour list and
    tensors) is timed on the same geometry, outside the step; it returns the number of edges.

    Returns ``step`` and ``prepare`` summaries (seconds), ``n_edges``, ``energy_eV`` of the
    last geometry (to check that both codes evaluate the same model) and the raw times.
    """
    rng = np.random.default_rng(seed)
    reference = atoms.get_positions()
    call = MODES[mode]
    step_times: list[float] = []
    prepare_times: list[float] = []
    n_edges: int | None = None
    for index in range(warmup + repeats):
        atoms.set_positions(reference + DISPLACEMENT * rng.standard_normal(reference.shape))
        synchronize()
        start = time.perf_counter()
        call(atoms)
        synchronize()
        elapsed = time.perf_counter() - start
        if index < warmup:
            continue
        step_times.append(elapsed)
        if prepare is not None:
            start = time.perf_counter()
            n_edges = prepare(atoms)
            synchronize()
            prepare_times.append(time.perf_counter() - start)
    return {
        "step": summary(step_times),
        "prepare": summary(prepare_times) if prepare_times else None,
        "n_edges": n_edges,
        "energy_eV": float(atoms.get_potential_energy()),  # cached: no extra model call
        "step_times_s": step_times,
        "prepare_times_s": prepare_times,
    }


def gpu_busy(atoms: Atoms, request: dict[str, Any], step_s: float) -> dict[str, Any] | None:
    """The GPU's busy fraction over ``request["gpu_busy"]`` more MD-like calls (the request's
    mode) of ``atoms.calc``, profiled.

    Kernel (and copy) time per call, from torch's profiler (events on the CUDA device, one
    stream, so no overlap), divided by ``step_s``, the unprofiled median step time: the share
    of a step during which the GPU computes. ``None`` when no calls are asked; the error's text
    when profiling fails (the row's timings stand)."""
    calls, mode = request.get("gpu_busy", 0), request["mode"]
    if calls <= 0:
        return None
    import torch  # both environments have torch; only the workers call this
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    try:
        rng = np.random.default_rng(request["seed"] + 1)
        base = atoms.get_positions()
        call = MODES[mode]
        activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA]
        with profile(activities=activities) as prof:
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(calls):
                atoms.set_positions(base + DISPLACEMENT * rng.standard_normal(base.shape))
                call(atoms)
            torch.cuda.synchronize()
            wall = time.perf_counter() - start
        device_us = sum(
            event.time_range.elapsed_us()
            for event in prof.events()
            if event.device_type == DeviceType.CUDA
        )
    except Exception as error:  # noqa: BLE001 (a benchmark column, not a result)
        return {"error": f"{type(error).__name__}: {error}"[:300]}
    per_call = device_us * 1e-6 / calls
    return {
        "calls": calls,
        "kernel_s_per_call": per_call,
        "profiled_wall_s_per_call": wall / calls,
        "fraction": per_call / step_s,
    }
