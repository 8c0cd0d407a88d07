"""ase_equi side of ``mace_comparison.py``; runs with the python that has ase_equi installed.

One JSON request (first argument or stdin), one marked JSON result line on stdout. Actions:

``info``
    Versions of python, torch, e3nn, ase, numpy, matscipy, ase_equi (and the GPU name for
    ``cuda``).
``time``
    Load the MACE ``.model`` file with ``EquivariantCalculator`` (safe reader, no mace import)
    and time MD-like calls on fcc Cu (see ``_bench_common.time_md_calls``). The data
    preparation alone is the calculator's graph source (``ase_equi.graph``) with its arguments
    (Verlet-skin neighbour list, as the calculator keeps it between MD steps, + tensors).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from typing import Any

import _bench_common as common
import ase
import numpy as np
import torch


def info(request: dict[str, Any]) -> dict[str, Any]:
    """Versions of everything on the ase_equi side."""
    import e3nn
    import matscipy

    import ase_equi

    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "e3nn": e3nn.__version__,
        "ase": ase.__version__,
        "numpy": np.__version__,
        "matscipy": matscipy.__version__,
        "ase_equi": ase_equi.__version__,
    }
    if request.get("device") == "cuda" and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def time_calls(request: dict[str, Any]) -> dict[str, Any]:
    """Time EquivariantCalculator on ``4 n_cells³`` Cu atoms in one mode."""
    from ase_equi import EquivariantCalculator

    torch.set_num_threads(request["threads"])
    device = request["device"]
    start = time.perf_counter()
    calc = EquivariantCalculator(request["model"], device=device, dtype=request["dtype"])
    load_s = time.perf_counter() - start
    atoms = common.structure(request)
    atoms.calc = calc
    config = calc.loaded.config

    # the data preparation as the calculator does it, with a graph source of the same kind as
    # the calculator's own: on CPU a Verlet-skin list built once on the lattice and filtered
    # per call, then the tensors; with a resident graph (GPU default) the upload of the
    # positions (and, at a rebuild, the graph)
    source = type(calc.graph_source)(
        config.elements,
        config.r_max,
        calc.graph_source.neighbours.skin,
        dtype=calc.torch_dtype,
        device=calc.device,
    )
    source.update(atoms)

    def prepare(atoms: ase.Atoms) -> int:
        return int(source.update(atoms).senders.shape[0])

    cuda = device == "cuda"

    def synchronize() -> None:
        if cuda:
            torch.cuda.synchronize()

    out = common.time_md_calls(
        atoms,
        request["mode"],
        repeats=request["repeats"],
        warmup=request["warmup"],
        seed=request["seed"],
        prepare=prepare,
        synchronize=synchronize,
    )
    if cuda:
        out["gpu_busy"] = common.gpu_busy(atoms, request, out["step"]["median_s"])
    if request["mode"] == "stress" and request.get("paired_stress", 0) > 0:
        out["paired_stress"] = paired_stress(calc, request, synchronize)
    out.update(
        n_atoms=len(atoms),
        load_s=load_s,
        peak_rss_mib=common.peak_rss_mib(),
        cuda_peak_mib=torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        threads=torch.get_num_threads(),
        model_calls=calc.model_calls,
        resident_graph=type(calc.graph_source).__name__ == "ResidentGraph",
    )
    return out


def paired_stress(
    calc: Any, request: dict[str, Any], synchronize: Callable[[], None]
) -> dict[str, Any]:
    """Stress overhead from paired calls in one process: forces vs forces + stress.

    Two calculators on the same model (one that was asked for stress, one never) evaluate
    the same new geometries, alternating which goes first; the overhead is the median over
    geometries of t_stress / t_forces − 1, free of the process-to-process spread of separate
    rows.
    """
    from ase_equi import EquivariantCalculator

    forces_calc = EquivariantCalculator(
        calc.loaded, device=request["device"], dtype=request["dtype"]
    )
    stress_calc = calc  # already asked for stress in every call of the timed row
    atoms = common.structure(request)
    reference = atoms.get_positions()
    rng = np.random.default_rng(request["seed"] + 1)
    calls = {
        "forces": lambda a: a.get_forces(),
        "stress": lambda a: (a.get_forces(), a.get_stress()),
    }
    times: dict[str, list[float]] = {"forces": [], "stress": []}
    for index in range(request["paired_stress"] + 1):  # the first pair warms forces_calc up
        atoms.set_positions(reference + common.DISPLACEMENT * rng.standard_normal(reference.shape))
        order = ("forces", "stress") if index % 2 else ("stress", "forces")
        for mode in order:
            copy = atoms.copy()
            copy.calc = forces_calc if mode == "forces" else stress_calc
            synchronize()
            start = time.perf_counter()
            calls[mode](copy)
            synchronize()
            if index:
                times[mode].append(time.perf_counter() - start)
    ratios = [s / f for s, f in zip(times["stress"], times["forces"], strict=True)]
    return {
        "pairs": len(ratios),
        "forces_median_s": float(np.median(times["forces"])),
        "stress_median_s": float(np.median(times["stress"])),
        "overhead_median": float(np.median(ratios)) - 1.0,
        "times_s": times,
    }


def main() -> None:
    request = common.read_request()
    actions = {"info": info, "time": time_calls}
    common.emit(actions[request["action"]](request))


if __name__ == "__main__":
    main()
